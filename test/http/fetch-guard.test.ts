/** createFetchGuard(): a fetch-style app guarded with Node's global Request and Response only. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createFetchGuard, createGuard, createKeyStore, createLogger, createThrottle, keyIdOf } from '../../dist/index.js'
import { waitFor } from '../helpers.js'

const READ_KEY = 'reader-key-0123456789abcdef'
const LIMITED_KEY = 'limited-key-0123456789abcdef'
const KEYS = createKeyStore(
  [
    { id: 'reader', key: READ_KEY, allow: ['GET /v1/**'] },
    { id: 'limited', key: LIMITED_KEY, rateLimit: { limit: 1, windowS: 60, burst: 1 } },
  ],
  ['GET /v1/status'],
)

/** The app: answers 201 with who it served, through the guard as a fetch-style app would use it. */
function guardedFetch(guard: ReturnType<typeof createFetchGuard>, served: string[]) {
  return async (request: Request, clientAddress = '192.0.2.10'): Promise<Response> => {
    const refusal = await guard(request, { clientAddress })
    if (refusal !== undefined) return refusal
    served.push(`${request.method} ${new URL(request.url).pathname} ${keyIdOf(request) ?? 'public'}`)
    return guard.answered(request, new Response(`hello ${keyIdOf(request) ?? 'anyone'}`, { status: 201 }))
  }
}

const request = (path: string, key?: string, init: RequestInit = {}) =>
  new Request(`http://app.example${path}`, { ...init, headers: { ...(key && { authorization: `Bearer ${key}` }), ...(init.headers as Record<string, string>) } })

test('refusals are Responses with keygate\'s status, body and headers; the app is not called', async () => {
  const served: string[] = []
  const app = guardedFetch(createFetchGuard({ keys: KEYS }), served)
  const noKey = await app(request('/v1/reports'))
  assert.equal(noKey.status, 401)
  assert.equal(await noKey.text(), '{"error":"Unauthorized"}')
  assert.equal(noKey.headers.get('www-authenticate'), 'Bearer realm="keygate"')
  assert.match(noKey.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/)
  const forbidden = await app(request('/v1/reports', READ_KEY, { method: 'POST' }))
  assert.equal(forbidden.status, 403)
  assert.equal(await forbidden.text(), '{"error":"Forbidden"}')
  const ambiguous = await app(request('/v1/reports', READ_KEY, { headers: { 'x-http-method-override': 'DELETE' } }))
  assert.equal(ambiguous.status, 400)
  assert.deepEqual(served, [])
})

test('an allowed request goes on with its key id; answered() adds RateLimit and X-Request-Id and logs the app\'s status', async () => {
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(...chunk.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)) })
  const served: string[] = []
  const app = guardedFetch(createFetchGuard({ keys: KEYS, log }), served)
  const first = await app(request('/v1/orders', LIMITED_KEY, { headers: { 'x-request-id': 'fetch-1' } }))
  assert.equal(first.status, 201)
  assert.equal(await first.text(), 'hello limited')
  assert.equal(first.headers.get('ratelimit-policy'), '"key";q=1;w=60')
  assert.match(first.headers.get('ratelimit') ?? '', /^"key";r=0;t=\d+$/)
  assert.equal(first.headers.get('x-request-id'), 'fetch-1')
  const limited = await app(request('/v1/orders', LIMITED_KEY))
  assert.equal(limited.status, 429)
  assert.ok(Number(limited.headers.get('retry-after')) > 0)
  assert.equal(await (await app(request('/v1/status'))).text(), 'hello anyone')
  assert.deepEqual(served, ['GET /v1/orders limited', 'GET /v1/status public'])
  const line = await waitFor('the access line', () => lines.find((l) => l.requestId === 'fetch-1'))
  assert.equal(line.status, 201)
  assert.equal(line.keyId, 'limited')
  assert.equal(line.client, '192.0.2.10')
})

test('the throttle counts failures by the client address given', async () => {
  const served: string[] = []
  const app = guardedFetch(createFetchGuard({ keys: KEYS, throttle: createThrottle({ limit: 2, windowMs: 60_000 }) }), served)
  for (let i = 0; i < 2; i++) assert.equal((await app(request('/v1/a', 'wrong-key-0123456789abcdef'), '198.51.100.1')).status, 401)
  assert.equal((await app(request('/v1/a', READ_KEY), '198.51.100.1')).status, 429, 'that client is blocked')
  assert.equal((await app(request('/v1/a', READ_KEY), '198.51.100.2')).status, 201, 'another is not')
  assert.deepEqual(served, ['GET /v1/a reader'])
})

test('createGuard(options).fetch is the same Web-standard guard as createFetchGuard', async () => {
  const guard = createGuard({ keys: KEYS })
  assert.equal((await guard.fetch(request('/v1/reports')))?.status, 401)
  const allowed = request('/v1/reports', READ_KEY)
  assert.equal(await guard.fetch(allowed, { clientAddress: '192.0.2.1' }), undefined)
  assert.equal(keyIdOf(allowed), 'reader')
  assert.match(guard.answered(allowed, new Response('ok')).headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/)
})
