/**
 * keygate's parser of the service's answers against Node's own (llhttp, through `node:http`):
 * the same bytes, over a corpus of valid and broken answers, must be accepted or refused alike,
 * with the same status and body. Where two parsers frame one answer differently, a proxy hands
 * one client's bytes to another (response splitting); a parser that waits where llhttp refuses
 * leaves the client hanging.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { request } from 'node:http'
import { createServer, type AddressInfo } from 'node:net'
import { test, type TestContext } from 'node:test'
import { createUpstreamClient } from '../../dist/proxy/upstream-client.js'

const OK = 'HTTP/1.1 200 OK\r\n'
const CHUNKED = `${OK}Transfer-Encoding: chunked\r\n\r\n`

const CORPUS: Record<string, string> = {
  'Content-Length': `${OK}Content-Length: 5\r\n\r\nhello`,
  'no reason phrase': 'HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello',
  'HTTP/1.0 until close': 'HTTP/1.0 200 OK\r\n\r\nhello',
  'chunked': `${CHUNKED}5\r\nhello\r\n0\r\n\r\n`,
  'chunked, two chunks and a trailer': `${CHUNKED}2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n`,
  'chunk extension': `${CHUNKED}5;a=b\r\nhello\r\n0\r\n\r\n`,
  'chunk extension, quoted': `${CHUNKED}5;a="b c"\r\nhello\r\n0\r\n\r\n`,
  'chunk extension, bare name': `${CHUNKED}5;a\r\nhello\r\n0\r\n\r\n`,
  'chunked twice': `${OK}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  'chunked, then another coding: until close': `${OK}Transfer-Encoding: chunked, identity\r\n\r\nhello`,
  'gzip: until close': `${OK}Transfer-Encoding: gzip\r\n\r\nhello`,
  '100 Continue, then the answer': `HTTP/1.1 100 Continue\r\n\r\n${OK}Content-Length: 2\r\n\r\nok`,
  '103 Early Hints, then the answer': `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n${OK}Content-Length: 2\r\n\r\nok`,
  '204 with nothing after': 'HTTP/1.1 204 No Content\r\n\r\n',
  // Refused by both:
  'Transfer-Encoding chunked with Content-Length': `${OK}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  'Transfer-Encoding gzip with Content-Length': `${OK}Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello`,
  'chunk size 0x5': `${CHUNKED}0x5\r\nhello\r\n0\r\n\r\n`,
  'chunk size with junk': `${CHUNKED}5 junk\r\nhello\r\n0\r\n\r\n`,
  'chunk size with a space': `${CHUNKED}5 \r\nhello\r\n0\r\n\r\n`,
  'a space before a chunk extension': `${CHUNKED}5 ;a=b\r\nhello\r\n0\r\n\r\n`,
  'chunk size too large': `${CHUNKED}FFFFFFFFFFFFFFFFFF\r\nhello`,
  'chunk size not hex': `${CHUNKED}zz\r\nhello\r\n0\r\n\r\n`,
  'chunk data not followed by CRLF': `${CHUNKED}5\r\nhelloXX0\r\n\r\n`,
  'bare LF after a chunk size': `${CHUNKED}5\nhello\r\n0\r\n\r\n`,
  'bare LF after chunk data': `${CHUNKED}5\r\nhello\n0\r\n\r\n`,
  'a trailer line without a colon': `${CHUNKED}5\r\nhello\r\n0\r\nnocolon\r\n\r\n`,
  'bare LF line ends in the head': 'HTTP/1.1 200 OK\nContent-Length: 5\n\nhello',
  'one bare LF in the head': `${OK}Content-Length: 5\n\r\nhello`,
  'a bare CR in a value': `${OK}X-A: a\rb\r\nContent-Length: 5\r\n\r\nhello`,
  '101 to a request that asked for no upgrade': 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n',
  'two equal Content-Lengths': `${OK}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
  'two different Content-Lengths': `${OK}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
  'Content-Length 5, 5': `${OK}Content-Length: 5, 5\r\n\r\nhello`,
  'Content-Length +5': `${OK}Content-Length: +5\r\n\r\nhello`,
  'a space before the colon': `${OK}X-A : b\r\nContent-Length: 5\r\n\r\nhello`,
  'obs-fold': `${OK}X-A: b\r\n c\r\nContent-Length: 5\r\n\r\nhello`,
  'a four-digit status': 'HTTP/1.1 1000 X\r\nContent-Length: 5\r\n\r\nhello',
  'a tab in the status line': 'HTTP/1.1\t200 OK\r\nContent-Length: 5\r\n\r\nhello',
  'body shorter than Content-Length': `${OK}Content-Length: 10\r\n\r\nhello`,
  'chunked body cut short': `${CHUNKED}5\r\nhel`,
}

/** Where keygate is stricter than llhttp on purpose, and why. Never the other way round. */
const STRICTER: Record<string, string> = {
  // keygate speaks HTTP/1.x to the service; an answer claiming another version is no answer to it.
  'HTTP/2.0 in a status line': 'HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello',
}

type Verdict = { accepted: true; status: number; body: string } | { accepted: false } | 'pending'
const PENDING_MS = 400

/** A service that writes `bytes` once a request arrives, then closes (`end`) or stays open. */
async function service(t: TestContext, bytes: string, end: boolean): Promise<number> {
  const server = createServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => (end ? socket.end(bytes, 'latin1') : socket.write(bytes, 'latin1')))
    t.after(() => socket.destroy())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return (server.address() as AddressInfo).port
}

function byKeygate(port: number): Promise<Verdict> {
  const client = createUpstreamClient({ host: '127.0.0.1', port, tls: false })
  return new Promise<Verdict>((resolve) => {
    let status = 0
    let body = ''
    setTimeout(() => resolve('pending'), PENDING_MS).unref()
    client.call('GET', '/', ['Host', 'svc'], undefined, {
      onHead: (head) => (status = head.status),
      onBody: (chunk) => ((body += chunk.toString('latin1')), true),
      onEnd: (last) => resolve({ accepted: true, status, body: body + (last?.toString('latin1') ?? '') }),
      onError: () => resolve({ accepted: false }),
    })
  }).finally(() => client.close())
}

function byNode(port: number): Promise<Verdict> {
  return new Promise<Verdict>((resolve) => {
    const req = request({ host: '127.0.0.1', port, agent: false, headers: { host: 'svc' } }, (res) => {
      let body = ''
      res.setEncoding('latin1').on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ accepted: true, status: res.statusCode ?? 0, body }))
      res.on('error', () => resolve({ accepted: false })).on('aborted', () => resolve({ accepted: false }))
    })
    req.on('error', () => resolve({ accepted: false }))
    req.on('upgrade', (_res, socket) => {
      socket.destroy()
      resolve({ accepted: false })
    })
    const timer = setTimeout(() => {
      req.destroy()
      resolve('pending')
    }, PENDING_MS)
    req.on('close', () => setImmediate(() => clearTimeout(timer)))
    req.end()
  })
}

for (const end of [true, false]) {
  const mode = end ? 'the service then closes' : 'the service then keeps the connection open'
  test(`keygate's answer parser agrees with Node's on ${Object.keys(CORPUS).length} answers (${mode})`, async (t) => {
    const results = await Promise.all(Object.entries(CORPUS).map(async ([name, bytes]) => {
      const [keygate, node] = await Promise.all([byKeygate(await service(t, bytes, end)), byNode(await service(t, bytes, end))])
      return { name, keygate, node }
    }))
    const disagreements = results.filter(({ keygate, node }) => JSON.stringify(keygate) !== JSON.stringify(node))
    assert.deepEqual(disagreements, [])
    assert.ok(results.some(({ node }) => node !== 'pending' && node.accepted), 'the corpus holds answers Node accepts')
    assert.ok(results.some(({ node }) => node !== 'pending' && !node.accepted), 'and answers Node refuses')
  })
}

test('where keygate is stricter than Node on purpose, it refuses, never waits', async (t) => {
  for (const [name, bytes] of Object.entries(STRICTER)) {
    assert.deepEqual(await byKeygate(await service(t, bytes, false)), { accepted: false }, name)
  }
})
