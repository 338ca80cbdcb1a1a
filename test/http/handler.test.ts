import assert from 'node:assert/strict'
import { test } from 'node:test'
import { freshRequestId } from '../../dist/http/respond.js'
import { TEST_KEY, rawRequest, startKeygate } from '../helpers.js'

const JSON_TYPE = 'application/json; charset=utf-8'
const DATA = '{"message":"Here is your data"}'

/** Asserts the header set every keygate response carries. */
function assertCommonHeaders(res: Response) {
  assert.equal(res.headers.get('cache-control'), 'no-store')
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
  assert.match(res.headers.get('x-request-id') ?? '', /^[A-Za-z0-9._-]{1,128}$/)
}

async function assertJson(res: Response, status: number, body: string) {
  const text = await res.text()
  assert.equal(res.status, status)
  assert.equal(text, body)
  assert.equal(res.headers.get('content-type'), JSON_TYPE)
  assert.equal(res.headers.get('content-length'), String(Buffer.byteLength(body)))
  assertCommonHeaders(res)
}

test('GET /data with the key answers the tutorial body', async (t) => {
  const res = await fetch(`${await startKeygate(t)}/data`, { headers: { authorization: TEST_KEY } })
  await assertJson(res, 200, DATA)
  assert.equal(res.headers.get('www-authenticate'), null)
})

for (const [name, headers] of [
  ['Bearer', { authorization: `Bearer ${TEST_KEY}` }],
  ['lower-case bearer', { authorization: `bearer ${TEST_KEY}` }],
  ['X-API-Key', { 'x-api-key': TEST_KEY }],
] as const) {
  test(`GET /data accepts the key as ${name}`, async (t) => {
    await assertJson(await fetch(`${await startKeygate(t)}/data`, { headers }), 200, DATA)
  })
}

test('GET /data ignores the query string', async (t) => {
  const res = await fetch(`${await startKeygate(t)}/data?page=2`, { headers: { authorization: TEST_KEY } })
  await assertJson(res, 200, DATA)
})

test('HEAD /data gets the GET headers and no body', async (t) => {
  const res = await fetch(`${await startKeygate(t)}/data`, { method: 'HEAD', headers: { authorization: TEST_KEY } })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-length'), String(DATA.length))
  assert.equal(res.headers.get('content-type'), JSON_TYPE)
  assert.equal(await res.text(), '')
})

test('a request without a credential gets 401 with a bare Bearer challenge', async (t) => {
  const res = await fetch(`${await startKeygate(t)}/data`)
  await assertJson(res, 401, '{"error":"Unauthorized"}')
  assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="keygate"')
})

for (const [name, headers] of [
  ['an empty Bearer token', { authorization: 'Bearer' }],
  ['a wrong key', { authorization: 'wrong-key' }],
  ['a prefix of the key', { authorization: TEST_KEY.slice(0, -1) }],
  ['the key plus one character', { authorization: `${TEST_KEY}x` }],
  ['4000 characters', { authorization: 'k'.repeat(4000) }],
  ['a wrong X-API-Key', { 'x-api-key': 'nope' }],
  ['a wrong Authorization ahead of a right X-API-Key', { authorization: 'nope', 'x-api-key': TEST_KEY }],
] as const) {
  test(`rejects ${name} with 401 invalid_token`, async (t) => {
    const res = await fetch(`${await startKeygate(t)}/data`, { headers })
    await assertJson(res, 401, '{"error":"Unauthorized"}')
    assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="keygate", error="invalid_token"')
  })
}

for (const [name, authorization] of [
  ['a Basic credential', `Basic ${Buffer.from(`user:${TEST_KEY}`).toString('base64')}`],
  ['the key as a Basic password', `Basic ${TEST_KEY}`],
] as const) {
  test(`${name} is another scheme, not a credential: 401 as without one, and X-API-Key beside it counts`, async (t) => {
    const url = await startKeygate(t)
    const res = await fetch(`${url}/data`, { headers: { authorization } })
    await assertJson(res, 401, '{"error":"Unauthorized"}')
    assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="keygate"')
    await assertJson(await fetch(`${url}/data`, { headers: { authorization, 'x-api-key': TEST_KEY } }), 200, '{"message":"Here is your data"}')
  })
}

test('rejects a non-ASCII credential (sent raw, as fetch refuses it) with 401', async (t) => {
  const url = await startKeygate(t)
  const answer = await rawRequest(url, `GET /data HTTP/1.1\r\nHost: x\r\nAuthorization: ${TEST_KEY}\xe9\r\nConnection: close\r\n\r\n`)
  assert.match(answer, /^HTTP\/1\.1 401 /)
  assert.match(answer, /error="invalid_token"/)
})

test('never reads the key from the query string', async (t) => {
  const base = await startKeygate(t)
  for (const query of [`api_key=${TEST_KEY}`, `key=${TEST_KEY}`, `authorization=${TEST_KEY}`]) {
    const res = await fetch(`${base}/data?${query}`)
    assert.equal(res.status, 401, query)
    await res.arrayBuffer()
  }
})

test('never reads the key from a cookie', async (t) => {
  const res = await fetch(`${await startKeygate(t)}/data`, { headers: { cookie: `api_key=${TEST_KEY}` } })
  await assertJson(res, 401, '{"error":"Unauthorized"}')
})

test('GET and HEAD /healthz need no key', async (t) => {
  const base = await startKeygate(t)
  await assertJson(await fetch(`${base}/healthz`), 200, '{"status":"ok"}')
  const head = await fetch(`${base}/healthz`, { method: 'HEAD' })
  assert.equal(head.status, 200)
  assert.equal(head.headers.get('content-length'), '15')
  assert.equal(await head.text(), '')
})

for (const path of ['/data', '/healthz']) {
  test(`OPTIONS ${path} answers 204 with Allow and no body, without a key`, async (t) => {
    const res = await fetch(`${await startKeygate(t)}${path}`, { method: 'OPTIONS' })
    assert.equal(res.status, 204)
    assert.equal(res.headers.get('allow'), 'GET, HEAD, OPTIONS')
    assert.equal(await res.text(), '')
    assertCommonHeaders(res)
  })

  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    test(`${method} ${path} is 405 with Allow, with or without a key`, async (t) => {
      const base = await startKeygate(t)
      for (const headers of [{}, { authorization: TEST_KEY }] as Record<string, string>[]) {
        const res = await fetch(`${base}${path}`, { method, headers })
        await assertJson(res, 405, '{"error":"Method Not Allowed"}')
        assert.equal(res.headers.get('allow'), 'GET, HEAD, OPTIONS')
      }
    })
  }
}

for (const path of ['/', '/data/', '/DATA', '/datas', '/data/x', '/healthz/', '/%64ata', '//data']) {
  test(`unknown path ${path} is 404, with or without a key`, async (t) => {
    const base = await startKeygate(t)
    for (const headers of [{}, { authorization: TEST_KEY }] as Record<string, string>[]) {
      await assertJson(await fetch(`${base}${path}`, { headers }), 404, '{"error":"Not Found"}')
    }
  })
}

test('an absolute-form request target is routed by its path', async (t) => {
  const url = await startKeygate(t)
  const answer = await rawRequest(url, `GET http://example.test/data?x=1 HTTP/1.1\r\nHost: example.test\r\nAuthorization: ${TEST_KEY}\r\nConnection: close\r\n\r\n`)
  assert.match(answer, /^HTTP\/1\.1 200 /)
  assert.ok(answer.endsWith(DATA))
})

test('OPTIONS * is 404, not a crash', async (t) => {
  const url = await startKeygate(t)
  const answer = await rawRequest(url, 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  assert.match(answer, /^HTTP\/1\.1 404 /)
})

test('/auth with a key answers 204 with X-Keygate-Key-Id, for any method', async (t) => {
  const base = await startKeygate(t)
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS']) {
    const res = await fetch(`${base}/auth`, { method, headers: { authorization: `Bearer ${TEST_KEY}` } })
    assert.equal(res.status, 204, method)
    assert.equal(res.headers.get('x-keygate-key-id'), 't')
    assert.equal(await res.text(), '')
    assertCommonHeaders(res)
  }
})

test('/auth without a key is 401, OPTIONS included', async (t) => {
  const base = await startKeygate(t)
  for (const method of ['GET', 'POST', 'OPTIONS']) {
    const res = await fetch(`${base}/auth`, { method })
    await assertJson(res, 401, '{"error":"Unauthorized"}')
    assert.equal(res.headers.get('x-keygate-key-id'), null)
  }
})

test('X-Request-Id: a safe one is echoed', async (t) => {
  const id = 'abc-123_DEF.456'
  const res = await fetch(`${await startKeygate(t)}/healthz`, { headers: { 'x-request-id': id } })
  assert.equal(res.headers.get('x-request-id'), id)
})

for (const [name, id] of [
  ['too long', 'a'.repeat(129)],
  ['with a space', 'a b'],
  ['with a slash', 'a/b'],
  ['with a quote', 'a"b'],
] as const) {
  test(`X-Request-Id: one ${name} is replaced by a fresh id`, async (t) => {
    const res = await fetch(`${await startKeygate(t)}/healthz`, { headers: { 'x-request-id': id } })
    const given = res.headers.get('x-request-id') ?? ''
    assert.notEqual(given, id)
    assert.match(given, /^[0-9a-f]{32}$/)
  })
}

test('fresh request ids are 32 hex characters, all different, also across refills of the random pool', () => {
  const ids = Array.from({ length: 1000 }, freshRequestId)
  for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/)
  assert.equal(new Set(ids).size, ids.length)
})

test('fresh request ids differ between requests', async (t) => {
  const base = await startKeygate(t)
  const ids = new Set<string | null>()
  for (let i = 0; i < 5; i++) ids.add((await fetch(`${base}/healthz`)).headers.get('x-request-id'))
  assert.equal(ids.size, 5)
})
