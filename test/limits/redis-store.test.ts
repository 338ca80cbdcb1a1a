/** Limit counters in a real Redis: the same answers as in memory, shared by two stores, and what happens while Redis is away. */
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import {
  compileRateLimit,
  createMemoryRateLimitStore,
  createRedisLimits,
  RATE_UNAVAILABLE,
  THROTTLE_UNAVAILABLE,
  type RedisFailureMode,
  type RedisLimits,
} from '../../dist/index.js'
import { waitFor } from '../helpers.js'
import { REDIS, startRedis, type RedisServer } from '../redis-server.js'

const SKIP = { skip: REDIS === true ? false : REDIS }
const THROTTLE = { limit: 3, windowMs: 60_000, maxClients: 1000 }

async function limits(t: TestContext, server: RedisServer, onFailure: RedisFailureMode = 'local', prefix = 'kg-test:'): Promise<RedisLimits> {
  const store = createRedisLimits({ redis: { host: '127.0.0.1', port: server.port, tls: false, db: 0 }, timeoutMs: 200, prefix, onFailure, throttle: THROTTLE })
  t.after(() => store.close())
  assert.equal(await store.whenUp(2000), true)
  return store
}

test('GCRA in Redis gives the answers of the memory store: burst, remaining, reset, retry-after', SKIP, async (t) => {
  const server = await startRedis(t)
  const store = await limits(t, server)
  const memory = createMemoryRateLimitStore()
  const limit = compileRateLimit({ limit: 2, windowS: 60, burst: 4 }, 'reports')
  const now = Date.now()
  const inRedis = []
  const inMemory = []
  for (let i = 0; i < 6; i++) {
    inRedis.push(await store.rateLimits.take(limit.stateKey, limit, Date.now()))
    const { allowed, remaining, resetS, retryAfterS } = memory.take(limit.stateKey, limit, now)
    inMemory.push({ allowed, remaining, resetS, retryAfterS })
  }
  assert.deepEqual(inRedis, inMemory)
  assert.deepEqual(inRedis.map((d) => d?.allowed), [true, true, true, true, false, false])
  assert.equal(inRedis[4]?.retryAfterS, 30, 'one request every 30 s')
})

test('two stores on one Redis enforce one throttle; the block reaches the other without it asking', SKIP, async (t) => {
  const server = await startRedis(t)
  const [a, b] = [await limits(t, server), await limits(t, server)]
  const throttleA = a.throttle!
  const throttleB = b.throttle!
  const answers = []
  for (let i = 0; i < 5; i++) answers.push(await (i % 2 === 0 ? throttleA : throttleB).recordFailure('198.51.100.7', Date.now()))
  assert.deepEqual(answers.map((wait) => wait > 0), [false, false, false, true, true], 'exactly 3 counted, across both')
  assert.ok(answers[3]! >= 59 && answers[3]! <= 60)
  // The third failure was A's: B learns of the block from Redis's message, not by asking.
  const fresh = await limits(t, server)
  assert.equal(fresh.throttle!.retryAfterS('198.51.100.7', Date.now()), 0, 'a store that joined later was not told')
  assert.ok(throttleB.retryAfterS('198.51.100.7', Date.now()) > 0)
  await (await limits(t, server)).throttle!.recordFailure('203.0.113.1', Date.now())
  assert.equal(throttleA.retryAfterS('203.0.113.1', Date.now()), 0, 'a client under the limit is not blocked anywhere')
})

test('Redis holds only counters under the prefix, each with a TTL', SKIP, async (t) => {
  const server = await startRedis(t)
  const store = await limits(t, server, 'local', 'gw:')
  const limit = compileRateLimit({ limit: 5, windowS: 10 }, 'billing')
  await store.rateLimits.take(limit.stateKey, limit, Date.now())
  await store.throttle!.recordFailure('2001:db8:1:2::/64', Date.now())
  const keys = server.cli('--scan').split('\n').sort()
  assert.deepEqual(keys, ['gw:fail:2001:db8:1:2::/64', 'gw:rate:billing 5/10/5'])
  for (const key of keys) {
    const ttl = Number(server.cli('PTTL', key))
    assert.ok(ttl > 0 && ttl <= 60_000, `${key} expires (PTTL ${ttl})`)
  }
})

for (const mode of ['local', 'open', 'closed'] as const) {
  test(`Redis away, LIMITS_ON_REDIS_FAILURE=${mode}`, SKIP, async (t) => {
    const server = await startRedis(t)
    const store = await limits(t, server, mode)
    const limit = compileRateLimit({ limit: 1, windowS: 60, burst: 2 }, 'k')
    await server.kill()
    await waitFor('the store to notice', async () => (store.up ? undefined : true))
    const failures = []
    for (let i = 0; i < 4; i++) failures.push(await store.throttle!.recordFailure('192.0.2.1', Date.now()))
    const takes = []
    for (let i = 0; i < 3; i++) takes.push(await store.rateLimits.take(limit.stateKey, limit, Date.now()))
    const check = store.throttle!.retryAfterS('192.0.2.1', Date.now())
    if (mode === 'local') {
      assert.deepEqual(failures.map((wait) => wait > 0), [false, false, false, true], 'counted in memory')
      assert.deepEqual(takes.map((d) => d?.allowed), [true, true, false])
      assert.ok(check > 0)
    } else if (mode === 'open') {
      assert.deepEqual(failures, [0, 0, 0, 0], 'nothing enforced')
      assert.deepEqual(takes, [undefined, undefined, undefined], 'no decision: the request passes')
      assert.equal(check, 0)
    } else {
      assert.deepEqual(failures, Array(4).fill(THROTTLE_UNAVAILABLE))
      assert.deepEqual(takes, Array(3).fill(RATE_UNAVAILABLE))
      assert.equal(check, THROTTLE_UNAVAILABLE)
      assert.equal(store.throttle!.mayRefuse, true, 'every keyed request is checked (and refused) while away')
    }
    assert.ok(store.errors >= 1)
    await server.restart()
    await waitFor('the store to be back', async () => (store.up ? true : undefined))
    assert.equal(await store.throttle!.recordFailure('192.0.2.1', Date.now()), 0, 'Redis counts again, from zero (it lost its data)')
  })
}

test('the least ACL user the README names is enough for every count and announcement', SKIP, async (t) => {
  const rules = '~keygate:* &keygate:blocked +ping +select +eval +evalsha +subscribe +incr +pttl +pexpire +get +set +time +publish'.split(' ')
  const server = await startRedis(t, { user: { name: 'keygate', password: 'acl-pass-5e1d', rules } })
  const connect = () => {
    const store = createRedisLimits({ redis: { host: '127.0.0.1', port: server.port, tls: false, db: 1, user: 'keygate', password: 'acl-pass-5e1d' }, throttle: THROTTLE })
    t.after(() => store.close())
    return store
  }
  const [a, b] = [connect(), connect()]
  assert.equal(await a.whenUp(2000), true)
  assert.equal(await b.whenUp(2000), true)
  const limit = compileRateLimit({ limit: 1, windowS: 60 }, 'acl')
  assert.deepEqual([(await a.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed, (await a.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed], [true, false])
  for (let i = 0; i < 3; i++) assert.equal(await a.throttle!.recordFailure('192.0.2.9', Date.now()), 0)
  await waitFor('the announcement to reach the other store', () => (b.throttle!.retryAfterS('192.0.2.9', Date.now()) > 0 ? true : undefined), 2000)
  assert.equal(a.errors, 0)
})
