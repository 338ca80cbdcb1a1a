/** Per-key rate limits (GCRA), unit and through the handler. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { compileRateLimit, createKeyStore, createLogger, createMemoryRateLimitStore, type RateLimitStore } from '../../dist/index.js'
import { startKeygate } from '../helpers.js'
import { RATE_UNAVAILABLE, rateLimitFor } from '../../dist/limits/rate-limit.js'

test('GCRA: a burst at once, then one request per interval; refused requests do not count', () => {
  const limit = compileRateLimit({ limit: 10, windowS: 1, burst: 3 }, 'k') // one request every 100 ms, 3 at once
  const store = createMemoryRateLimitStore()
  const at = (ms: number) => store.take(limit.stateKey, limit, ms)
  assert.deepEqual([at(0), at(0), at(0)].map((d) => [d.allowed, d.remaining]), [[true, 2], [true, 1], [true, 0]])
  const refused = at(0)
  assert.equal(refused.allowed, false)
  assert.equal(refused.retryAfterS, 1)
  for (let i = 0; i < 5; i++) assert.equal(at(50).allowed, false, 'refused requests are not counted')
  assert.equal(at(100).allowed, true, 'one interval later, one request')
  assert.equal(at(100).allowed, false)
  // Sustained: over 10 s at 20 requests per second asked, exactly 10 per second pass (plus the burst).
  let passed = 0
  for (let ms = 200; ms < 10_200; ms += 50) if (at(ms).allowed) passed++
  assert.equal(passed, 100)
  assert.equal(at(100_000).remaining, 2, 'after a long pause the burst is back')
})

test('rate limits are validated: positive integers, burst defaulting to limit', () => {
  assert.equal(compileRateLimit({ limit: 5, windowS: 60 }, 'k').burst, 5)
  assert.equal(compileRateLimit({ limit: 5, windowS: 60 }, 'k').policyHeader, '"key";q=5;w=60')
  for (const bad of [{ limit: 0, windowS: 1 }, { limit: 1.5, windowS: 1 }, { limit: 1, windowS: -1 }, { limit: 1, windowS: 1, burst: 0 }, { limit: 1, windowS: 1, extra: 1 }]) {
    assert.throws(() => compileRateLimit(bad as never, 'k'), TypeError)
  }
})

test('a rate-limited key: RateLimit headers on every answer, then 429 with Retry-After; other keys unaffected', async (t) => {
  const keys = createKeyStore([
    { id: 'limited', key: 'limited-key-0123456789', rateLimit: { limit: 2, windowS: 60, burst: 3 } },
    { id: 'free', key: 'free-key-0123456789' },
  ])
  const url = await startKeygate(t, { keys })
  const ask = async (key: string) => {
    const res = await fetch(`${url}/data`, { headers: { authorization: key } })
    return { status: res.status, policy: res.headers.get('ratelimit-policy'), limit: res.headers.get('ratelimit'), retryAfter: res.headers.get('retry-after'), body: await res.text() }
  }
  const answers = [await ask('limited-key-0123456789'), await ask('limited-key-0123456789'), await ask('limited-key-0123456789')]
  assert.deepEqual(answers.map((a) => [a.status, a.policy, a.limit]), [
    [200, '"key";q=2;w=60', '"key";r=2;t=30'],
    [200, '"key";q=2;w=60', '"key";r=1;t=60'],
    [200, '"key";q=2;w=60', '"key";r=0;t=90'],
  ])
  const refused = await ask('limited-key-0123456789')
  assert.equal(refused.status, 429)
  assert.equal(refused.body, '{"error":"Too Many Requests"}')
  assert.equal(refused.retryAfter, '30')
  assert.equal(refused.limit, '"key";r=0;t=90')
  const free = await ask('free-key-0123456789')
  assert.equal(free.status, 200)
  assert.equal(free.policy, null)
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: 'free-key-0123456789' } })).text()
  assert.match(metrics, /keygate_auth_failures_total\{reason="rate_limited"\} 1\n/)
})

test('a store that answers later (as one in another process does) gives the same answers, each logged once', async (t) => {
  const memory = createMemoryRateLimitStore()
  const later: RateLimitStore = {
    get size() {
      return memory.size
    },
    take: (stateKey, limit, nowMs) => new Promise((resolve) => setImmediate(() => resolve(memory.take(stateKey, limit, nowMs)))),
  }
  const keys = createKeyStore([{ id: 'limited', key: 'limited-key-0123456789', rateLimit: { limit: 1, windowS: 60, burst: 2 } }])
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(chunk) })
  const url = await startKeygate(t, { keys, rateLimits: later, log })
  const statuses: Array<[number, string | null]> = []
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${url}/auth`, { headers: { authorization: 'limited-key-0123456789' } })
    statuses.push([res.status, res.headers.get('ratelimit')])
    await res.arrayBuffer()
  }
  assert.deepEqual(statuses, [[204, '"key";r=1;t=60'], [204, '"key";r=0;t=120'], [429, '"key";r=0;t=120']])
  log.flush()
  const access = lines.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)
  assert.deepEqual(access.map((line) => [line.status, line.reason ?? null]), [[204, null], [204, null], [429, 'rate_limited']])
})

test('RATE_UNAVAILABLE refuses: no store, no decision, never an allowed request', () => {
  assert.deepEqual({ ...RATE_UNAVAILABLE }, { allowed: false, remaining: 0, resetS: 0, retryAfterS: 1, unavailable: true })
})

test('a rate limit that is not an object, or has an unknown field, is refused with a message that says what it must be', () => {
  for (const bad of [null, 'x', [], 5, [{ limit: 1, windowS: 1 }]]) {
    assert.throws(() => compileRateLimit(bad as never, 'k'), (error: unknown) => error instanceof TypeError && /^rateLimit must be an object \{ "limit": L, "windowS": W, "burst": B \} or null$/.test(error.message), JSON.stringify(bad))
  }
  assert.throws(() => compileRateLimit({ limit: 1, windowS: 1, extra: 1 } as never, 'k'), /^TypeError: rateLimit: unknown field \(allowed: limit, windowS, burst\)$/)
})

test('a rate limit\'s numbers are positive integers up to a billion', () => {
  assert.equal(compileRateLimit({ limit: 1_000_000_000, windowS: 1 }, 'k').limit, 1_000_000_000)
  for (const field of ['limit', 'windowS', 'burst'] as const) {
    const spec = { limit: 1, windowS: 1, burst: 1, [field]: 1_000_000_001 }
    assert.throws(() => compileRateLimit(spec, 'k'), (error: unknown) => error instanceof TypeError && error.message.startsWith(`rateLimit.${field} must be a positive integer`), field)
  }
})

test('a key\'s counter is named by its id and its limit: a reload that changes the limit starts it again', () => {
  assert.equal(compileRateLimit({ limit: 5, windowS: 60, burst: 7 }, 'billing').stateKey, 'billing\n5/60/7')
  assert.notEqual(compileRateLimit({ limit: 5, windowS: 60 }, 'billing').stateKey, compileRateLimit({ limit: 6, windowS: 60 }, 'billing').stateKey)
})

test('keys sharing one compiled limit (defaults) each get a counter of their own', () => {
  const shared = compileRateLimit({ limit: 1, windowS: 60, burst: 1 }, '')
  const a = rateLimitFor(shared, 'a')
  const b = rateLimitFor(shared, 'b')
  assert.notEqual(a.stateKey, b.stateKey)
  assert.deepEqual([a.limit, a.windowS, a.burst, a.intervalMs, a.policyHeader], [1, 60, 1, 60_000, '"key";q=1;w=60'])
  const store = createMemoryRateLimitStore()
  assert.equal(store.take(a.stateKey, a, 0).allowed, true)
  assert.equal(store.take(a.stateKey, a, 0).allowed, false)
  assert.equal(store.take(b.stateKey, b, 0).allowed, true, 'a\'s burst is a\'s alone')
  assert.equal(store.size, 2)
})

test('the memory store forgets passed states past 10,000 keys, and never a live one', () => {
  const limit = compileRateLimit({ limit: 1, windowS: 60, burst: 1 }, 'k') // a TAT one minute ahead per request
  const store = createMemoryRateLimitStore()
  assert.equal(store.take('exhausted', limit, 0).allowed, true)
  assert.equal(store.take('exhausted', limit, 0).allowed, false)
  // 10,000 other keys at t=1 ms: live (their TATs a minute ahead) until t=60,001 ms.
  for (let i = 0; i < 10_000; i++) store.take(`other-${i}`, limit, 1)
  assert.equal(store.size, 10_001, 'every live state is kept up to the bound')
  store.take('one-more', limit, 2) // past the bound: a sweep, but nothing has passed yet
  assert.equal(store.size, 10_002)
  assert.equal(store.take('exhausted', limit, 3).allowed, false, 'a sweep never frees a live key')
  // Two minutes on, every state has passed: the next sweep drops them all but the newest.
  for (let i = 0; i < 20_002; i++) store.take(`late-${i}`, limit, 120_000 + i)
  assert.ok(store.size < 30_000, `the passed states were swept: ${store.size} held`)
  assert.ok(store.size >= 10_000, `live states are not swept below the bound: ${store.size} held`)
})
