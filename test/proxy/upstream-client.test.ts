/** keygate's HTTP/1.1 client of proxy mode against a raw service that writes exact bytes. */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { createUpstreamClient, type AnswerHead } from '../../dist/proxy/upstream-client.js'

/** A service that answers each request head it reads with `answer(requestText)`, as raw bytes. */
async function rawService(t: TestContext, answer: (request: string, socket: Socket) => string | undefined) {
  const requests: string[] = []
  let connections = 0
  const server = createServer((socket) => {
    connections++
    let text = ''
    socket.setEncoding('latin1').on('data', (chunk: string) => {
      text += chunk
      // One request at a time: a head, and the body its Content-Length or chunks announce.
      const end = text.indexOf('\r\n\r\n')
      if (end === -1) return
      const length = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0)
      const chunked = /transfer-encoding: chunked/i.test(text.slice(0, end))
      if (chunked ? !text.endsWith('0\r\n\r\n') : text.length < end + 4 + length) return
      requests.push(text)
      text = ''
      const reply = answer(requests[requests.length - 1] as string, socket)
      if (reply !== undefined) socket.write(reply)
    })
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  const client = createUpstreamClient({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, tls: false })
  t.after(() => client.close())
  return { client, requests, connections: () => connections }
}

interface Result {
  head?: AnswerHead
  body: string
  error?: string
}

function call(client: ReturnType<typeof createUpstreamClient>, method: string, body?: { framing: 'length' | 'chunked'; parts: string[] }): Promise<Result> {
  return new Promise((resolve) => {
    const result: Result = { body: '' }
    // Bounded: a client that waits forever fails the test instead of hanging it.
    setTimeout(() => resolve({ ...result, error: 'no end within 5 s' }), 5000).unref()
    const framing = body === undefined ? undefined : body.framing === 'chunked' ? 'chunked' : body.parts.join('').length
    const c = client.call(method, '/p?q=1', ['Host', 'svc'], framing, {
      onHead: (head) => (result.head = head),
      onBody: (chunk) => ((result.body += chunk.toString('latin1')), true),
      onEnd: (last) => resolve({ ...result, body: result.body + (last?.toString('latin1') ?? '') }),
      onError: (error) => resolve({ ...result, error: error.code ?? error.message }),
    })
    for (const part of body?.parts ?? []) c.write(Buffer.from(part))
    if (body !== undefined) c.end()
  })
}

test('Content-Length, chunked (extensions, trailers) and close-delimited answers; the head is written as given', async (t) => {
  const answers = [
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n',
    'HTTP/1.0 200 OK\r\n\r\nuntil the end',
  ]
  let i = 0
  const { client, requests } = await rawService(t, (_request, socket) => {
    const reply = answers[i++]
    if (i === 3) socket.end(reply ?? "")
    else return reply
    return undefined
  })
  const first = await call(client, 'GET')
  assert.deepEqual([first.head?.status, first.head?.rawHeaders, first.body], [200, ['Content-Length', '5', 'X-A', '1'], 'hello'])
  assert.equal(requests[0], 'GET /p?q=1 HTTP/1.1\r\nHost: svc\r\n\r\n')
  assert.equal((await call(client, 'GET')).body, 'abc0123456789abcdef')
  assert.equal((await call(client, 'GET')).body, 'until the end')
})

test('1xx interim answers are skipped; HEAD, 204 and 304 have no body; the connection is reused', async (t) => {
  const { client, connections } = await rawService(t, (request) => {
    if (request.startsWith('HEAD')) return 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'
    if (request.startsWith('DELETE')) return 'HTTP/1.1 204 No Content\r\n\r\n'
    return 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok'
  })
  const created = await call(client, 'GET')
  assert.deepEqual([created.head?.status, created.body], [201, 'ok'])
  assert.deepEqual([(await call(client, 'HEAD')).head?.status, (await call(client, 'HEAD')).body], [200, ''])
  assert.equal((await call(client, 'DELETE')).head?.status, 204)
  assert.equal((await call(client, 'GET')).body, 'ok')
  assert.equal(connections(), 1, 'one kept-alive connection for all five')
})

test('a connection is not reused after an answer that did not end exactly: a late body after HEAD, stray bytes', async (t) => {
  // HEAD announcing a body whose body the service sends late, in front of its next answer on that
  // connection; a 200 with bytes behind its end. Either would be read as the next client's answer.
  const owesBody = new WeakSet<Socket>()
  const { client, connections } = await rawService(t, (request, socket) => {
    const late = owesBody.delete(socket) ? 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged' : ''
    if (request.startsWith('HEAD')) {
      owesBody.add(socket)
      return 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n'
    }
    if (request.startsWith('PUT')) return 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged'
    return `${late}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal`
  })
  assert.equal((await call(client, 'HEAD')).head?.status, 200)
  assert.equal((await call(client, 'GET')).body, 'real', 'the late body is not the next answer')
  assert.equal((await call(client, 'PUT')).body, 'ok')
  assert.equal((await call(client, 'GET')).body, 'real', 'the stray bytes are not the next answer')
  assert.equal(connections(), 3, 'HEAD and PUT each left a connection that was closed')
})

test('request bodies: Content-Length and chunked framing written by the client', async (t) => {
  const { client, requests } = await rawService(t, () => 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')
  await call(client, 'POST', { framing: 'length', parts: ['ab', 'cd'] })
  assert.match(requests[0] ?? '', /\r\nContent-Length: 4\r\n\r\nabcd$/)
  await call(client, 'POST', { framing: 'chunked', parts: ['abc', '', 'de'] })
  assert.match(requests[1] ?? '', /\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n$/)
})

test('a malformed or oversized head, a bad chunk and a close before the end are errors, never answers', async (t) => {
  const bad = ['HTTP/1.1 2000 Odd\r\n\r\n', 'HTTP/1.1 200 OK\r\n folded: no\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n']
  for (const reply of bad) {
    const { client } = await rawService(t, () => reply)
    const result = await call(client, 'GET')
    assert.ok(result.error !== undefined, JSON.stringify(reply))
  }
  const { client: huge } = await rawService(t, () => `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(70_000)}\r\n\r\n`)
  assert.equal((await call(huge, 'GET')).error, 'HPE_HEADER_OVERFLOW')
  const { client: short } = await rawService(t, (_request, socket) => void socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'))
  const cut = await call(short, 'GET')
  assert.deepEqual([cut.head?.status, cut.body, cut.error], [200, 'abc', 'ECONNRESET'], 'the head arrived, then the connection closed short')
})

test('a chunked request body stays well framed when the socket pushes back', async (t) => {
  const { client, requests } = await rawService(t, () => 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')
  // 64 pieces of 64 KiB outrun the socket's buffer: write() answers false long before the last one.
  const piece = 'x'.repeat(64 * 1024)
  const result = await call(client, 'POST', { framing: 'chunked', parts: Array(64).fill(piece) })
  assert.equal(result.head?.status, 200)
  const body = (requests[0] ?? '').split('\r\n\r\n').slice(1).join('\r\n\r\n')
  assert.equal(body, `${'10000\r\n' + piece + '\r\n'}`.repeat(64) + '0\r\n\r\n')
})
