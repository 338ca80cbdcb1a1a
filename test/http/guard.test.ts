/** createGuard(): a plain node:http app's own routes behind the whole gateway. */
import assert from 'node:assert/strict'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { createGuard, createKeyStore, createLogger, createThrottle, keyIdOf, type GuardOptions } from '../../dist/index.js'
import { listen, waitFor } from '../helpers.js'

const READ_KEY = 'reader-key-0123456789abcdef'
const WRITE_KEY = 'writer-key-0123456789abcdef'
const LIMITED_KEY = 'limited-key-0123456789abcdef'

// One key may read the app's /v1 routes, one may also write; one has a rate limit; /v1/status is public.
const KEYS = createKeyStore(
  [
    { id: 'reader', key: READ_KEY, allow: ['GET /v1/*'] },
    { id: 'writer', key: WRITE_KEY, allow: ['GET /v1/*', 'POST /v1/*'] },
    { id: 'limited', key: LIMITED_KEY, rateLimit: { limit: 2, windowS: 60, burst: 2 } },
  ],
  ['GET /v1/status'],
)

/** A node:http app behind the guard: it answers `app <key id>` (201 for POST) and remembers who reached it. */
async function guardedApp(t: TestContext, options: Partial<GuardOptions> = {}) {
  const guard = createGuard({ keys: KEYS, ...options })
  t.after(() => guard.close())
  const reached: Array<{ path: string | undefined; keyId: string | undefined }> = []
  const app = (req: IncomingMessage, res: ServerResponse) => {
    reached.push({ path: req.url, keyId: keyIdOf(req) })
    res.statusCode = req.method === 'POST' ? 201 : 200
    res.end(`app ${keyIdOf(req) ?? 'public'}`)
  }
  const { url } = await listen(t, (req, res) => guard(req, res, (error) => (error === undefined ? app(req, res) : res.destroy())))
  return { url, reached }
}

const get = (url: string, key?: string, init: RequestInit = {}) => fetch(url, { ...init, headers: { ...(key && { authorization: `Bearer ${key}` }), ...(init.headers as Record<string, string>) } })

test('refusals are keygate\'s own replies, and the app never sees the request', async (t) => {
  const { url, reached } = await guardedApp(t)
  const cases: Array<[string, () => Promise<Response>, number, string]> = [
    ['no key', () => get(`${url}/v1/reports`), 401, '{"error":"Unauthorized"}'],
    ['a wrong key', () => get(`${url}/v1/reports`, 'wrong-key-0123456789abcdef'), 401, '{"error":"Unauthorized"}'],
    ['a write without the scope', () => get(`${url}/v1/reports`, READ_KEY, { method: 'POST' }), 403, '{"error":"Forbidden"}'],
    // (fetch resolves dot segments itself, %2e%2e included: an encoded slash reaches the server as sent)
    ['an encoded slash', () => get(`${url}/v1/reports%2F..%2Fadmin`, READ_KEY), 400, '{"error":"Bad Request"}'],
    ['a method override', () => get(`${url}/v1/reports`, READ_KEY, { headers: { 'x-http-method-override': 'DELETE' } }), 400, '{"error":"Bad Request"}'],
  ]
  for (const [name, send, status, body] of cases) {
    const res = await send()
    assert.equal(res.status, status, name)
    assert.equal(await res.text(), body, name)
    assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/, name)
  }
  const noKey = await get(`${url}/v1/reports`)
  assert.equal(noKey.headers.get('www-authenticate'), 'Bearer realm="keygate"')
  await noKey.text()
  assert.deepEqual(reached, [])
})

test('an allowed request reaches the app with its key id, X-Request-Id set; a public one without a key', async (t) => {
  const { url, reached } = await guardedApp(t)
  const read = await get(`${url}/v1/reports`, READ_KEY, { headers: { 'x-request-id': 'mine-1' } })
  assert.equal(read.status, 200)
  assert.equal(await read.text(), 'app reader')
  assert.equal(read.headers.get('x-request-id'), 'mine-1')
  const write = await get(`${url}/v1/reports`, WRITE_KEY, { method: 'POST', body: 'x' })
  assert.equal(write.status, 201)
  assert.equal(await write.text(), 'app writer')
  const status = await get(`${url}/v1/status`)
  assert.equal(await status.text(), 'app public')
  assert.deepEqual(reached, [
    { path: '/v1/reports', keyId: 'reader' },
    { path: '/v1/reports', keyId: 'writer' },
    { path: '/v1/status', keyId: undefined },
  ])
})

test('a key\'s rate limit: RateLimit headers on the app\'s answers, then 429 without the app', async (t) => {
  const { url, reached } = await guardedApp(t)
  for (const remaining of [1, 0]) {
    const res = await get(`${url}/anything`, LIMITED_KEY)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('ratelimit-policy'), '"key";q=2;w=60')
    assert.match(res.headers.get('ratelimit') ?? '', new RegExp(`^"key";r=${remaining};t=\\d+$`))
    await res.text()
  }
  const limited = await get(`${url}/anything`, LIMITED_KEY)
  assert.equal(limited.status, 429)
  assert.equal(await limited.text(), '{"error":"Too Many Requests"}')
  assert.ok(Number(limited.headers.get('retry-after')) > 0)
  assert.equal(reached.length, 2)
})

test('failed attempts are throttled: 429 after the limit, even with a good key', async (t) => {
  const { url, reached } = await guardedApp(t, { throttle: createThrottle({ limit: 2, windowMs: 60_000 }) })
  for (let i = 0; i < 2; i++) assert.equal((await get(`${url}/v1/reports`, 'wrong-key-0123456789abcdef')).status, 401)
  const blocked = await get(`${url}/v1/reports`, READ_KEY)
  assert.equal(blocked.status, 429)
  assert.ok(Number(blocked.headers.get('retry-after')) > 0)
  assert.deepEqual(reached, [])
})

test('the access line and the metrics have the app\'s status; /healthz and /metrics only where exposed', async (t) => {
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(...chunk.split('\n').filter(Boolean)) })
  const { url, reached } = await guardedApp(t, { log, expose: { healthz: '/_kg/healthz', metrics: '/_kg/metrics' } })
  assert.equal((await get(`${url}/v1/orders`, WRITE_KEY, { method: 'POST' })).status, 201)
  const line = await waitFor('the access line', () => lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.path === '/v1/orders'))
  assert.equal(line.status, 201)
  assert.equal(line.keyId, 'writer')
  assert.equal(line.method, 'POST')
  const health = await get(`${url}/_kg/healthz`)
  assert.equal(await health.text(), '{"status":"ok"}')
  const metrics = await (await get(`${url}/_kg/metrics`, LIMITED_KEY)).text() // a key without scopes
  assert.match(metrics, /^keygate_requests_total\{route="app",status="201"\} 1$/m)
  assert.equal((await get(`${url}/healthz`)).status, 401, 'not exposed there: an app path like any other')
  assert.deepEqual(reached.map((r) => r.path), ['/v1/orders'])
})

test('keys from a keys file, reloaded when it changes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-guard-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  const write = (id: string, key: string) => {
    writeFileSync(`${file}.new`, JSON.stringify({ keys: [{ id, key }] }))
    renameSync(`${file}.new`, file)
  }
  write('first', 'first-key-0123456789abcdef')
  const { url } = await guardedApp(t, { keys: file })
  assert.equal(await (await get(`${url}/x`, 'first-key-0123456789abcdef')).text(), 'app first')
  write('second', 'second-key-0123456789abcdef')
  await waitFor('the reload', async () => ((await get(`${url}/x`, 'second-key-0123456789abcdef')).status === 200 ? true : undefined))
  assert.equal((await get(`${url}/x`, 'first-key-0123456789abcdef')).status, 401)
})

for (const [name, options, message] of [
  ['no keys', {}, /createGuard\(options\): keys must be a key store/],
  ['an empty keys path', { keys: '' }, /createGuard\(options\): keys must be a key store or the path of a keys file/],
  ['a negative trustProxy', { keys: KEYS, trustProxy: -1 }, /createGuard\(options\): trustProxy/],
  ['a bad expose', { keys: KEYS, expose: 'metrics' }, /createGuard\(options\): expose/],
  ['an exposed path without its slash', { keys: KEYS, expose: { metrics: 'metrics' } }, /createGuard\(options\): routes\.metrics/],
] as const) {
  test(`createGuard refuses ${name} with a TypeError naming the option`, () => {
    assert.throws(() => createGuard(options as unknown as GuardOptions), { name: 'TypeError', message })
  })
}
