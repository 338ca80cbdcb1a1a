/**
 * Two guarded apps in two processes, one Redis: a key's rate limit and a client's failed attempts
 * hold once across both, and each app calls next() only once Redis has decided.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { freePort, runNode, waitFor } from '../helpers.js'
import { REDIS, startRedis } from '../redis-server.js'

const INDEX = new URL('../../dist/index.js', import.meta.url).href
const KEY = 'shared-key-0123456789abcdef'
const FREE_KEY = 'free-key-0123456789abcdef' // no rate limit: a 429 for it is the throttle's

// The app: a rate-limited key (3 per minute, burst 3), the throttle at 2 failures, counters in Redis.
const APP = `
import { createServer } from 'node:http'
import { createGuard, createKeyStore, createRedisLimits, keyIdOf } from ${JSON.stringify(INDEX)}
const limits = createRedisLimits({ redis: { host: '127.0.0.1', port: Number(process.env.REDIS_PORT), tls: false, db: 0 },
  onFailure: 'closed', throttle: { limit: 2, windowMs: 60000, maxClients: 1000 } })
await limits.whenUp(2000)
const keys = createKeyStore([{ id: 'shared', key: ${JSON.stringify(KEY)}, rateLimit: { limit: 3, windowS: 60, burst: 3 } }, { id: 'free', key: ${JSON.stringify(FREE_KEY)} }])
const guard = createGuard({ keys, throttle: limits.throttle, rateLimits: limits.rateLimits, expose: { healthz: '/healthz' } })
createServer((req, res) => guard(req, res, () => res.end('app ' + keyIdOf(req) + ' ' + process.env.NAME)))
  .listen(Number(process.env.PORT), '127.0.0.1')
`

async function startApp(t: TestContext, dir: string, name: string, redisPort: number): Promise<string> {
  const port = await freePort()
  runNode(t, { PORT: String(port), REDIS_PORT: String(redisPort), NAME: name }, join(dir, 'app.mjs'))
  const url = `http://127.0.0.1:${port}`
  await waitFor(`app ${name}`, () => fetch(`${url}/healthz`).then((res) => (res.ok ? true : undefined), () => undefined))
  return url
}

test('two guarded apps in two processes share one rate limit and one throttle through Redis', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(join(tmpdir(), 'keygate-guard-redis-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'app.mjs'), APP)
  const apps = [await startApp(t, dir, 'a', redis.port), await startApp(t, dir, 'b', redis.port)]
  const answers = []
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${apps[i % 2]}/v1/x`, { headers: { authorization: `Bearer ${KEY}` } })
    answers.push([res.status, await res.text()])
  }
  assert.deepEqual(answers.slice(0, 3), [[200, 'app shared a'], [200, 'app shared b'], [200, 'app shared a']])
  assert.deepEqual(answers.slice(3).map(([status]) => status), [429, 429], 'the burst of 3 counted once across both')
  const free = await fetch(`${apps[1]}/v1/x`, { headers: { authorization: `Bearer ${FREE_KEY}` } })
  assert.equal(await free.text(), 'app free b', 'a key without a limit, before any failed attempt')
  // Failed attempts too: two in app a, then app b refuses the client (the block came from Redis).
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${apps[0]}/v1/x`, { headers: { authorization: 'Bearer wrong-key-0123456789abcdef' } })).status, 401)
  await waitFor('the block to reach app b', async () => ((await fetch(`${apps[1]}/v1/x`, { headers: { authorization: `Bearer ${FREE_KEY}` } })).status === 429 ? true : undefined))
  assert.ok(redis.cli('KEYS', 'keygate:*').includes('keygate:fail:127.0.0.1'))
})
