/**
 * The same hostile requests through keygate to two services that parse differently: Node's own
 * `node:http` and a raw recorder that frames requests by hand (RFC 9112). Each must see exactly the
 * one request keygate checked, with the path keygate matched, and never a second one hidden in a
 * body; a refused request reaches neither. A marker request sent once the case is answered
 * marks the end of each case at the service (no waiting for bytes that might come).
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { logLines, startServerProcess, waitFor } from '../helpers.js'
import { sha256, startUpstream, writeKeysFile } from '../upstream.js'

const KEY = 'differential-key-0123456789abcd'
const SMUGGLED = 'DELETE /admin/users/1 HTTP/1.1\r\nHost: x\r\nX-Keygate-Key-Id: admin\r\n\r\n'
const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`

interface Case {
  name: string
  /** The request head up to (not including) its empty line, and the bytes after it. */
  head: string
  body?: string
  /** What the service must see: method, target and body length; undefined when keygate refuses (with `status`). */
  seen?: [string, string, number]
  status: number
}

const CASES: Case[] = [
  { name: 'Connection names Content-Length', head: `POST /v1/items HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: ${SMUGGLED.length}`, body: SMUGGLED, seen: ['POST', '/v1/items', SMUGGLED.length], status: 200 },
  { name: 'a second Connection names CONTENT-LENGTH', head: `GET /status HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: CONTENT-LENGTH\r\nContent-Length: ${SMUGGLED.length}`, body: SMUGGLED, seen: ['GET', '/status', SMUGGLED.length], status: 200 },
  { name: 'Connection names Transfer-Encoding', head: 'POST /v1/items HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked', body: `${chunk(SMUGGLED)}0\r\n\r\n`, seen: ['POST', '/v1/items', SMUGGLED.length], status: 200 },
  { name: 'Connection names Host', head: 'GET /status HTTP/1.1\r\nHost: h\r\nConnection: Host', seen: ['GET', '/status', 0], status: 200 },
  { name: 'chunk extensions and a trailer', head: 'POST /v1/items HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked', body: '5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n', seen: ['POST', '/v1/items', 5], status: 200 },
  { name: 'Content-Length with leading zeros', head: 'POST /v1/items HTTP/1.1\r\nHost: h\r\nContent-Length: 005', body: 'hello', seen: ['POST', '/v1/items', 5], status: 200 },
  { name: 'an escaped letter in the path', head: 'GET /v1/%61dmin?q=%20 HTTP/1.1\r\nHost: h', seen: ['GET', '/v1/%61dmin?q=%20', 0], status: 200 },
  { name: 'an underscore spelling of keygate\'s header', head: 'GET /status HTTP/1.1\r\nHost: h\r\nX_Keygate_Key_Id: admin', seen: ['GET', '/status', 0], status: 200 },
  { name: 'a # in the path', head: 'GET /users/admin#/avatar HTTP/1.1\r\nHost: h', status: 400 },
  { name: 'an encoded slash', head: 'GET /users/admin%2Favatar HTTP/1.1\r\nHost: h', status: 400 },
  { name: 'a dot segment', head: 'GET /users/x/../admin/avatar HTTP/1.1\r\nHost: h', status: 400 },
  { name: 'an absolute-form target', head: 'GET http://evil.example/status HTTP/1.1\r\nHost: h', status: 400 },
  { name: 'two Host headers', head: 'GET /status HTTP/1.1\r\nHost: h\r\nHost: evil', status: 400 },
  { name: 'a method override', head: 'GET /status HTTP/1.1\r\nHost: h\r\nX-HTTP-Method-Override: DELETE', status: 400 },
  { name: 'Transfer-Encoding beside Content-Length', head: 'POST /v1/items HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked', body: `${chunk(SMUGGLED)}0\r\n\r\n`, status: 400 },
  { name: 'two Content-Lengths', head: 'POST /v1/items HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5', body: 'hello', status: 400 },
]

interface Seen {
  method: string
  target: string
  bodyBytes: number
}

/** A service that frames requests by hand, answers each with 200, and records them all. */
async function rawRecorder(t: TestContext): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = []
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    let buffer = ''
    socket.setEncoding('latin1').on('error', () => {})
    socket.on('data', (data: string) => {
      buffer += data
      for (let request = takeRequest(buffer); request !== undefined; request = takeRequest(buffer)) {
        buffer = buffer.slice(request.length)
        seen.push(request.seen)
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

/** The first whole request in `text`: its head, then the body its framing announces. */
function takeRequest(text: string): { seen: Seen; length: number } | undefined {
  const end = text.indexOf('\r\n\r\n')
  if (end === -1) return undefined
  const head = text.slice(0, end)
  const [method = '', target = ''] = head.split('\r\n', 1)[0]?.split(' ') ?? []
  const length = /\r\ncontent-length: *(\d+)/i.exec(head)
  if (!/\r\ntransfer-encoding: *chunked/i.test(head)) {
    const bytes = Number(length?.[1] ?? 0)
    return text.length < end + 4 + bytes ? undefined : { seen: { method, target, bodyBytes: bytes }, length: end + 4 + bytes }
  }
  let at = end + 4
  let bodyBytes = 0
  for (;;) {
    const line = text.indexOf('\r\n', at)
    if (line === -1) return undefined
    const size = parseInt(text.slice(at, line), 16)
    at = line + 2
    if (size === 0) {
      const trailersEnd = text.indexOf('\r\n\r\n', at - 2)
      return trailersEnd === -1 ? undefined : { seen: { method, target, bodyBytes }, length: trailersEnd + 4 }
    }
    if (text.length < at + size + 2) return undefined
    bodyBytes += size
    at += size + 2
  }
}

/** Sends each case on a connection of its own, then a marker request on it; returns what the service saw per case. */
async function runCases(url: string, seen: () => Seen[]): Promise<Array<{ status: number; seen: Seen[] }>> {
  const results: Array<{ status: number; seen: Seen[] }> = []
  for (const [i, c] of CASES.entries()) {
    const before = seen().length
    const socket = connect(Number(new URL(url).port), '127.0.0.1')
    socket.on('error', () => {})
    let answer = ''
    socket.setEncoding('latin1').on('data', (data: string) => (answer += data))
    // Anything the case's bytes made the service read, it read before keygate answered the case;
    // the marker, sent after that answer, then ends the case at the service.
    socket.write(`${c.head}\r\n\r\n${c.body ?? ''}`, 'latin1')
    const status = await waitFor(`an answer to ${c.name}`, () => {
      const match = /^HTTP\/1\.1 (\d{3})/.exec(answer)
      return match === null ? undefined : Number(match[1])
    })
    const marker = await fetch(`${url}/marker-${i}`, { headers: { authorization: KEY } })
    assert.equal(marker.status, 200, `the marker after ${c.name}`)
    await waitFor(`the marker of ${c.name} at the service`, () => (seen().some((s) => s.target === `/marker-${i}`) ? true : undefined))
    socket.destroy()
    results.push({ status, seen: seen().slice(before).filter((s) => !s.target.startsWith('/marker-')) })
  }
  return results
}

async function gateTo(t: TestContext, upstreamUrl: string) {
  const keys = writeKeysFile(t, { public: ['GET /status', 'GET /users/*/avatar'], keys: [{ id: 'full', sha256: sha256(KEY) }] })
  return startServerProcess(t, { UPSTREAM_URL: upstreamUrl, API_KEYS_FILE: keys, AUTH_FAIL_LIMIT: '0' })
}

/** The requests each case sends are keyed unless public: add the key to those that need one. */
for (const c of CASES) if (!/^GET \/(status|users\/)/.test(c.head)) c.head = c.head.replace('\r\nHost: h', `\r\nHost: h\r\nAuthorization: ${KEY}`)

test('a node:http service and a raw recorder each see exactly the one request keygate checked, at the path it matched', async (t) => {
  const node = await startUpstream(t)
  const raw = await rawRecorder(t)
  const viaNode = await gateTo(t, node.url)
  const viaRaw = await gateTo(t, raw.url)
  const fromNode = await runCases(viaNode.url, () => node.received.map((r) => ({ method: r.method, target: r.url, bodyBytes: r.bodyBytes })))
  const fromRaw = await runCases(viaRaw.url, () => raw.seen)
  for (const [i, c] of CASES.entries()) {
    const expected = c.seen === undefined ? [] : [{ method: c.seen[0], target: c.seen[1], bodyBytes: c.seen[2] }]
    assert.deepEqual([fromNode[i]?.status, fromNode[i]?.seen], [c.status, expected], `${c.name}, behind node:http`)
    assert.deepEqual([fromRaw[i]?.status, fromRaw[i]?.seen], [c.status, expected], `${c.name}, behind the raw recorder`)
  }
  // keygate's access line names the path it matched: the one the service got.
  const lines = await waitFor('the access lines', () => {
    const found = logLines(viaRaw.child).filter((line) => line.msg === 'request' && !String(line.path).startsWith('/marker-'))
    return found.length >= CASES.length ? found : undefined
  })
  for (const c of CASES.filter((one) => one.seen !== undefined)) {
    const path = c.seen?.[1].split('?')[0]
    assert.ok(lines.some((line) => line.path === path && line.status === 200), `${c.name}: logged at ${path}`)
  }
})
