/** Per-key scopes and public rules, through the handler and the keys file. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { authenticate, authorize, createKeyStore, createLogger, createThrottle } from '../dist/index.js'
import type { IncomingMessage } from 'node:http'
import { KeysFileError, parseKeysFile } from '../dist/keys-file/file.js'
import { startKeygate } from './helpers.js'

const SCOPED = 'scoped-key-0123456789abcdef'
const FULL = 'full-key-0123456789abcdef'
const keys = createKeyStore([
  { id: 'billing', key: SCOPED, allow: ['GET /v1/invoices/**', 'POST /v1/invoices'] },
  { id: 'ops', key: FULL },
  { id: 'none', key: 'nothing-key-0123456789', allow: [] },
], ['GET /status', 'OPTIONS /**'])

async function auth(url: string, headers: Record<string, string>) {
  const res = await fetch(`${url}/auth`, { headers })
  return { status: res.status, keyId: res.headers.get('x-keygate-key-id'), wwwAuthenticate: res.headers.get('www-authenticate'), body: await res.text() }
}

for (const [style, method, uri] of [['nginx', 'x-original-method', 'x-original-uri'], ['Caddy/Traefik', 'x-forwarded-method', 'x-forwarded-uri']] as const) {
  test(`/auth (${style} headers): scopes are matched against the original request`, async (t) => {
    const url = await startKeygate(t, { keys })
    const ask = (key: string | undefined, m: string, u: string) => auth(url, { ...(key && { authorization: key }), [method]: m, [uri]: u })
    assert.deepEqual(await ask(SCOPED, 'GET', '/v1/invoices/7?page=2'), { status: 204, keyId: 'billing', wwwAuthenticate: null, body: '' })
    assert.equal((await ask(SCOPED, 'HEAD', '/v1/invoices')).status, 204)
    assert.equal((await ask(SCOPED, 'POST', '/v1/invoices')).status, 204)
    const refused = await ask(SCOPED, 'DELETE', '/v1/invoices/7')
    assert.equal(refused.status, 403)
    assert.equal(refused.body, '{"error":"Forbidden"}')
    assert.equal(refused.wwwAuthenticate, 'Bearer realm="keygate", error="insufficient_scope"')
    assert.equal((await ask(SCOPED, 'GET', '/v1/admin')).status, 403)
    assert.equal((await ask(FULL, 'DELETE', '/anything')).status, 204)
    assert.equal((await ask('nothing-key-0123456789', 'GET', '/v1/invoices')).status, 403)
    // Public rules need no key, and say no key id.
    assert.deepEqual(await ask(undefined, 'GET', '/status'), { status: 204, keyId: null, wwwAuthenticate: null, body: '' })
    assert.equal((await ask(undefined, 'OPTIONS', '/v1/x')).status, 204)
    assert.equal((await ask(undefined, 'POST', '/status')).status, 401)
    // The bypasses: a path that could be read two ways is refused before any rule or key.
    for (const bypass of ['/v1/invoices/../admin', '/v1/invoices/%2e%2e/admin', '/v1/invoices%2F..%2Fadmin', '/v1//invoices', '/v1/invoices;/../admin', '/v1\\invoices', '/v1/%zz']) {
      const answer = await ask(SCOPED, 'GET', bypass)
      assert.equal(answer.status, 400, bypass)
      assert.equal(answer.body, '{"error":"Bad Request"}')
    }
    // Escapes of other characters are decoded before matching.
    assert.equal((await ask(SCOPED, 'GET', '/v1/%69nvoices/1')).status, 204)
  })
}

test('/auth: a key with rules and no original request to match gets 403; one without rules 204', async (t) => {
  const url = await startKeygate(t, { keys })
  assert.equal((await auth(url, { authorization: SCOPED })).status, 403)
  assert.equal((await auth(url, { authorization: FULL })).status, 204)
})

test('/data: a key whose rules leave it out gets 403, logged as forbidden with its id, and is never throttled', async (t) => {
  const lines: string[] = []
  const throttle = createThrottle({ limit: 2 })
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(chunk) })
  const url = await startKeygate(t, { keys, throttle, log })
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${url}/data`, { headers: { authorization: SCOPED } })
    assert.equal(res.status, 403)
    await res.arrayBuffer()
  }
  assert.equal(throttle.size, 0, 'a 403 is not a failed attempt')
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: FULL } })).text()
  assert.match(metrics, /keygate_auth_failures_total\{reason="forbidden"\} 5\n/)
  log.flush()
  const access = lines.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)
  const forbidden = access.filter((line) => line.status === 403)
  assert.equal(forbidden.length, 5)
  assert.equal(forbidden[0]?.reason, 'forbidden')
  assert.equal(forbidden[0]?.keyId, 'billing')
})

test('keys file: allow, defaults and public are read; bad rules name the file entry and field', () => {
  const text = JSON.stringify({
    defaults: { allow: ['GET /data'] },
    public: ['GET /status'],
    keys: [{ id: 'a', key: 'key-a-0123456789' }, { id: 'b', key: 'key-b-0123456789', allow: ['* /**'] }],
  })
  const { store } = parseKeysFile(text, 'keys.json', 'env-key-0123456789')
  assert.equal(store.lookup('key-a-0123456789')?.policy?.allows('GET', ['data']), true)
  assert.equal(store.lookup('key-a-0123456789')?.policy?.allows('GET', ['other']), false)
  assert.equal(store.lookup('env-key-0123456789')?.policy?.allows('GET', ['other']), false, 'defaults apply to API_KEY too')
  assert.equal(store.lookup('key-b-0123456789')?.policy?.allows('DELETE', ['x']), true)
  assert.equal(store.publicPolicy?.allows('GET', ['status']), true)
  for (const [bad, message] of [
    [{ keys: [{ id: 'a', key: 'key-a-0123456789', allow: ['GET /a*b'] }] }, /keys\[0\] \(id "a"\): allow\[0\]: "\*" must be a whole segment/],
    [{ keys: [], public: ['GET /**/x'] }, /public\[0\]: "\*\*" may only be the last segment/],
    [{ keys: [], defaults: { burst: 1 } }, /defaults: unknown field "burst"/],
    [{ keys: [{ id: 'a', key: 'key-a-0123456789' }], defaults: null }, /"defaults" must be an object/],
    [{ keys: [], public: 'GET /status' }, /"public" must be an array/],
    [{ keys: [{ id: "a", key: "key-a-0123456789", rateLimit: { limit: 0, windowS: 1 } }] }, /keys\[0\] \(id "a"\): rateLimit.limit must be a positive integer/],
  ] as const) {
    assert.throws(() => parseKeysFile(JSON.stringify(bad), 'keys.json'), (error: unknown) => error instanceof KeysFileError && message.test(error.problems.join('\n')))
  }
})

test('authorize() checks an authenticated key against its rules, for routes of an app', () => {
  const as = (key: string) => authenticate(keys, { headers: { authorization: key } } as unknown as IncomingMessage)
  assert.deepEqual(authorize(as(SCOPED), 'GET', '/v1/invoices/3'), { ok: true })
  assert.deepEqual(authorize(as(SCOPED), 'DELETE', '/v1/invoices/3'), { ok: false, reason: 'forbidden' })
  assert.deepEqual(authorize(as(SCOPED), 'GET', '/v1/invoices/%2e%2e/x'), { ok: false, reason: 'bad_path' })
  assert.deepEqual(authorize(as(FULL), 'DELETE', '/anything'), { ok: true })
  assert.deepEqual(authorize(as('wrong'), 'GET', '/v1/invoices'), { ok: false, reason: 'unauthenticated' })
})

test('public rules open keygate\'s own routes too: /data and /metrics without a key', async (t) => {
  const open = createKeyStore([{ id: 'ops', key: FULL }], ['GET /data'])
  const url = await startKeygate(t, { keys: open })
  const data = await fetch(`${url}/data`)
  assert.equal(data.status, 200)
  assert.deepEqual(await data.json(), { message: 'Here is your data' })
  const metrics = await fetch(`${url}/metrics`)
  assert.equal(metrics.status, 401, 'only what a public rule names')
  await metrics.arrayBuffer()
})
