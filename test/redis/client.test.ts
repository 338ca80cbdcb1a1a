/** The Redis client against a real redis-server: auth, databases, pipelining, scripts, deadlines, reconnects. */
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createRedisClient, defineScript, RedisUnavailableError, type RedisClient, type RedisClientOptions } from '../../dist/redis/client.js'
import { RedisReplyError } from '../../dist/redis/resp.js'
import { parseRedisUrl } from '../../dist/redis/url.js'
import { waitFor } from '../helpers.js'
import { REDIS, startRedis } from '../redis-server.js'

const PASSWORD = 'redis-test-password-7f3a'

function client(t: TestContext, options: Partial<RedisClientOptions> & { port: number }): RedisClient & { changes: Array<[boolean, string]> } {
  const changes: Array<[boolean, string]> = []
  const redis = createRedisClient({ host: '127.0.0.1', db: 0, tls: false, timeoutMs: 300, backoffMs: { first: 20, max: 200 }, onStateChange: (up, reason) => changes.push([up, reason]), ...options })
  t.after(() => redis.close())
  return Object.assign(redis, { changes })
}

test('REDIS_URL forms: user, password, database, TLS; bad ones say why without the password', () => {
  assert.deepEqual(parseRedisUrl('redis://127.0.0.1'), { host: '127.0.0.1', port: 6379, tls: false, user: undefined, password: undefined, db: 0 })
  assert.deepEqual(parseRedisUrl('rediss://app:p%40ss@cache.internal:6380/3'), { host: 'cache.internal', port: 6380, tls: true, user: 'app', password: 'p@ss', db: 3 })
  assert.deepEqual(parseRedisUrl('redis://:secret@[::1]:7000'), { host: '::1', port: 7000, tls: false, user: undefined, password: 'secret', db: 0 })
  for (const bad of ['http://h', 'redis://', 'redis://h/x', 'redis://h/1/2', 'redis://u@h', 'redis://h?x=1', 'not a url', 'redis://:%zzsecret@h']) {
    const problem = parseRedisUrl(bad)
    assert.equal(typeof problem, 'string', bad)
    assert.doesNotMatch(problem as string, /secret/)
  }
})

test('password and ACL user: AUTH on connect; a wrong password is refused, and the reason holds no secret', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const server = await startRedis(t, { password: PASSWORD, user: { name: 'keygate', password: 'acl-pass-91c2' } })
  const byPassword = client(t, { port: server.port, password: PASSWORD })
  assert.equal(await byPassword.whenUp(2000), true)
  assert.equal(await byPassword.send(['PING']), 'PONG')
  const byUser = client(t, { port: server.port, user: 'keygate', password: 'acl-pass-91c2' })
  assert.equal(await byUser.whenUp(2000), true)
  assert.equal(await byUser.send(['ACL', 'WHOAMI']), 'keygate')
  const wrong = client(t, { port: server.port, password: 'wrong-secret-0000' })
  assert.equal(await wrong.whenUp(500), false)
  const reason = wrong.changes[0]?.[1] ?? ''
  assert.match(reason, /WRONGPASS/)
  assert.doesNotMatch(reason, /wrong-secret|redis-test-password/)
  const none = client(t, { port: server.port })
  await assert.rejects(none.send(['PING']), RedisUnavailableError, 'not up: rejected at once, nothing queued')
})

test('SELECT on connect, and pipelined commands answered in order', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const server = await startRedis(t)
  const redis = client(t, { port: server.port, db: 5 })
  assert.equal(await redis.whenUp(2000), true)
  const replies = await Promise.all(Array.from({ length: 500 }, (_, i) => redis.send(['INCR', 'counter']).then((n) => [i, n])))
  assert.deepEqual(replies, Array.from({ length: 500 }, (_, i) => [i, i + 1]))
  assert.equal(server.cli('-n', '5', 'GET', 'counter'), '500')
  assert.equal(server.cli('-n', '0', 'EXISTS', 'counter'), '0')
  await assert.rejects(redis.send(['NOSUCHCOMMAND']), RedisReplyError)
  assert.equal(await redis.send(['GET', 'counter']), '500', 'an error reply does not shift the replies after it')
})

test('a script runs by EVALSHA, and by EVAL once the server has forgotten it (restart, SCRIPT FLUSH)', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const server = await startRedis(t)
  const redis = client(t, { port: server.port })
  await redis.whenUp(2000)
  const script = defineScript("return redis.call('INCR', KEYS[1])")
  assert.equal(await redis.runScript(script, 'n', []), 1)
  assert.equal(server.cli('SCRIPT', 'EXISTS', script.sha1), '1')
  server.cli('SCRIPT', 'FLUSH')
  assert.equal(await redis.runScript(script, 'n', []), 2, 'NOSCRIPT: sent again as EVAL, counted once')
  await server.kill()
  await server.restart()
  await waitFor('the client to reconnect', async () => (redis.up ? true : undefined))
  assert.equal(await redis.runScript(script, 'n', []), 1, 'after a restart (no data, no scripts)')
})

test('a frozen Redis (SIGSTOP): commands fail at the deadline, and a command in flight is never resent', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const server = await startRedis(t)
  const redis = client(t, { port: server.port, timeoutMs: 200 })
  await redis.whenUp(2000)
  server.freeze()
  const started = Date.now()
  await assert.rejects(redis.send(['INCR', 'once']), /no answer within 200 ms/)
  const tookMs = Date.now() - started
  assert.ok(tookMs >= 190 && tookMs < 1000, `rejected after ${tookMs} ms`)
  assert.equal(redis.up, false)
  await assert.rejects(redis.send(['PING']), RedisUnavailableError, 'while down, commands fail at once')
  server.thaw()
  await waitFor('the client to reconnect', async () => (redis.up ? true : undefined))
  const value = await redis.send(['GET', 'once'])
  assert.ok(value === null || value === '1', `the INCR in flight ran at most once (got ${String(value)})`)
  assert.deepEqual(redis.changes.map(([up]) => up), [true, false, true], 'one line down, one line back')
})

test('Redis killed and started again: the client reconnects by itself', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const server = await startRedis(t)
  const redis = client(t, { port: server.port })
  await redis.whenUp(2000)
  await server.kill()
  await waitFor('the client to notice', async () => (redis.up ? undefined : true))
  await server.restart()
  await waitFor('the client to reconnect', async () => (redis.up ? true : undefined))
  assert.equal(await redis.send(['PING']), 'PONG')
  assert.ok(redis.connectionFailures >= 1)
})

test('rediss://: TLS to Redis\'s own TLS port, trusting a throwaway CA', { skip: REDIS === true ? false : REDIS }, async (t) => {
  const certFile = fileURLToPath(new URL('../../test/fixtures/test-only-a.cert.pem', import.meta.url))
  const keyFile = fileURLToPath(new URL('../../test/fixtures/test-only-a.key.pem', import.meta.url))
  const server = await startRedis(t, { tls: { certFile, keyFile } })
  const { readFileSync } = await import('node:fs')
  const redis = client(t, { port: server.port, tls: true, ca: readFileSync(certFile, 'utf8') })
  assert.equal(await redis.whenUp(2000), true)
  assert.equal(await redis.send(['ECHO', 'over tls']), 'over tls')
  const untrusted = client(t, { port: server.port, tls: true })
  assert.equal(await untrusted.whenUp(500), false, 'a certificate nobody vouches for is refused')
})
