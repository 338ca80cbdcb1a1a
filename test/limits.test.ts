import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { TEST_KEY, logLines, rawRequest, startServerProcess, waitFor, type Child } from './helpers.js'

const MIB = 1024 * 1024

async function dataStatus(url: string): Promise<number> {
  const res = await fetch(`${url}/data`, { headers: { authorization: TEST_KEY } })
  await res.arrayBuffer()
  return res.status
}

/** The status line and the body of a raw HTTP answer. */
function parse(answer: string): { status: number; body: string } {
  return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1]), body: answer.slice(answer.indexOf('\r\n\r\n') + 4) }
}

/** Waits for the access line of the answer's request id, and checks it says `status`. */
async function assertLogged(child: Child, answer: string, status: number, reason: string): Promise<void> {
  const requestId = /\r\nx-request-id: ([^\r]+)\r\n/i.exec(answer)?.[1]
  assert.ok(requestId !== undefined, 'the answer has an X-Request-Id')
  const line = await waitFor('the access line', () => logLines(child).find((entry) => entry.requestId === requestId))
  assert.equal(line.msg, 'request')
  assert.equal(line.status, status)
  assert.equal(line.reason, reason)
  assert.equal(line.client, '127.0.0.1')
}

test('64 KiB of headers get 431 with a JSON body, logged, and the server still answers others', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY })
  const answer = await rawRequest(url, `GET /data HTTP/1.1\r\nHost: x\r\nX-Padding: ${'a'.repeat(64 * 1024)}\r\n\r\n`)
  assert.deepEqual(parse(answer), { status: 431, body: '{"error":"Request Header Fields Too Large"}' })
  assert.match(answer, /\r\ncontent-type: application\/json; charset=utf-8\r\n/)
  await assertLogged(child, answer, 431, 'headers_too_large')
  assert.equal(await dataStatus(url), 200)
})

for (const [name, request, status, body, reason] of [
  ['HTTP/1.1 without Host', 'GET /data HTTP/1.1\r\nAuthorization: x\r\n\r\n', 400, '{"error":"Bad Request"}', 'malformed'],
  ['an Expect other than 100-continue', 'GET /data HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n', 417, '{"error":"Expectation Failed"}', 'expectation_failed'],
] as const) {
  test(`${name} gets ${status} with keygate's headers and JSON body, logged and counted`, async (t) => {
    const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY })
    const answer = await rawRequest(url, request)
    assert.deepEqual(parse(answer), { status, body })
    assert.match(answer, /\r\ncache-control: no-store\r\n/i)
    assert.match(answer, /\r\nx-content-type-options: nosniff\r\n/i)
    await assertLogged(child, answer, status, reason)
    const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: TEST_KEY } })).text()
    assert.match(metrics, new RegExp(`keygate_requests_total\\{route="data",status="${status}"\\} 1\n`))
  })
}

test('HTTP/1.0 without Host is still served', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY })
  const answer = await rawRequest(url, `GET /data HTTP/1.0\r\nAuthorization: ${TEST_KEY}\r\n\r\n`)
  assert.equal(Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1]), 200)
})

for (const [name, request, status, body] of [
  ['a garbage request line', 'HELLO WORLD\r\n\r\n', 400, '{"error":"Bad Request"}'],
  ['a bad header line', 'GET /data HTTP/1.1\r\nHost x\r\n\r\n', 400, '{"error":"Bad Request"}'],
  ['a bad Content-Length', 'POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400, '{"error":"Bad Request"}'],
  ['both Content-Length and chunked', 'POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, '{"error":"Bad Request"}'],
] as const) {
  test(`malformed HTTP (${name}) gets ${status} with a JSON body, and an access line`, async (t) => {
    const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY })
    const answer = await rawRequest(url, request)
    assert.deepEqual(parse(answer), { status, body })
    await assertLogged(child, answer, status, 'malformed')
    assert.equal(await dataStatus(url), 200)
  })
}

test('a 2 MiB body announced by Content-Length gets 413 without being read', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY })
  const head = `POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: ${2 * MIB}\r\n\r\n`
  const answer = await rawRequest(url, Buffer.concat([Buffer.from(head), Buffer.alloc(2 * MIB, 'x')]))
  assert.deepEqual(parse(answer), { status: 413, body: '{"error":"Payload Too Large"}' })
  assert.match(answer, /\r\nconnection: close\r\n/i)
  assert.equal(await dataStatus(url), 200)
})

test('a 2 MiB chunked body gets 413 once 1 MiB has arrived', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY })
  const chunk = `${(64 * 1024).toString(16)}\r\n${'x'.repeat(64 * 1024)}\r\n`
  const request = `POST /data HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.repeat(32)}0\r\n\r\n`
  const answer = await rawRequest(url, request)
  assert.deepEqual(parse(answer), { status: 413, body: '{"error":"Payload Too Large"}' })
  assert.equal(await dataStatus(url), 200)
})

test('a small body is read and the route answers as usual', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY })
  const post = await fetch(`${url}/data`, { method: 'POST', body: 'x'.repeat(1000) })
  assert.equal(post.status, 405)
  await post.arrayBuffer()
  const getWithBody = await rawRequest(url, `GET /data HTTP/1.1\r\nHost: x\r\nAuthorization: ${TEST_KEY}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`)
  assert.equal(parse(getWithBody).status, 200)
})

test('slowloris: sockets trickling a request are closed after HEADERS_TIMEOUT_MS; others are served', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, HEADERS_TIMEOUT_MS: '500' })
  const port = Number(new URL(url).port)
  const started = Date.now()
  const sockets: Socket[] = []
  const closedAfterMs: number[] = []
  for (let i = 0; i < 20; i++) {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.on('close', () => closedAfterMs.push(Date.now() - started))
    sockets.push(socket)
  }
  t.after(() => sockets.forEach((socket) => socket.destroy()))
  await Promise.all(sockets.map((socket) => once(socket, 'connect')))
  const partial = `GET /data HTTP/1.1\r\nHost: x\r\nX-Slow: ${'s'.repeat(200)}`
  let sent = 0
  // Each socket sends one more byte every 50 ms, never finishing its headers (a header value grows).
  const trickle = setInterval(() => {
    const byte = partial[sent++] ?? 's'
    for (const socket of sockets) if (!socket.destroyed) socket.write(byte)
  }, 50)
  t.after(() => clearInterval(trickle))
  let served = 0
  await waitFor('every slow socket to be closed', async () => {
    assert.equal(await dataStatus(url), 200)
    served++
    return closedAfterMs.length === sockets.length ? true : undefined
  }, 5000)
  clearInterval(trickle)
  assert.ok(served > 0)
  assert.ok(Math.min(...closedAfterMs) >= 450, `closed too early: ${Math.min(...closedAfterMs)} ms`)
  t.diagnostic(`20 slow sockets closed after ${Math.min(...closedAfterMs)}-${Math.max(...closedAfterMs)} ms; ${served} normal requests served meanwhile`)
})

/** mulberry32: a small seeded generator, so that a failing case can be replayed. */
function seeded(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

test('random bytes and truncated or mutated requests never crash the server (3000 seeded cases)', async (t) => {
  const { child, url } = await startServerProcess(t, // Mutated keys fail authentication: throttling would only hide the server's answers.
    { API_KEY: TEST_KEY, HEADERS_TIMEOUT_MS: '1000', AUTH_FAIL_LIMIT: '0' })
  const random = seeded(20261128)
  const valid = Buffer.from(`POST /auth?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`)
  const makeCase = (): Buffer => {
    const kind = Math.floor(random() * 3)
    if (kind === 0) return Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256)))
    if (kind === 1) return valid.subarray(0, Math.floor(random() * valid.length))
    const mutated = Buffer.from(valid)
    for (let i = 0; i < 1 + random() * 5; i++) mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256)
    return mutated
  }
  const cases = Array.from({ length: 3000 }, makeCase)
  let next = 0
  let answered = 0
  const worker = async () => {
    while (next < cases.length) {
      const bytes = cases[next++] as Buffer
      if ((await rawRequest(url, bytes, 5000)).startsWith('HTTP/1.1 ')) answered++
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  assert.equal(child.process.exitCode, null, 'the server is still running')
  assert.equal(await dataStatus(url), 200)
  assert.equal(child.stderr(), '')
  t.diagnostic(`${answered} of ${cases.length} cases got an HTTP answer; the rest were closed without one`)
})

test('KEEP_ALIVE_TIMEOUT_MS: an idle keep-alive connection is closed by the server after it', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, KEEP_ALIVE_TIMEOUT_MS: '300' })
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  t.after(() => socket.destroy())
  let answer = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => (answer += chunk))
  socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  await waitFor('the answer', () => (answer.endsWith('{"status":"ok"}') ? true : undefined))
  const idleSince = Date.now()
  assert.match(answer, /\r\nConnection: keep-alive\r\n/)
  await once(socket, 'end')
  assert.ok(Date.now() - idleSince >= 250, `closed after ${Date.now() - idleSince} ms`)
})

test('REQUEST_TIMEOUT_MS: a body that never finishes gets 408, logged, and the connection is closed', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY, HEADERS_TIMEOUT_MS: '200', REQUEST_TIMEOUT_MS: '500' })
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  t.after(() => socket.destroy())
  let answer = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => (answer += chunk))
  socket.on('error', () => {})
  const closed = once(socket, 'close')
  socket.write('POST /auth HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a part')
  await closed
  assert.deepEqual(parse(answer), { status: 408, body: '{"error":"Request Timeout"}' })
  await assertLogged(child, answer, 408, 'timeout')
  assert.equal(await dataStatus(url), 200)
})
