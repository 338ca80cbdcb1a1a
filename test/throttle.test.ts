import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { test } from 'node:test'
import { clientAddressOf } from '../dist/client.js'
import { createThrottle, throttleKeyOf } from '../dist/throttle.js'

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
  ['::1', '0:0:0:0::/64'],
  ['fe80::1%eth0', 'fe80:0:0:0::/64'],
  ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
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
] as const) {
  test(`clientAddressOf gives ${name}`, () => {
    assert.equal(clientAddressOf(request('10.0.0.1', forwarded), trustProxy), expected)
  })
}
