import assert from 'node:assert/strict'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { test } from 'node:test'
import { authenticate, extractCredential } from '../../dist/keys/auth.js'
import { createKeyStore } from '../../dist/index.js'

const keys = createKeyStore([
  { id: 'live', key: 'live-key' },
  { id: 'old', key: 'old-key', expiresAt: '2020-01-01T00:00:00Z' },
])
const request = (headers: IncomingHttpHeaders) => ({ headers }) as IncomingMessage

for (const [name, headers, expected] of [
  ['a bare Authorization value', { authorization: 'k1' }, 'k1'],
  ['a Bearer token', { authorization: 'Bearer k1' }, 'k1'],
  ['a bearer token in lower case', { authorization: 'bearer k1' }, 'k1'],
  ['a BEARER token with two spaces', { authorization: 'BEARER  k1' }, 'k1'],
  ['X-API-Key', { 'x-api-key': 'k1' }, 'k1'],
  ['Authorization before X-API-Key', { authorization: 'first', 'x-api-key': 'second' }, 'first'],
  ['X-API-Key when Authorization is empty', { authorization: '', 'x-api-key': 'second' }, 'second'],
  ['nothing from a scheme that only starts like Bearer (not keygate\'s)', { authorization: 'BearerX k1' }, undefined],
  ['"Bearer" with no space, as is (a bare key)', { authorization: 'Bearerk1' }, 'Bearerk1'],
  ['nothing from a word one letter off Bearer', { authorization: 'Bearet k1' }, undefined],
  ['nothing from a Basic header', { authorization: 'Basic dXNlcjpwYXNz' }, undefined],
  ['X-API-Key beside a Basic header (the service\'s own)', { authorization: 'Basic dXNlcjpwYXNz', 'x-api-key': 'k1' }, 'k1'],
  ['X-API-Key beside a Digest header', { authorization: 'Digest username="u"', 'x-api-key': 'k1' }, 'k1'],
  ['nothing without headers', {}, undefined],
  ['nothing from an empty X-API-Key', { 'x-api-key': '' }, undefined],
  ['nothing from a cookie', { cookie: 'api_key=k1' }, undefined],
  ['nothing from an X-API-Key that is not a string', { 'x-api-key': ['k1', 'k2'] as unknown as string }, undefined],
  ['X-API-Key when Authorization is not a string', { authorization: ['k1'] as unknown as string, 'x-api-key': 'k2' }, 'k2'],
] as const) {
  test(`extractCredential reads ${name}`, () => {
    assert.equal(extractCredential(headers), expected)
  })
}

test('authenticate returns the key id for a valid key', () => {
  assert.deepEqual(authenticate(keys, request({ authorization: 'Bearer live-key' })), { ok: true, keyId: 'live' })
})

for (const [name, headers, reason] of [
  ['no credential', {}, 'missing'],
  ['a wrong key', { authorization: 'wrong' }, 'invalid'],
  ['a Basic credential (another scheme: no credential of keygate\'s)', { authorization: 'Basic bGl2ZS1rZXk=' }, 'missing'],
] as const) {
  test(`authenticate refuses ${name} as ${reason}`, () => {
    assert.deepEqual(authenticate(keys, request(headers)), { ok: false, reason })
  })
}

test('authenticate refuses an expired key as expired, naming the key', () => {
  assert.deepEqual(authenticate(keys, request({ 'x-api-key': 'old-key' })), { ok: false, reason: 'expired', keyId: 'old' })
})

test('authenticate checks expiry against the clock it is given', () => {
  const dated = createKeyStore([{ id: 'd', key: 'dated-key', expiresAt: '2030-01-01T00:00:00Z' }])
  const req = request({ authorization: 'dated-key' })
  assert.equal(authenticate(dated, req, Date.UTC(2029, 11, 31)).ok, true)
  assert.deepEqual(authenticate(dated, req, Date.UTC(2030, 0, 1)), { ok: false, reason: 'expired', keyId: 'd' })
})

test('authenticate hands over the key\'s policy and rate limit, each when the key has only that one', () => {
  const policed = createKeyStore([
    { id: 'scoped', key: 'scoped-key', allow: ['GET /x'] },
    { id: 'limited', key: 'limited-key', rateLimit: { limit: 1, windowS: 1 } },
  ])
  const scoped = authenticate(policed, request({ authorization: 'scoped-key' }))
  assert.equal(scoped.ok && scoped.policy?.allows('GET', ['x']), true)
  assert.equal(scoped.ok && scoped.rateLimit, undefined)
  const limited = authenticate(policed, request({ authorization: 'limited-key' }))
  assert.equal(limited.ok && limited.rateLimit?.limit, 1)
  assert.equal(limited.ok && limited.policy, undefined)
})

test('authenticate answers missing, never throws, for a request without headers', () => {
  assert.deepEqual(authenticate(keys, undefined as unknown as IncomingMessage), { ok: false, reason: 'missing' })
  assert.deepEqual(authenticate(keys, { headers: null } as unknown as IncomingMessage), { ok: false, reason: 'missing' })
  assert.deepEqual(authenticate(keys, {} as IncomingMessage), { ok: false, reason: 'missing' })
})
