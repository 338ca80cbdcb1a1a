/**
 * What a broken Redis-compatible server (a proxy in between, an incompatible fork, a script of the
 * same name doing something else) could answer to a counting script. keygate reads only the reply
 * it asked for, `[number, number]`: anything else is a failed command, decided as while Redis is
 * away, and counted as an error. A real redis-server cannot be made to answer these, so the server
 * here speaks RESP itself: TIME for the greeting, then the one reply under test to every script.
 */
import assert from 'node:assert/strict'
import { createServer, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { compileRateLimit, createRedisLimits, RATE_UNAVAILABLE, THROTTLE_UNAVAILABLE, type RedisFailureMode } from '../../dist/index.js'

/** A server answering the greeting's TIME truthfully and every later command with `reply`. */
async function brokenRedis(t: TestContext, reply: string): Promise<number> {
  const server = createServer((socket: Socket) => {
    let greeted = false
    socket.on('data', (bytes) => {
      // Commands are arrays of bulk strings; none of the arguments sent here starts a line with `*`.
      for (const _ of bytes.toString('latin1').matchAll(/(?:^|\r\n)\*\d+\r\n/g)) {
        if (greeted) socket.write(reply)
        else socket.write(timeReply())
        greeted = true
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  t.after(() => server.close())
  const address = server.address()
  assert.ok(address !== null && typeof address === 'object')
  return address.port
}

function timeReply(): string {
  const us = BigInt(Date.now()) * 1000n
  const [seconds, micros] = [String(us / 1_000_000n), String(us % 1_000_000n)]
  return `*2\r\n$${seconds.length}\r\n${seconds}\r\n$${micros.length}\r\n${micros}\r\n`
}

async function storeOn(t: TestContext, port: number, onFailure: RedisFailureMode) {
  const store = createRedisLimits({ redis: { host: '127.0.0.1', port, tls: false, db: 0 }, timeoutMs: 500, onFailure, throttle: { limit: 3, windowMs: 60_000, maxClients: 100 } })
  t.after(() => store.close())
  assert.equal(await store.whenUp(2000), true)
  return store
}

const limit = compileRateLimit({ limit: 1, windowS: 60, burst: 2 }, 'broken')

test('the reply keygate asks for is read: [1, 0] allows, [0, ahead] refuses (the control for the table below)', async (t) => {
  const allowing = await storeOn(t, await brokenRedis(t, '*2\r\n:1\r\n:0\r\n'), 'closed')
  assert.equal((await allowing.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed, true)
  const refusing = await storeOn(t, await brokenRedis(t, '*2\r\n:0\r\n:120000000\r\n'), 'closed')
  const decision = await refusing.rateLimits.take(limit.stateKey, limit, Date.now())
  assert.equal(decision?.allowed, false)
  assert.equal(decision?.retryAfterS, 60, 'two minutes ahead with a burst of two one-minute intervals: one to wait')
  assert.equal(await refusing.throttle!.recordFailure('192.0.2.1', Date.now()), 0, '0 failures: not blocked')
  assert.equal(refusing.errors, 0)
})

for (const [name, reply] of [
  ['a number, not an array', ':1\r\n'],
  ['an array of one', '*1\r\n:1\r\n'],
  ['a string where the first number belongs', '*2\r\n$1\r\n1\r\n:0\r\n'],
  ['a string where the second number belongs', '*2\r\n:1\r\n$1\r\n0\r\n'],
  ['nil', '$-1\r\n'],
  ['the answer of a script that ran after its deadline', '*2\r\n:-1\r\n:0\r\n'],
] as const) {
  test(`a script answered with ${name} is a failed command: closed refuses with 503, local decides here`, async (t) => {
    const port = await brokenRedis(t, reply)
    const closed = await storeOn(t, port, 'closed')
    assert.deepEqual(await closed.rateLimits.take(limit.stateKey, limit, Date.now()), RATE_UNAVAILABLE)
    assert.equal(await closed.throttle!.recordFailure('192.0.2.2', Date.now()), THROTTLE_UNAVAILABLE)
    assert.equal(closed.errors, 2)
    const local = await storeOn(t, port, 'local')
    const takes = []
    for (let i = 0; i < 3; i++) takes.push((await local.rateLimits.take(limit.stateKey, limit, Date.now()))?.allowed)
    assert.deepEqual(takes, [true, true, false], 'the burst of two, counted in memory')
    assert.equal(local.up, true, 'a wrong reply is not a lost connection')
  })
}
