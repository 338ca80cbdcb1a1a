/** The header rules of proxy mode, on tables of requests and answers: what goes on, what never does. */
import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { test } from 'node:test'
import { ambiguityOf, downstreamHeaders, upstreamHeaders, type ForwardFacts } from '../../dist/proxy/proxy-headers.js'

const FACTS: ForwardFacts = { keyId: 'billing', requestId: 'rid-1', dropAuthorization: true, trustProxy: 0, proto: 'http', tunnel: false }

/** A request as `upstreamHeaders` reads it: raw headers, the parsed ones Node would give, the peer. */
function request(raw: string[], peer = '127.0.0.1', method = 'GET'): IncomingMessage {
  const headers: Record<string, string> = {}
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    headers[name] ??= raw[i + 1] as string // Node keeps the first Host
  }
  return { rawHeaders: raw, headers, method, socket: { remoteAddress: peer } } as unknown as IncomingMessage
}

/** The headers for the service as `name: value` lines, keygate's own at the end. */
const lines = (out: string[]) => out.flatMap((_, i) => (i % 2 === 0 ? [`${out[i]}: ${out[i + 1]}`] : []))
const KEYGATE_OWN = ['X-Keygate-Key-Id: billing', 'X-Request-Id: rid-1', 'X-Forwarded-For: 127.0.0.1', 'X-Forwarded-Proto: http', 'X-Forwarded-Host: h']

for (const [name, raw, passed] of [
  ['ordinary headers pass in order and case, repeats kept', ['Host', 'h', 'Accept', 'a/b', 'x-custom', '1', 'X-Custom', '2'], ['Host: h', 'Accept: a/b', 'x-custom: 1', 'X-Custom: 2']],
  ['a value that names a header is not a Connection option', ['Host', 'h', 'Accept', 'x-custom', 'X-Custom', '1'], ['Host: h', 'Accept: x-custom', 'X-Custom: 1']],
  ['hop-by-hop headers are dropped', ['Host', 'h', 'Keep-Alive', 'timeout=5', 'Proxy-Connection', 'x', 'TE', 'trailers', 'Trailer', 'X-T', 'Transfer-Encoding', 'chunked', 'Upgrade', 'ws'], ['Host: h']],
  ['Connection and the fields it names are dropped, in any case and spacing', ['Host', 'h', 'Connection', 'close, X-One ,x-TWO', 'X-One', '1', 'X-Two', '2', 'X-Three', '3'], ['Host: h', 'X-Three: 3']],
  ['a second Connection header names fields too', ['Host', 'h', 'Connection', 'keep-alive', 'connection', 'X-One', 'X-One', '1'], ['Host: h']],
  ['Connection cannot name the framing or Host away', ['Host', 'h', 'Connection', 'Content-Length, Transfer-Encoding, Host', 'Accept', 'x'], ['Host: h', 'Accept: x']],
  ['the client\'s Content-Length never goes on (keygate writes the framing)', ['Host', 'h', 'Content-Length', '5'], ['Host: h']],
  ['the credential, keygate\'s names and replaced headers are dropped', ['Host', 'h', 'Authorization', 'k', 'X-API-Key', 'k', 'X-Keygate-Key-Id', 'forged', 'x-keygate-other', 'y', 'X-Forwarded-Proto', 'gopher', 'X-Forwarded-Host', 'evil', 'X-Request-Id', 'mine', 'Expect', '100-continue'], ['Host: h']],
  ['names with an underscore are dropped', ['Host', 'h', 'X_Keygate_Key_Id', 'admin', 'x_anything', '1', 'X-Fine', 'yes'], ['Host: h', 'X-Fine: yes']],
  ['headers naming another request are dropped', ['Host', 'h', 'X-Original-URL', '/admin', 'X-Rewrite-URL', '/admin', 'X-Original-URI', '/a', 'X-Original-Method', 'GET', 'X-Forwarded-Uri', '/a', 'X-Forwarded-Method', 'GET'], ['Host: h']],
] as const) {
  test(`upstream headers: ${name}`, () => {
    assert.deepEqual(lines(upstreamHeaders(request([...raw]), FACTS)), [...passed, ...KEYGATE_OWN])
  })
}

test('upstream headers: Authorization of the service passes when it did not hold the key', () => {
  const out = lines(upstreamHeaders(request(['Host', 'h', 'Authorization', 'Basic x']), { ...FACTS, dropAuthorization: false }))
  assert.deepEqual(out.slice(0, 2), ['Host: h', 'Authorization: Basic x'])
})

test('upstream headers: a public request has no key id; HTTPS is told; no Host, no X-Forwarded-Host', () => {
  const out = lines(upstreamHeaders(request(['Accept', 'x']), { ...FACTS, keyId: undefined, proto: 'https' }))
  assert.deepEqual(out, ['Accept: x', 'X-Request-Id: rid-1', 'X-Forwarded-For: 127.0.0.1', 'X-Forwarded-Proto: https'])
})

test('upstream headers: a tunnel keeps Connection: upgrade and the Upgrade the client asked for', () => {
  const req = request(['Host', 'h', 'Connection', 'Upgrade', 'Upgrade', 'websocket'])
  assert.deepEqual(lines(upstreamHeaders(req, { ...FACTS, tunnel: true })).slice(0, 3), ['Host: h', 'Connection: upgrade', 'Upgrade: websocket'])
})

for (const [trustProxy, header, peer, expected] of [
  [0, '203.0.113.7, 198.51.100.2', '127.0.0.1', '127.0.0.1'], // a client's entries are never believed by default
  [1, '203.0.113.7, 198.51.100.2', '127.0.0.1', '198.51.100.2, 127.0.0.1'],
  [2, '203.0.113.7, 198.51.100.2, 192.0.2.9', '127.0.0.1', '198.51.100.2, 192.0.2.9, 127.0.0.1'],
  [3, ' 203.0.113.7 ,, 198.51.100.2', '127.0.0.1', '203.0.113.7, 198.51.100.2, 127.0.0.1'], // fewer than trusted: all there is; empty entries dropped
  [1, undefined, '::ffff:10.0.0.1', '10.0.0.1'], // an IPv4-mapped peer as IPv4
  [0, undefined, '::1', '::1'],
  [0, undefined, '::ffff:abcd', '::ffff:abcd'], // not mapped IPv4: as it is
] as const) {
  test(`upstream headers: X-Forwarded-For with TRUST_PROXY=${trustProxy} of ${JSON.stringify(header)} from ${peer} is ${expected}`, () => {
    const raw = header === undefined ? ['Host', 'h'] : ['Host', 'h', 'X-Forwarded-For', header]
    const out = lines(upstreamHeaders(request(raw, peer), { ...FACTS, trustProxy }))
    assert.ok(out.includes(`X-Forwarded-For: ${expected}`), out.join(' | '))
    assert.equal(out.filter((line) => /^x-forwarded-for:/i.test(line)).length, 1)
  })
}

test('upstream headers: two X-Forwarded-For headers count as one list', () => {
  const out = lines(upstreamHeaders(request(['Host', 'h', 'X-Forwarded-For', '203.0.113.7', 'x-forwarded-for', '198.51.100.2']), { ...FACTS, trustProxy: 2 }))
  assert.ok(out.includes('X-Forwarded-For: 203.0.113.7, 198.51.100.2, 127.0.0.1'), out.join(' | '))
})

for (const [name, raw, method, expected] of [
  ['one Host', ['Host', 'h'], 'GET', undefined],
  ['one Host among other headers', ['Host', 'h', 'Accept', 'x', 'X-Other', 'y'], 'GET', undefined],
  ['two Host headers', ['Host', 'h', 'host', 'evil'], 'GET', 'two hosts'],
  ['an override naming the same method, in any case', ['X-HTTP-Method-Override', 'get'], 'GET', undefined],
  ['an override padded with white space (Node cuts it: none arrives so, and it is no method)', ['X-HTTP-Method-Override', ' GET'], 'GET', 'method override'],
  ['X-HTTP-Method-Override naming another method', ['X-HTTP-Method-Override', 'DELETE'], 'GET', 'method override'],
  ['X-HTTP-Method naming another method', ['x-http-method', 'PUT'], 'POST', 'method override'],
  ['X-Method-Override naming another method', ['X-Method-Override', 'PATCH'], 'GET', 'method override'],
  ['a header that only resembles an override', ['X-HTTP-Method-Overrides', 'DELETE'], 'GET', undefined],
] as const) {
  test(`ambiguity: ${name} is ${expected ?? 'none'}`, () => {
    assert.equal(ambiguityOf(request([...raw], '127.0.0.1', method)), expected)
  })
}

for (const [name, raw, extra, expected] of [
  ['the answer\'s headers pass, X-Request-Id added', ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'], undefined, ['Content-Type: text/plain', 'Set-Cookie: a=1', 'Set-Cookie: b=2', 'X-Request-Id: rid-1']],
  ['the service\'s own X-Request-Id is kept', ['x-request-id', 'theirs'], undefined, ['x-request-id: theirs']],
  ['hop-by-hop and named fields are dropped', ['Connection', 'X-Private', 'X-Private', '1', 'Keep-Alive', 'timeout=9', 'Transfer-Encoding', 'chunked', 'X-Public', '2'], undefined, ['X-Public: 2', 'X-Request-Id: rid-1']],
  ['Connection cannot name Content-Length away', ['Connection', 'Content-Length', 'Content-Length', '2'], undefined, ['Content-Length: 2', 'X-Request-Id: rid-1']],
  ['the RateLimit headers come after the service\'s', ['A', '1'], ['ratelimit', 'r'], ['A: 1', 'ratelimit: r', 'X-Request-Id: rid-1']],
] as const) {
  test(`downstream headers: ${name}`, () => {
    assert.deepEqual(lines(downstreamHeaders([...raw], extra === undefined ? undefined : [...extra], 'rid-1')), expected)
  })
}

test('downstream headers: a tunnel\'s 101 keeps Connection and Upgrade', () => {
  assert.deepEqual(lines(downstreamHeaders(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Keep-Alive', 'x'], undefined, 'rid-1', true)), ['Connection: Upgrade', 'Upgrade: websocket', 'X-Request-Id: rid-1'])
})

test('header classes are remembered per spelling, and a long made-up name is still classified', () => {
  const long = `X-${'a'.repeat(100)}_b`
  for (let round = 0; round < 2; round++) {
    assert.deepEqual(lines(upstreamHeaders(request(['Host', 'h', long, '1', 'AUTHORIZATION', 'k']), FACTS)), ['Host: h', ...KEYGATE_OWN])
  }
})

test('upstream headers: a socket that lost its peer address gives an empty X-Forwarded-For, not a made-up one', () => {
  const req = request(['Host', 'h'])
  ;(req.socket as { remoteAddress?: string }).remoteAddress = undefined
  assert.ok(lines(upstreamHeaders(req, FACTS)).includes('X-Forwarded-For: '))
})
