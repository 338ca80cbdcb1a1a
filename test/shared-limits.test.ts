/**
 * Shared limits end to end: `dist/server.js` with WORKERS=2 (the primary holds the counters) and
 * two keygate processes on one real redis-server, over fresh connections; Redis killed, restarted
 * and frozen mid-traffic.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fresh, logLines, runNode, startServerProcess, waitFor } from './helpers.js'
import { REDIS, startRedis } from './redis-server.js'

const SKIP = { skip: REDIS === true ? false : REDIS }
const OPEN_KEY = 'shared-open-key-0123456789abcdef' // no rate limit
const LIMITED_KEY = 'shared-limited-key-0123456789abc' // 1 per minute, burst 3
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

function keysFile(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-shared-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify({ keys: [
    { id: 'open', sha256: sha256(OPEN_KEY) },
    { id: 'limited', sha256: sha256(LIMITED_KEY), rateLimit: { limit: 1, windowS: 60, burst: 3 } },
  ] }))
  return file
}

async function statuses(urls: string[], key: string, count: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < count; i++) out.push((await fresh(urls[i % urls.length] as string, key)).status)
  return out
}

const repeat = (status: number, n: number) => Array<number>(n).fill(status)

test('WORKERS=2: exactly AUTH_FAIL_LIMIT 401s then 429 over fresh connections, the block holds in every worker, a key gets its burst once', async (t) => {
  const { child, url } = await startServerProcess(t, { WORKERS: '2', AUTH_FAIL_LIMIT: '5', API_KEYS_FILE: keysFile(t) })
  assert.deepEqual(await statuses([url], LIMITED_KEY, 5), [200, 200, 200, 429, 429], 'burst 3 for the whole server')
  assert.deepEqual(await statuses([url], 'wrong-key', 12), [...repeat(401, 5), ...repeat(429, 7)])
  assert.deepEqual(await statuses([url], OPEN_KEY, 6), repeat(429, 6), 'a blocked client is refused by both workers, even with a good key')
  await waitFor('the access lines', () => (logLines(child).filter((line) => line.msg === 'request').length >= 23 ? true : undefined))
  const workers = new Set(logLines(child).filter((line) => line.msg === 'request').map((line) => line.worker))
  assert.deepEqual([...workers].sort(), [1, 2], 'both workers answered')
})

test('WORKERS=2: a worker killed and restarted loses no counter (the primary holds them)', async (t) => {
  const { child, url } = await startServerProcess(t, { WORKERS: '2', AUTH_FAIL_LIMIT: '4', API_KEYS_FILE: keysFile(t) })
  assert.deepEqual(await statuses([url], LIMITED_KEY, 2), [200, 200])
  assert.deepEqual(await statuses([url], 'wrong-key', 2), [401, 401])
  for (const line of logLines(child).filter((entry) => entry.msg === 'worker started')) process.kill(Number(line.workerPid), 'SIGKILL')
  await waitFor('both workers to be restarted', () => (logLines(child).filter((line) => line.msg === 'worker ready').length >= 2 ? true : undefined))
  assert.deepEqual(await statuses([url], LIMITED_KEY, 3), [200, 429, 429], 'one left of the burst')
  assert.deepEqual(await statuses([url], 'wrong-key', 4), [401, 401, 429, 429], 'two failures left')
})

async function twoOnRedis(t: TestContext, env: Record<string, string> = {}) {
  const redis = await startRedis(t)
  const file = keysFile(t)
  const common = { REDIS_URL: `redis://127.0.0.1:${redis.port}`, AUTH_FAIL_LIMIT: '4', API_KEYS_FILE: file, ...env }
  const a = await startServerProcess(t, common)
  const b = await startServerProcess(t, common)
  return { redis, a, b, urls: [a.url, b.url] }
}

test('two keygate processes on one Redis: one throttle and one rate limit between them', SKIP, async (t) => {
  const { redis, urls } = await twoOnRedis(t)
  assert.deepEqual(await statuses(urls, LIMITED_KEY, 5), [200, 200, 200, 429, 429])
  const limited = await fresh(urls[1] as string, LIMITED_KEY)
  assert.equal(limited.headers['ratelimit-policy'], '"key";q=1;w=60')
  assert.match(String(limited.headers['retry-after']), /^(59|60)$/)
  assert.deepEqual(await statuses(urls, 'wrong-key', 7), [...repeat(401, 4), ...repeat(429, 3)])
  assert.deepEqual(await statuses(urls, OPEN_KEY, 2), [429, 429], 'the block reached the other process')
  // Only counters, under the prefix, with a TTL; no key, digest or credential in a name or a value.
  const keys = redis.cli('--scan').split('\n').sort()
  assert.deepEqual(keys, ['keygate:fail:127.0.0.1', 'keygate:rate:limited 1/60/3'])
  for (const key of keys) {
    assert.ok(Number(redis.cli('PTTL', key)) > 0, `${key} has a TTL`)
    const value = redis.cli('GET', key)
    assert.match(value, /^\d+$/, 'a number')
    for (const secret of [LIMITED_KEY, OPEN_KEY, sha256(LIMITED_KEY), 'wrong-key']) assert.ok(!key.includes(secret) && !value.includes(secret))
  }
})

test('a key without a rate limit, from a client that is not throttled, makes no Redis round trip', SKIP, async (t) => {
  const { redis, urls } = await twoOnRedis(t)
  const commands = () => Number(/total_commands_processed:(\d+)/.exec(redis.cli('INFO', 'stats'))?.[1])
  const before = commands()
  assert.deepEqual(await statuses(urls, OPEN_KEY, 50), repeat(200, 50))
  assert.equal(commands() - before, 1, 'only the INFO that read the count')
  const again = commands()
  await statuses(urls, LIMITED_KEY, 3)
  assert.ok(commands() - again >= 4, 'a rate-limited key is counted in Redis (the measure sees commands)')
})

test('LIMITS_ON_REDIS_FAILURE=local: Redis killed and restarted mid-traffic; one line each way, metrics follow', SKIP, async (t) => {
  const { redis, a, urls } = await twoOnRedis(t)
  const metric = async (name: string, url = a.url) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec((await fresh(url, OPEN_KEY, '/metrics')).body)?.[1])
  assert.equal(await metric('keygate_limits_store_up'), 1)
  await redis.kill()
  const away = await statuses(urls, LIMITED_KEY, 8)
  assert.deepEqual(away, [200, 200, 200, 200, 200, 200, 429, 429], 'each process counts in its own memory: burst 3 in each')
  assert.deepEqual(await statuses([a.url], OPEN_KEY, 20), repeat(200, 20), 'no request lost')
  assert.equal(await metric('keygate_limits_store_up'), 0)
  assert.ok((await metric('keygate_limits_store_errors_total')) >= 1)
  await redis.restart()
  // Both processes: one still counting in memory would answer from its own (exhausted) burst.
  for (const url of urls) await waitFor('the process to be back on Redis', async () => ((await metric('keygate_limits_store_up', url)) === 1 ? true : undefined))
  const storeLines = () => logLines(a.child).filter((line) => String(line.msg).startsWith('limits store'))
  const lines = await waitFor('the back line (logs are buffered)', () => (storeLines().length >= 3 ? storeLines() : undefined))
  assert.deepEqual(lines.map((line) => line.msg), ['limits store reachable', 'limits store unreachable', 'limits store reachable'])
  assert.deepEqual(await statuses(urls, LIMITED_KEY, 4), [200, 200, 200, 429], 'Redis counts again (it lost its data)')
})

test('LIMITS_ON_REDIS_FAILURE=closed: 503 with Retry-After: 1 while Redis is away, for every request that needs a key', SKIP, async (t) => {
  const { redis, a } = await twoOnRedis(t, { LIMITS_ON_REDIS_FAILURE: 'closed' })
  assert.equal((await fresh(a.url, OPEN_KEY)).status, 200)
  await redis.kill()
  for (const key of [OPEN_KEY, LIMITED_KEY, 'wrong-key']) {
    const answer = await fresh(a.url, key)
    assert.deepEqual([answer.status, answer.headers['retry-after'], answer.body], [503, '1', '{"error":"Service Unavailable"}'], key)
  }
  assert.equal((await fresh(a.url, undefined, '/healthz')).status, 200, 'what needs no key is served')
  // The scrape that shows the outage is served during it: a key, and no limits store.
  const scrape = await fresh(a.url, OPEN_KEY, '/metrics')
  assert.equal(scrape.status, 200)
  assert.match(scrape.body, /^keygate_limits_store_up 0$/m)
  assert.equal((await fresh(a.url, 'wrong-key', '/metrics')).status, 401, 'a wrong key on /metrics is still refused')
  const readiness = await fresh(a.url, undefined, '/readyz')
  assert.deepEqual([readiness.status, JSON.parse(readiness.body)], [503, { status: 'not ready', reasons: ['limits store unreachable (LIMITS_ON_REDIS_FAILURE=closed)'] }])
  const refused = await waitFor('the access lines', () => {
    const lines = logLines(a.child).filter((line) => line.status === 503)
    return lines.length >= 3 ? lines : undefined
  })
  assert.deepEqual(refused.map((line) => line.reason), repeat(0, 3).map(() => 'limits_unavailable'))
  await redis.restart()
  await waitFor('Redis to be back', async () => ((await fresh(a.url, OPEN_KEY)).status === 200 ? true : undefined))
  assert.equal((await fresh(a.url, undefined, '/readyz')).status, 200, 'ready again')
})

test('LIMITS_ON_REDIS_FAILURE=open: nothing is enforced while Redis is away', SKIP, async (t) => {
  const { redis, a } = await twoOnRedis(t, { LIMITS_ON_REDIS_FAILURE: 'open' })
  await redis.kill()
  assert.deepEqual(await statuses([a.url], LIMITED_KEY, 6), repeat(200, 6))
  assert.deepEqual(await statuses([a.url], 'wrong-key', 6), repeat(401, 6))
})

test('a frozen Redis (SIGSTOP) delays requests by at most REDIS_TIMEOUT_MS, then none at all', SKIP, async (t) => {
  const { redis, a } = await twoOnRedis(t, { REDIS_TIMEOUT_MS: '200' })
  assert.equal((await fresh(a.url, LIMITED_KEY)).status, 200)
  redis.freeze()
  const timed = async () => {
    const started = performance.now()
    const { status } = await fresh(a.url, LIMITED_KEY)
    return { status, ms: performance.now() - started }
  }
  const first = await timed()
  assert.equal(first.status, 200, 'decided in memory once Redis missed its deadline')
  assert.ok(first.ms < 1_500, `the first request waited ${first.ms.toFixed(0)} ms (deadline 200 ms)`)
  const next = [await timed(), await timed(), await timed()]
  assert.deepEqual(next.map((answer) => answer.status), [200, 200, 429], 'counted in this process\'s memory from then on: a burst of 3 there')
  assert.ok(next.every((answer) => answer.ms < first.ms + 100), 'no request waits for the frozen Redis again')
  redis.thaw()
  await waitFor('the back line', () => (logLines(a.child).filter((line) => line.msg === 'limits store reachable').length === 2 ? true : undefined))
  assert.ok(logLines(a.child).some((line) => line.msg === 'limits store unreachable' && /no answer within 200 ms/.test(String(line.reason))))
})

for (const mode of ['closed', 'local'] as const) {
  test(`LIMITS_ON_REDIS_FAILURE=${mode}: a decision keygate gave up on while Redis was frozen never counts once Redis resumes`, SKIP, async (t) => {
    const redis = await startRedis(t)
    const { child, url } = await startServerProcess(t, { REDIS_URL: `redis://127.0.0.1:${redis.port}`, API_KEYS_FILE: keysFile(t), LIMITS_ON_REDIS_FAILURE: mode, REDIS_TIMEOUT_MS: '150' })
    const reachable = () => logLines(child).filter((line) => line.msg === 'limits store reachable').length
    await waitFor('Redis to be reachable', () => (reachable() === 1 ? true : undefined))
    // One request first, so that Redis knows the script: a frozen EVALSHA of an unknown script would count nothing anyway.
    assert.equal((await fresh(url, LIMITED_KEY)).status, 200)
    redis.freeze()
    // The first waits for its deadline (its script is in Redis's socket by then); the next are decided without Redis.
    const whileFrozen = [(await fresh(url, LIMITED_KEY)).status]
    assert.deepEqual(whileFrozen, [mode === 'closed' ? 503 : 200])
    redis.thaw()
    await waitFor('Redis to be reachable again', () => (reachable() === 2 ? true : undefined))
    // Burst 3, one used: the request Redis ran after keygate gave up on it must not have taken another.
    const after = [await fresh(url, LIMITED_KEY), await fresh(url, LIMITED_KEY), await fresh(url, LIMITED_KEY)]
    assert.deepEqual(after.map((answer) => answer.status), [200, 200, 429])
  })
}

test('keygate starts with Redis down (a warning) and uses it once it is up; a bad REDIS_URL is exit 1 without the password', SKIP, async (t) => {
  const redis = await startRedis(t)
  await redis.kill()
  const { child, url } = await startServerProcess(t, { REDIS_URL: `redis://:hunter2-pass@127.0.0.1:${redis.port}`, API_KEYS_FILE: keysFile(t) })
  assert.equal((await fresh(url, LIMITED_KEY)).status, 200)
  assert.ok(logLines(child).some((line) => line.msg === 'limits store unreachable' && line.level === 'warn'))
  assert.ok(!child.stdout().includes('hunter2'), 'the password is in no log line')
  const bad = runNode(t, { REDIS_URL: 'redis://user@127.0.0.1/zz', API_KEY: OPEN_KEY })
  assert.equal(await bad.exited, 1)
  assert.equal(bad.stderr().trim().split('\n').length, 1)
  assert.match(bad.stderr(), /^keygate: REDIS_URL /)
})

test('a SIGHUP while startup waits for a frozen Redis is handled once keygate is up, not fatal', SKIP, async (t) => {
  const redis = await startRedis(t)
  redis.freeze()
  const child = runNode(t, { PORT: '0', REDIS_URL: `redis://127.0.0.1:${redis.port}`, REDIS_TIMEOUT_MS: '2000', API_KEY: OPEN_KEY })
  await waitFor('the settings line', () => (logLines(child).some((line) => line.msg === 'settings') ? true : undefined))
  child.process.kill('SIGHUP')
  const url = await waitFor('the listening line', () => {
    if (child.process.exitCode !== null || child.process.signalCode !== null) throw new Error(`keygate died: ${String(child.process.signalCode)}`)
    return logLines(child).find((line) => line.msg === 'listening')?.url as string | undefined
  })
  assert.equal((await fresh(url, OPEN_KEY)).status, 200)
  await waitFor('the SIGHUP to be handled', () => (logLines(child).some((line) => String(line.msg).startsWith('SIGHUP')) ? true : undefined))
})
