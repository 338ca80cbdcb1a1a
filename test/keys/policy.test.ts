import assert from 'node:assert/strict'
import { test } from 'node:test'
import { canonicalPath } from '../../dist/http/canonical-path.js'
import { compilePolicy, type Policy } from '../../dist/keys/policy.js'

function allows(policy: Policy, method: string, path: string): boolean {
  const canonical = canonicalPath(path)
  assert.ok(canonical.ok, path)
  return policy.allows(method, canonical.segments)
}

const policy = compilePolicy(['GET /v1/invoices/**', 'POST /v1/invoices', 'GET,POST /v1/reports/*', '* /status', 'DELETE /v1/admin'])

for (const [method, path, expected] of [
  ['GET', '/v1/invoices', true],
  ['GET', '/v1/invoices/', true],
  ['GET', '/v1/invoices/2026/12', true],
  ['HEAD', '/v1/invoices/7', true],
  ['HEAD', '/v1/invoices', true],
  ['HEAD', '/v1/admin', false], // GET allows HEAD; a rule without GET does not
  ['POST', '/v1/invoices/7', false],
  ['POST', '/v1/invoices', true],
  ['POST', '/v1/invoices/', false],
  ['GET', '/v1/reports/q4', true],
  ['POST', '/v1/reports/q4', true],
  ['GET', '/v1/reports', false],
  ['GET', '/v1/reports/', false],
  ['GET', '/v1/reports/q4/extra', false],
  ['PATCH', '/status', true],
  ['GET', '/STATUS', false],
  ['GET', '/status/x', false],
  ['DELETE', '/v1/admin', true],
  ['DELETE', '/v1/%61dmin', true],
  ['GET', '/v1', false],
  ['GET', '/', false],
] as const) {
  test(`policy: ${method} ${path} is ${expected ? 'allowed' : 'not allowed'}`, () => {
    assert.equal(allows(policy, method, path), expected)
  })
}

test('policy: an empty list allows nothing, "* /**" everything', () => {
  assert.equal(allows(compilePolicy([]), 'GET', '/data'), false)
  const all = compilePolicy(['* /**'])
  for (const path of ['/', '/data', '/a/b/c/']) assert.equal(allows(all, 'OPTIONS', path), true)
})

for (const [rule, message] of [
  ['GET /a*b', /"\*" must be a whole segment/],
  ['GET /**/x', /"\*\*" may only be the last segment/],
  ['GET /v1/(.*)', /"\*" must be a whole segment/],
  ['get /v1', /methods must be/],
  ['GET, POST /v1', /a rule is "<methods> <path>"/],
  ['GET', /a rule is "<methods> <path>"/],
  ['GET v1', /must start with "\/"/],
  ['GET /v1/../admin', /canonical: no "\." or "\.\." segment/],
  ['GET /v1%2Fadmin', /canonical: no escapes/],
  ['GET /v1//admin', /canonical: no empty segment/],
  ['GET /v1;x', /canonical: no escapes/],
  ['GET /v1/./admin', /canonical: no "\." or "\.\." segment/],
  ['GETx /v1', /methods must be/],
  ['xGET /v1', /methods must be/],
  ['GET,get /v1', /methods must be/],
  [`GET /${Array(33).fill('a').join('/')}`, /at most 32 segments/],
] as const) {
  test(`policy: the rule ${JSON.stringify(rule)} is refused, naming its index`, () => {
    assert.throws(() => compilePolicy(['GET /ok', rule]), (error: unknown) => error instanceof TypeError && error.message.startsWith('allow[1]: ') && message.test(error.message))
  })
}

test('policy: a key with 50 rules is checked by one walk down the path, whatever the number of rules', () => {
  const rules = Array.from({ length: 50 }, (_, i) => `GET /v1/service-${i}/*/items/**`)
  const many = compilePolicy(rules)
  assert.equal(many.rules, 50)
  assert.equal(allows(many, 'GET', '/v1/service-49/abc/items/1/2'), true)
  assert.equal(allows(many, 'GET', '/v1/service-50/abc/items/1'), false)
  assert.equal(allows(many, 'POST', '/v1/service-3/abc/items'), false)
})

test('policy: allow must be an array, and each rule a string, with messages that say so', () => {
  assert.throws(() => compilePolicy('GET /v1' as never), (error: unknown) => error instanceof TypeError && /^allow must be an array of rules/.test(error.message))
  assert.throws(() => compilePolicy(['GET /ok', 42 as never]), (error: unknown) => error instanceof TypeError && error.message === 'allow[1]: a rule must be a string such as "GET /v1/**"')
})

test('policy: a rule may end in "/" (and be just "/"), which matches only that spelling', () => {
  const slashed = compilePolicy(['GET /', 'GET /v1/reports/'])
  assert.equal(allows(slashed, 'GET', '/'), true)
  assert.equal(allows(slashed, 'GET', '/v1/reports/'), true)
  assert.equal(allows(slashed, 'GET', '/v1/reports'), false)
})

test('policy: a path of 32 segments is the most a rule may have', () => {
  const deep = Array(32).fill('a').join('/')
  assert.equal(allows(compilePolicy([`GET /${deep}`]), 'GET', `/${deep}`), true)
  assert.throws(() => compilePolicy([`GET /${deep}/a`]), (error: unknown) => error instanceof TypeError && error.message === 'allow[0]: a path has at most 32 segments')
})

for (const [name, rules, allowed, refused] of [
  ['two rules on one path add their methods', ['GET /x', 'POST /x'], ['GET', 'HEAD', 'POST'], ['DELETE', 'PUT']],
  ['"*" after a method list allows every method', ['GET /x', '* /x'], ['GET', 'DELETE', 'PATCH'], []],
  ['a method list after "*" still allows every method', ['* /x', 'GET /x'], ['GET', 'DELETE', 'PATCH'], []],
  ['two "**" rules on one prefix add their methods', ['GET /x/**', 'POST /x/**'], ['GET', 'POST'], ['DELETE']],
] as const) {
  test(`policy: ${name}`, () => {
    const merged = compilePolicy(rules)
    for (const method of allowed) assert.equal(allows(merged, method, rules[0].endsWith('**') ? '/x/y' : '/x'), true, method)
    for (const method of refused) assert.equal(allows(merged, method, rules[0].endsWith('**') ? '/x/y' : '/x'), false, method)
  })
}

test('policy: merging rules never changes the rules compiled before (each key gets its own sets)', () => {
  const first = compilePolicy(['GET /x'])
  compilePolicy(['GET /x', 'DELETE /x'])
  assert.equal(allows(first, 'DELETE', '/x'), false)
})
