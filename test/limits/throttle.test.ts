import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { test } from 'node:test'
import { clientAddressOf } from '../../dist/http/client.js'
import { createThrottle, THROTTLE_UNAVAILABLE, throttleKeyOf } from '../../dist/limits/throttle.js'
import { createKeyStore } from '../../dist/index.js'
import { startKeygate } from '../helpers.js'

const T0 = 1_000_000

test('blocks a client at the limit until its window ends', () => {
  const throttle = createThrottle({ limit: 3, windowMs: 10_000, maxClients: 10 })
  for (let i = 0; i < 2; i++) throttle.recordFailure('1.2.3.4', T0 + i)
  assert.equal(throttle.retryAfterS('1.2.3.4', T0 + 2), 0, 'two failures: not yet')
  throttle.recordFailure('1.2.3.4', T0 + 2)
  assert.equal(throttle.retryAfterS('1.2.3.4', T0 + 3), 10)
  assert.equal(throttle.retryAfterS('1.2.3.4', T0 + 9_001), 1, 'rounded up, at least 1')
  assert.equal(throttle.retryAfterS('1.2.3.4', T0 + 9_999), 1)
  assert.equal(throttle.retryAfterS('1.2.3.4', T0 + 10_000), 0, 'free when the window ends')
  assert.equal(throttle.retryAfterS('5.6.7.8', T0), 0, 'other clients are not affected')
})

test('a new window starts after the old one ends', () => {
  const throttle = createThrottle({ limit: 2, windowMs: 1000, maxClients: 10 })
  throttle.recordFailure('c', T0)
  throttle.recordFailure('c', T0 + 1500) // the first failure's window is over
  assert.equal(throttle.retryAfterS('c', T0 + 1501), 0)
  throttle.recordFailure('c', T0 + 1600)
  assert.equal(throttle.retryAfterS('c', T0 + 1601), 1)
})

test('a block ends at the window\'s last millisecond: the next one is free', () => {
  const throttle = createThrottle({ limit: 1, windowMs: 1000, maxClients: 10 })
  throttle.recordFailure('c', T0)
  assert.equal(throttle.retryAfterS('c', T0 + 999), 1)
  assert.equal(throttle.retryAfterS('c', T0 + 1000), 0)
  assert.equal(throttle.size, 0, 'and its window is forgotten')
})

test('tracks at most maxClients, dropping the stalest first', () => {
  const throttle = createThrottle({ limit: 2, windowMs: 60_000, maxClients: 3 })
  for (const client of ['a', 'b', 'c']) {
    throttle.recordFailure(client, T0)
    throttle.recordFailure(client, T0)
  }
  throttle.recordFailure('a', T0 + 1) // a is now the freshest
  throttle.recordFailure('d', T0 + 2) // evicts b, the stalest
  assert.equal(throttle.size, 3)
  assert.equal(throttle.retryAfterS('b', T0 + 3), 0)
  assert.ok(throttle.retryAfterS('a', T0 + 3) > 0)
  assert.ok(throttle.retryAfterS('c', T0 + 3) > 0)
  for (let i = 0; i < 10_000; i++) throttle.recordFailure(`x${i}`, T0 + 4)
  assert.equal(throttle.size, 3)
})

test('createThrottle names a bad option', () => {
  assert.throws(() => createThrottle({ limit: 0, windowMs: 1000, maxClients: 1 }), { name: 'TypeError', message: /limit must be a positive integer/ })
  assert.throws(() => createThrottle({ limit: 1, windowMs: 0.5, maxClients: 1 }), /windowMs/)
  assert.throws(() => createThrottle({ limit: 1, windowMs: 1000, maxClients: -1 }), /maxClients/)
})

for (const [address, key] of [
  ['203.0.113.9', '203.0.113.9'],
  ['::ffff:203.0.113.9', '203.0.113.9'],
  ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
  ['2001:db8:1:2:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
  ['2001:0db8:0001:0002::1', '2001:db8:1:2::/64'],
  ['2001:DB8:1:2::9', '2001:db8:1:2::/64'],
  ['2001:db8::1', '2001:db8:0:0::/64'],
  ['2001:db8:1:2::', '2001:db8:1:2::/64'], // nothing after ::
  ['::1', '0:0:0:0::/64'],
  ['fe80::1%eth0', 'fe80:0:0:0::/64'],
  ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
  ['::ffff:c000:201', '0:0:0:0::/64'], // IPv4-mapped in hex: an IPv6 spelling, counted by its /64
  ['::1:2:3:4:5:6', '0:0:1:2::/64'],
  ['1:2:3:4:5:6:7:8', '1:2:3:4::/64'],
  // Not IPv6 addresses: counted as they are.
  ['1::2::3', '1::2::3'],
  ['1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8:9'],
  ['1:2:3:4::5:6:7:8:9', '1:2:3:4::5:6:7:8:9'],
  ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4::/64'], // an embedded IPv4 is two groups
  ['1:2:3', '1:2:3'],
  ['2001:zzzz::1', '2001:zzzz::1'],
  ['2001:12345::1', '2001:12345::1'],
] as const) {
  test(`throttleKeyOf counts ${address} as ${key}`, () => {
    assert.equal(throttleKeyOf(address), key)
  })
}

const request = (remoteAddress: string, forwarded?: string) =>
  ({ socket: { remoteAddress }, headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded } }) as unknown as IncomingMessage

for (const [name, trustProxy, forwarded, expected] of [
  ['the peer with TRUST_PROXY=0, whatever the header says', 0, '198.51.100.7', '10.0.0.1'],
  ['the last entry with one trusted hop', 1, '198.51.100.7', '198.51.100.7'],
  ['the last entry, not a forged first one', 1, '6.6.6.6, 198.51.100.7', '198.51.100.7'],
  ['the second from the right with two hops', 2, '6.6.6.6, 198.51.100.7, 10.0.0.2', '198.51.100.7'],
  ['the peer when there are fewer entries than hops', 3, '198.51.100.7, 10.0.0.2', '10.0.0.1'],
  ['the peer when the entry is not an address', 1, 'unknown', '10.0.0.1'],
  ['the peer for an address with a port', 1, '198.51.100.7:443', '10.0.0.1'],
  ['the peer without the header', 1, undefined, '10.0.0.1'],
  ['an IPv6 entry', 1, ' 2001:db8::7 ', '2001:db8::7'],
  ['an IPv6 entry in canonical form', 1, '2001:0DB8:0:0:0:0:0:7', '2001:db8::7'],
  ['an IPv4-mapped entry as IPv4', 1, '::ffff:198.51.100.7', '198.51.100.7'],
  ['an upper-case IPv4-mapped entry as IPv4', 1, '::FFFF:198.51.100.7', '198.51.100.7'],
  ['a long-form IPv4-mapped entry as IPv4', 1, '0:0:0:0:0:ffff:198.51.100.7', '198.51.100.7'],
  ['a hex IPv4-mapped entry as IPv4', 1, '::ffff:c633:6407', '198.51.100.7'],
  ['an entry without its zone id', 1, `::ffff:198.51.100.7%${'z'.repeat(12_000)}`, '198.51.100.7'],
  ['the peer for an over-long entry', 1, `${'0:'.repeat(40)}1`, '10.0.0.1'],
] as const) {
  test(`clientAddressOf gives ${name}`, () => {
    assert.equal(clientAddressOf(request('10.0.0.1', forwarded), trustProxy), expected)
  })
}

test('clientAddressOf normalises an IPv4-mapped peer, as node:http reports it on a dual-stack socket', () => {
  assert.equal(clientAddressOf(request('::ffff:127.0.0.1'), 0), '127.0.0.1')
})

// A full collection before each reading, so that garbage does not count as kept.
setFlagsFromString('--expose-gc')
const collectGarbage = runInNewContext('gc') as () => void

test('tracked clients do not keep their X-Forwarded-For header alive', () => {
  // Each address comes from a 12 KB header: a slice of it would keep all 12 KB per client.
  const throttle = createThrottle({ limit: 5, windowMs: 60_000, maxClients: 5_000 })
  const padding = `${'203.0.113.1, '.repeat(1000)}`
  collectGarbage()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < 5_000; i++) {
    const address = clientAddressOf(request('10.0.0.1', `${padding}198.151.${100 + Math.floor(i / 100)}.${100 + (i % 100)}`), 1)
    throttle.recordFailure(throttleKeyOf(address), 0)
  }
  collectGarbage()
  const grownMb = (process.memoryUsage().heapUsed - before) / 1e6
  assert.equal(throttle.size, 5_000)
  // Slices would hold 5,000 x 12 KB = 60 MB; own strings about 1 MB.
  assert.ok(grownMb < 20, `heap grew by ${grownMb.toFixed(1)} MB for 5,000 tracked clients`)
})

test('recordFailure answers 0 while counting, and the wait once the client is blocked (without counting on)', () => {
  const throttle = createThrottle({ limit: 2, windowMs: 10_000, maxClients: 10 })
  assert.equal(throttle.recordFailure('a', T0), 0)
  assert.equal(throttle.recordFailure('a', T0), 0, 'the limit-th failure is still answered 401')
  assert.equal(throttle.blockedForMs('a', T0 + 1_000), 9_000)
  assert.equal(throttle.recordFailure('a', T0 + 1_000), 9, 'already blocked: 429 with the wait')
  assert.equal(throttle.blockedForMs('a', T0 + 1_000), 9_000, 'a blocked attempt does not extend the window')
  assert.equal(throttle.recordFailure('a', T0 + 10_000), 0, 'a new window')
})

test('a block that has run out answers 0 and is forgotten', () => {
  const throttle = createThrottle({ limit: 1, windowMs: 1000, maxClients: 10 })
  throttle.recordFailure('c', T0)
  assert.equal(throttle.retryAfterS('c', T0 + 999), 1)
  assert.equal(throttle.retryAfterS('c', T0 + 1001), 0)
  assert.equal(throttle.size, 0)
})

test('createThrottle: options must be an object; an undefined option takes its default', () => {
  for (const bad of [null, 'x']) {
    assert.throws(() => createThrottle(bad as never), (error: unknown) => error instanceof TypeError && error.message === 'createThrottle: options must be an object')
  }
  const throttle = createThrottle({ limit: undefined, windowMs: 1000 })
  for (let i = 0; i < 19; i++) throttle.recordFailure('c', T0)
  assert.equal(throttle.retryAfterS('c', T0), 0, 'the default limit of 20 is not reached after 19')
  throttle.recordFailure('c', T0)
  assert.equal(throttle.retryAfterS('c', T0), 1)
})

test('a throttle that cannot decide (a shared store away, failing closed) gets 503, never a 429 to wait out', async (t) => {
  assert.equal(THROTTLE_UNAVAILABLE, -1)
  const away = { size: 1, mayRefuse: true, retryAfterS: () => THROTTLE_UNAVAILABLE, recordFailure: () => THROTTLE_UNAVAILABLE }
  const url = await startKeygate(t, { keys: createKeyStore([{ id: 't', key: 'throttle-key-0123456789' }]), throttle: away })
  const res = await fetch(`${url}/data`, { headers: { authorization: 'throttle-key-0123456789' } })
  assert.equal(res.status, 503)
  assert.equal(res.headers.get('retry-after'), '1')
})
