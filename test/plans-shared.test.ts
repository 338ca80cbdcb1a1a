/**
 * Quotas held once per server and once per fleet: `dist/server.js` with WORKERS=2 (the primary
 * counts), two keygate processes on one real redis-server (one script per decision, the count
 * outliving a restart), and Redis away in each LIMITS_ON_REDIS_FAILURE mode.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fresh, logLines, startServerProcess, waitFor } from './helpers.js'
import { REDIS, startRedis } from './redis-server.js'

const SKIP = { skip: REDIS === true ? false : REDIS }
const QUOTA_KEY = 'quota-key-0123456789abcdef' // 5 a day
const OPEN_KEY = 'quota-open-key-0123456789abcdef' // no quota, no limit
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

function keysFile(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-quota-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify({ keys: [
    { id: 'q', sha256: sha256(QUOTA_KEY), quota: { limit: 5, period: 'day' } },
    { id: 'open', sha256: sha256(OPEN_KEY) },
  ] }))
  return file
}

async function answers(urls: string[], key: string, count: number) {
  const out = []
  for (let i = 0; i < count; i++) out.push(await fresh(urls[i % urls.length] as string, key))
  return out
}

const remainingOf = (answer: { headers: Record<string, unknown> }) => /"quota";r=(\d+)/.exec(String(answer.headers.ratelimit))?.[1]

test('WORKERS=2: exactly the quota over fresh connections, counted down once for the whole server', async (t) => {
  const { url } = await startServerProcess(t, { WORKERS: '2', API_KEYS_FILE: keysFile(t) })
  const all = await answers([url], QUOTA_KEY, 9)
  assert.deepEqual(all.map((answer) => answer.status), [200, 200, 200, 200, 200, 429, 429, 429, 429])
  assert.deepEqual(all.slice(0, 5).map(remainingOf), ['4', '3', '2', '1', '0'])
  assert.equal(all[5]?.body, '{"error":"Too Many Requests"}')
})

async function twoOnRedis(t: TestContext, env: Record<string, string> = {}) {
  const redis = await startRedis(t)
  const common = { REDIS_URL: `redis://127.0.0.1:${redis.port}`, API_KEYS_FILE: keysFile(t), ...env }
  const a = await startServerProcess(t, common)
  const b = await startServerProcess(t, common)
  return { redis, common, a, b, urls: [a.url, b.url] }
}

test('two keygate processes on one Redis: one quota between them, kept past a restart, in a counter that expires after its day', SKIP, async (t) => {
  const { redis, common, a, b, urls } = await twoOnRedis(t)
  const all = await answers(urls, QUOTA_KEY, 7)
  assert.deepEqual(all.map((answer) => answer.status), [200, 200, 200, 200, 200, 429, 429])
  assert.deepEqual(all.slice(0, 5).map(remainingOf), ['4', '3', '2', '1', '0'])
  const day = new Date().toISOString().slice(0, 10)
  const keys = redis.cli('--scan').split('\n')
  assert.deepEqual(keys, [`keygate:quota:q day ${day}T00:00:00.000Z`])
  assert.equal(redis.cli('GET', keys[0] as string), '5', 'refused requests are not counted')
  const endMs = Date.parse(`${day}T00:00:00Z`) + 86_400_000
  const ttl = Number(redis.cli('PTTL', keys[0] as string))
  assert.ok(ttl > endMs - Date.now() && ttl <= endMs + 60_000 - Date.now() + 1000, `expires a minute after the day ends (PTTL ${ttl})`)
  for (const secret of [QUOTA_KEY, sha256(QUOTA_KEY)]) assert.ok(!keys[0]?.includes(secret))

  a.child.process.kill('SIGTERM')
  await a.child.exited
  const restarted = await startServerProcess(t, common)
  assert.equal((await fresh(restarted.url, QUOTA_KEY)).status, 429, 'the count outlives a restart')
  assert.equal((await fresh(b.url, OPEN_KEY)).status, 200)
})

test('a key without a quota makes no Redis round trip; one with a quota makes one script call a request', SKIP, async (t) => {
  const { redis, urls } = await twoOnRedis(t)
  const commands = () => Number(/total_commands_processed:(\d+)/.exec(redis.cli('INFO', 'stats'))?.[1])
  const before = commands()
  await answers(urls, OPEN_KEY, 20)
  assert.equal(commands() - before, 1, 'only the INFO that read the count')
  const calls = () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(redis.cli('INFO', 'commandstats'))?.[1] ?? 0)
  const scripts = calls()
  await answers(urls, QUOTA_KEY, 3)
  assert.ok(calls() - scripts <= 3, 'at most one script a request (a first EVAL loads it)')
})

for (const [mode, expected] of [['closed', 503], ['open', 200], ['local', 200]] as const) {
  test(`LIMITS_ON_REDIS_FAILURE=${mode}: with Redis away a key with a quota gets ${expected}, as every key does in that mode`, SKIP, async (t) => {
    const { redis, a } = await twoOnRedis(t, { LIMITS_ON_REDIS_FAILURE: mode, REDIS_TIMEOUT_MS: '150' })
    await waitFor('Redis to be reachable', () => (logLines(a.child).some((line) => line.msg === 'limits store reachable') ? true : undefined))
    await redis.kill()
    await waitFor('Redis to be seen away', () => (logLines(a.child).some((line) => line.msg === 'limits store unreachable') ? true : undefined))
    const answer = await fresh(a.url, QUOTA_KEY)
    assert.equal(answer.status, expected)
    assert.equal(answer.headers.ratelimit === undefined, mode !== 'local', 'a decision (local) carries the quota; none (open) carries nothing')
    assert.equal((await fresh(a.url, OPEN_KEY)).status, expected, 'the same answer as a key without a quota: closed refuses every keyed request')
    if (mode === 'local') assert.deepEqual((await answers([a.url], QUOTA_KEY, 5)).map((next) => next.status), [200, 200, 200, 200, 429], 'counted in this process meanwhile')
  })
}
