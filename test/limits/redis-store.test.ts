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
    // While away every answer is decided at once: no promise, no round trip to wait for.
    const failures = []
    for (let i = 0; i < 4; i++) {
      const wait = store.throttle!.recordFailure('192.0.2.1', Date.now())
      assert.ok(!(wait instanceof Promise), 'answered synchronously')
      failures.push(wait)
    }
    const takes = []
    for (let i = 0; i < 3; i++) {
      const decision = store.rateLimits.take(limit.stateKey, limit, Date.now())
      assert.ok(!(decision instanceof Promise), 'answered synchronously')
      takes.push(decision)
    }
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

test('the least ACL user docs/shared-limits.md names is enough for every count and announcement', SKIP, async (t) => {
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

test('without onFailure a store counts locally while Redis is away (never fails open by default); without throttle it has none', SKIP, async (t) => {
  const server = await startRedis(t)
  const store = createRedisLimits({ redis: { host: '127.0.0.1', port: server.port, tls: false, db: 0 }, timeoutMs: 200 })
  t.after(() => store.close())
  assert.equal(await store.whenUp(2000), true)
  assert.equal(store.throttle, undefined)
  const limit = compileRateLimit({ limit: 1, windowS: 60, burst: 2 }, 'default-mode')
  await server.kill()
  await waitFor('the store to notice', async () => (store.up ? undefined : true))
  const takes = [await store.rateLimits.take(limit.stateKey, limit, Date.now()), await store.rateLimits.take(limit.stateKey, limit, Date.now()), await store.rateLimits.take(limit.stateKey, limit, Date.now())]
  assert.deepEqual(takes.map((d) => d?.allowed), [true, true, false])
  assert.equal(store.rateLimits.size, 1, 'the local state is counted')
})

test('mayRefuse: false while nobody can be refused, true once someone can (up, local while away, open while away)', SKIP, async (t) => {
  const server = await startRedis(t)
  const blocking = await limits(t, server, 'local')
  const fresh = await limits(t, server, 'local', 'elsewhere:') // another prefix: it hears no block of the others
  const open = await limits(t, server, 'open')
  assert.equal(blocking.throttle!.mayRefuse, false, 'up, no block')
  assert.equal(blocking.throttle!.size, 0)
  assert.equal(await blocking.throttle!.recordFailure('198.51.100.1', Date.now()), 0)
  assert.equal(blocking.throttle!.retryAfterS('198.51.100.1', Date.now()), 0, 'one failure blocks nobody')
  await blocking.throttle!.recordFailure('198.51.100.1', Date.now())
  await blocking.throttle!.recordFailure('198.51.100.1', Date.now())
  assert.ok(blocking.throttle!.retryAfterS('198.51.100.1', Date.now()) > 0, 'the limit-th failure blocks at once in the store that counted it')
  assert.equal(blocking.throttle!.mayRefuse, true, 'up, one block')
  assert.equal(blocking.throttle!.size, 1)
  await server.kill()
  await waitFor('the stores to notice', async () => (blocking.up || fresh.up || open.up ? undefined : true))
  assert.equal(open.throttle!.mayRefuse, false, 'open while away refuses nobody')
  assert.equal(fresh.throttle!.mayRefuse, false, 'local while away, nothing counted yet')
  for (let i = 0; i < 5; i++) assert.equal(fresh.throttle!.retryAfterS('203.0.113.5', Date.now()), 0)
  assert.equal(fresh.throttle!.size, 0, 'checking counts nothing')
  assert.equal(fresh.throttle!.recordFailure('203.0.113.5', Date.now()), 0)
  assert.equal(fresh.throttle!.mayRefuse, true, 'local while away, one failure counted in memory')
  assert.equal(fresh.throttle!.size, 1)
  assert.equal(blocking.throttle!.size, 1, 'the block learnt while up still counts while away')
})

test('a command that times out on a frozen Redis: closed gives 503 decisions, local decides in memory, errors count it', SKIP, async (t) => {
  const server = await startRedis(t)
  const closed = await limits(t, server, 'closed')
  const local = await limits(t, server, 'local')
  const limit = compileRateLimit({ limit: 1, windowS: 60, burst: 2 }, 'frozen')
  // Once, so that Redis knows the script: a frozen EVALSHA must time out, not come back NOSCRIPT later.
  await closed.rateLimits.take(limit.stateKey, limit, Date.now())
  const errorsBefore = closed.errors
  server.freeze()
  t.after(() => server.thaw())
  assert.deepEqual(await closed.rateLimits.take(limit.stateKey, limit, Date.now()), RATE_UNAVAILABLE)
  assert.ok(closed.errors >= errorsBefore + 1, 'the timed-out command is counted as an error')
  assert.equal((await local.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed, true, 'decided in this process')
  assert.equal(typeof (await local.throttle!.recordFailure('192.0.2.77', Date.now())), 'number')
})

test('malformed block announcements block nobody and break nothing', SKIP, async (t) => {
  const server = await startRedis(t)
  const store = await limits(t, server, 'local', 'ann:')
  for (const payload of ['x 192.0.2.5', ' 192.0.2.5', '192.0.2.5', '60000', 'Infinity 192.0.2.5', '-5 192.0.2.5']) server.cli('PUBLISH', 'ann:blocked', payload)
  server.cli('PUBLISH', 'ann:blocked', '60000 192.0.2.6') // a good one last: once it is seen, the others were too
  await waitFor('the good announcement', () => (store.throttle!.retryAfterS('192.0.2.6', Date.now()) > 0 ? true : undefined))
  assert.equal(store.throttle!.retryAfterS('192.0.2.5', Date.now()), 0)
  assert.equal(store.throttle!.retryAfterS('', Date.now()), 0)
  assert.equal(store.throttle!.size, 1)
})

test('a command Redis refuses while up (out of memory): counted as an error, decided as while away', SKIP, async (t) => {
  const server = await startRedis(t)
  const closed = await limits(t, server, 'closed')
  const local = await limits(t, server, 'local')
  const limit = compileRateLimit({ limit: 1, windowS: 60, burst: 2 }, 'oom')
  assert.equal((await closed.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed, true)
  assert.deepEqual([closed.errors, local.errors], [0, 0])
  // Every count writes; with no memory to write in, Redis answers each script with an OOM error.
  server.cli('CONFIG', 'SET', 'maxmemory', '1')
  t.after(() => server.cli('CONFIG', 'SET', 'maxmemory', '0'))
  assert.deepEqual(await closed.rateLimits.take(limit.stateKey, limit, Date.now()), RATE_UNAVAILABLE)
  assert.equal(await closed.throttle!.recordFailure('192.0.2.40', Date.now()), THROTTLE_UNAVAILABLE)
  assert.equal(closed.errors, 2, 'each refused command, while the connection stayed up')
  assert.equal(closed.up, true)
  const takes = []
  for (let i = 0; i < 3; i++) takes.push((await local.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed)
  assert.deepEqual(takes, [true, true, false], 'counted in this process')
  const waits = []
  for (let i = 0; i < 4; i++) waits.push(await local.throttle!.recordFailure('192.0.2.41', Date.now()))
  assert.deepEqual(waits.map((wait) => wait > 0), [false, false, false, true], 'failures counted in this process')
  assert.equal(local.errors, 7)
})

test('a store holds one connection, a second (the subscriber) only with a throttle, and close() ends them', SKIP, async (t) => {
  const server = await startRedis(t)
  const clients = () => server.cli('CLIENT', 'LIST').split('\n').filter((line) => !line.includes('cmd=client|list')).length
  const address = { host: '127.0.0.1', port: server.port, tls: false, db: 0 } as const
  const throttled = createRedisLimits({ redis: address, throttle: THROTTLE })
  t.after(() => throttled.close())
  assert.equal(await throttled.whenUp(2000), true)
  await waitFor('the subscriber to connect', () => (clients() === 2 ? true : undefined))
  const plain = createRedisLimits({ redis: address })
  t.after(() => plain.close())
  assert.equal(await plain.whenUp(2000), true)
  assert.equal(clients(), 3, 'no subscriber for a store without throttle')
  throttled.close()
  plain.close()
  await waitFor('the connections to close', () => (clients() === 0 ? true : undefined))
})
