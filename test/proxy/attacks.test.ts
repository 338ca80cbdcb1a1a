/**
 * Proxy mode against hostile bytes: each way around the gate found by the outside attack of
 * 2026-12 (issue 25), sent raw, with the service recording exactly what reached it.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer as createTcpServer, connect, type AddressInfo, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { logLines, rawRequest, startServerProcess, waitFor } from '../helpers.js'
import { sha256, startUpstream, writeKeysFile, type Behaviour } from '../upstream.js'

const KEY = 'attack-key-0123456789abcdefghij'
const SCOPED = 'attack-scoped-0123456789abcdefg'

async function gate(t: TestContext, behaviour?: Behaviour, env: Record<string, string> = {}) {
  const upstream = await startUpstream(t, behaviour)
  const keys = writeKeysFile(t, {
    public: ['GET /status', 'GET /users/*/avatar'],
    keys: [
      { id: 'full', sha256: sha256(KEY) },
      { id: 'scoped', sha256: sha256(SCOPED), allow: ['GET /v1/reports/*'] },
    ],
  })
  const { child, url } = await startServerProcess(t, { UPSTREAM_URL: upstream.url, API_KEYS_FILE: keys, ...env })
  return { upstream, child, url }
}

/** Sends `bytes` on a new connection and resolves with the first answer (head and Content-Length body), then closes. */
async function firstAnswer(url: string, bytes: string): Promise<string> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  socket.on('error', () => {})
  let text = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => (text += chunk))
  socket.write(bytes, 'latin1')
  try {
    return await waitFor('a whole answer', () => {
      const end = text.indexOf('\r\n\r\n')
      const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? NaN)
      return end !== -1 && text.length >= end + 4 + length ? text : undefined
    }, 5000)
  } finally {
    socket.destroy()
  }
}

const SMUGGLED = 'DELETE /admin/users/1 HTTP/1.1\r\nHost: x\r\nX-Keygate-Key-Id: admin\r\n\r\n'

for (const [name, connection] of [
  ['Connection: Content-Length', 'Connection: Content-Length\r\n'],
  ['keep-alive, then a second Connection: CONTENT-LENGTH', 'Connection: keep-alive\r\nConnection: CONTENT-LENGTH\r\n'],
] as const) {
  test(`${name} cannot unframe the body: the service reads one request, its body included`, async (t) => {
    const { upstream, url } = await gate(t)
    const head = `GET /status HTTP/1.1\r\nHost: h\r\n${connection}Content-Length: ${SMUGGLED.length}\r\n\r\n`
    const answer = await firstAnswer(url, head + SMUGGLED)
    assert.match(answer, /^HTTP\/1\.1 200 OK/)
    // The request that follows on the same upstream connection must get its own answer.
    const after = await fetch(`${url}/status`)
    assert.equal(after.status, 200)
    assert.deepEqual(upstream.received.map((r) => [r.method, r.url, r.bodyBytes]), [['GET', '/status', SMUGGLED.length], ['GET', '/status', 0]])
  })
}

test('Connection cannot name Host or Transfer-Encoding away either', async (t) => {
  const { upstream, url } = await gate(t)
  const chunked = `GET /status HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding, Host\r\nTransfer-Encoding: chunked\r\n\r\n${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`
  assert.match(await firstAnswer(url, chunked), /^HTTP\/1\.1 200 OK/)
  assert.deepEqual(upstream.received.map((r) => [r.method, r.url, r.bodyBytes]), [['GET', '/status', SMUGGLED.length]])
  assert.equal(upstream.header('host'), 'h')
})

test('a # anywhere in the request target is 400 and reaches nothing (the service would cut the path there)', async (t) => {
  const { upstream, url } = await gate(t)
  for (const target of ['/users/admin#/avatar', '/status#', '/status?x=1#/../admin']) {
    const answer = await rawRequest(url, `GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`, 5000, false)
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request/, target)
  }
  assert.equal((await fetch(`${url}/users/admin/avatar`)).status, 200, 'the public rule itself still works')
  assert.deepEqual(upstream.received.map((r) => r.url), ['/users/admin/avatar'])
})

test('header names with an underscore never reach the service (CGI-style servers read X_Keygate_Key_Id as X-Keygate-Key-Id)', async (t) => {
  const { upstream, url } = await gate(t)
  const answer = await rawRequest(url, 'GET /status HTTP/1.1\r\nHost: h\r\nX_Keygate_Key_Id: admin\r\nX_Forwarded_For: 10.0.0.1\r\nX-Fine: yes\r\nConnection: close\r\n\r\n', 5000, false)
  assert.match(answer, /^HTTP\/1\.1 200 OK/)
  const names = (upstream.received[0]?.rawHeaders ?? []).filter((_, i) => i % 2 === 0)
  assert.deepEqual(names.filter((name) => name.includes('_')), [])
  assert.equal(upstream.header('x-fine'), 'yes')
})

test('headers that name another request (path overrides, forward-auth families) never reach the service', async (t) => {
  const { upstream, url } = await gate(t)
  const names = ['X-Original-URL', 'X-Rewrite-URL', 'X-Original-URI', 'X-Original-Method', 'X-Forwarded-Uri', 'X-Forwarded-Method']
  const res = await fetch(`${url}/status`, { headers: Object.fromEntries(names.map((name) => [name, name.endsWith('Method') ? 'DELETE' : '/admin/users/1'])) })
  assert.equal(res.status, 200)
  for (const name of names) assert.equal(upstream.header(name.toLowerCase()), undefined, name)
})

test('a method-override header naming another method is 400; one naming the same method passes', async (t) => {
  const { upstream, url } = await gate(t)
  for (const name of ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override']) {
    const res = await fetch(`${url}/status`, { headers: { [name]: 'DELETE' } })
    assert.equal(res.status, 400, name)
  }
  const scoped = await fetch(`${url}/v1/reports/q3`, { headers: { authorization: SCOPED, 'x-http-method-override': 'DELETE' } })
  assert.equal(scoped.status, 400, 'a GET-only key cannot DELETE through an override')
  assert.equal((await fetch(`${url}/status`, { headers: { 'x-http-method-override': 'get' } })).status, 200)
  assert.equal(upstream.received.length, 1)
})

test('two Host headers are 400 before anything is sent', async (t) => {
  const { upstream, url } = await gate(t)
  const answer = await rawRequest(url, `GET /status HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n`, 5000, false)
  assert.match(answer, /^HTTP\/1\.1 400 Bad Request/)
  assert.equal(upstream.received.length, 0)
})

test('Authorization of another scheme is the service\'s: the key in X-API-Key counts, and Basic reaches the service as sent', async (t) => {
  const { upstream, url } = await gate(t)
  const basic = `Basic ${Buffer.from('user:pass').toString('base64')}`
  const res = await fetch(`${url}/v1/items`, { headers: { authorization: basic, 'x-api-key': KEY } })
  assert.equal(res.status, 200)
  assert.equal(upstream.header('authorization'), basic)
  assert.equal(upstream.header('x-api-key'), undefined)
  assert.equal(upstream.header('x-keygate-key-id'), 'full')
  assert.equal((await fetch(`${url}/v1/items`, { headers: { authorization: basic } })).status, 401, 'Basic alone is no key')
})

/** A service that writes `answer` to every request it reads, then waits. */
async function rawService(t: TestContext, answer: string) {
  const sockets = new Set<Socket>()
  const server = createTcpServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket)).on('error', () => {})
    socket.once('data', () => socket.write(answer, 'latin1'))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sockets }
}

test('an answer with Transfer-Encoding and Content-Length is 502, never a length in front of a de-chunked body', async (t) => {
  for (const coding of ['chunked', 'gzip, chunked', 'gzip']) {
    const service = await rawService(t, `HTTP/1.1 200 OK\r\nTransfer-Encoding: ${coding}\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n`)
    const keys = writeKeysFile(t, { public: ['GET /**'], keys: [] })
    const { url } = await startServerProcess(t, { UPSTREAM_URL: service.url, API_KEYS_FILE: keys })
    const answer = await rawRequest(url, 'GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n', 5000, false)
    assert.match(answer, /^HTTP\/1\.1 502 Bad Gateway\r\n/, coding)
    assert.doesNotMatch(answer, /hello/)
  }
})

test('a 502 after a header Node will not send on says "502 Bad Gateway", not the service\'s "200 OK"', async (t) => {
  const service = await rawService(t, 'HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok')
  const { url } = await startServerProcess(t, { UPSTREAM_URL: service.url, API_KEY: KEY })
  const answer = await rawRequest(url, `GET /x HTTP/1.1\r\nHost: h\r\nAuthorization: ${KEY}\r\nConnection: close\r\n\r\n`, 5000, false)
  assert.match(answer, /^HTTP\/1\.1 502 Bad Gateway\r\n/)
})

test('upgrades: no 101 within UPSTREAM_TIMEOUT_MS is 504, and a client that leaves frees the service\'s socket', async (t) => {
  const service = await rawService(t, '') // accepts, reads, never answers
  const keys = writeKeysFile(t, { public: ['GET /ws'], keys: [] })
  const { url, child } = await startServerProcess(t, { UPSTREAM_URL: service.url, API_KEYS_FILE: keys, UPSTREAM_TIMEOUT_MS: '300' })
  const upgrade = 'GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'
  assert.match(await rawRequest(url, upgrade, 5000, false), /^HTTP\/1\.1 504 Gateway Timeout/)
  await waitFor('the service socket of the timed-out upgrade to close', () => (service.sockets.size === 0 ? true : undefined))
  const client = connect(Number(new URL(url).port), '127.0.0.1')
  client.on('error', () => {})
  client.write(upgrade)
  await waitFor('the upgrade to reach the service', () => (service.sockets.size === 1 ? true : undefined))
  client.destroy()
  await waitFor('the service socket to close once the client left', () => (service.sockets.size === 0 ? true : undefined))
  const lines = await waitFor('both access lines', () => {
    const found = logLines(child).filter((line) => line.path === '/ws')
    return found.length === 2 ? found : undefined
  })
  assert.deepEqual(lines.map((line) => line.upstreamError), ['timeout', 'client_aborted'])
})

test('after an early answer the rest of the body still counts against MAX_BODY_BYTES, and the service\'s socket is closed', async (t) => {
  // Answers at the first bytes, never reads the rest, never closes by itself.
  const service = await rawService(t, 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly')
  const keys = writeKeysFile(t, { public: ['POST /upload'], keys: [] })
  const { url } = await startServerProcess(t, { UPSTREAM_URL: service.url, API_KEYS_FILE: keys, MAX_BODY_BYTES: '65536' })
  const client = connect(Number(new URL(url).port), '127.0.0.1')
  let answer = ''
  let clientClosed = false
  client.setEncoding('latin1').on('data', (chunk: string) => (answer += chunk))
  client.on('error', () => {}).on('close', () => (clientClosed = true))
  const chunk = `4000\r\n${'x'.repeat(0x4000)}\r\n`
  client.write(`POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`)
  await waitFor('the early answer', () => (answer.includes('early') ? true : undefined))
  await waitFor('the service socket to close (the rest of the body goes nowhere)', () => (service.sockets.size === 0 ? true : undefined))
  // 64 MiB more, far past the limit: keygate must cut the connection long before the last byte.
  let sent = 0
  for (; sent < 4096 && !clientClosed; sent++) {
    if (!client.write(chunk)) await new Promise((resolve) => client.once('drain', resolve).once('close', resolve))
  }
  await waitFor('keygate to cut the connection', () => (clientClosed ? true : undefined))
  assert.ok(sent < 4096, `the connection was cut after ${sent} of 4096 chunks`)
  assert.match(answer, /^HTTP\/1\.1 200 OK/)
})

test('a proxied request Node cuts with 408 (its body never finished) is logged with 408, not 200', async (t) => {
  const { child, url } = await gate(t, undefined, { HEADERS_TIMEOUT_MS: '200', REQUEST_TIMEOUT_MS: '500' })
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  t.after(() => socket.destroy())
  let answer = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => (answer += chunk))
  socket.on('error', () => {})
  const closed = once(socket, 'close')
  socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: ${KEY}\r\nContent-Length: 100\r\n\r\nonly a part`)
  await closed
  assert.match(answer, /^HTTP\/1\.1 408 Request Timeout/)
  const lines = await waitFor('the access line of the cut request', () => {
    const found = logLines(child).filter((line) => line.path === '/upload')
    return found.length > 0 ? found : undefined
  })
  assert.deepEqual(lines.map((line) => line.status), [408])
})
