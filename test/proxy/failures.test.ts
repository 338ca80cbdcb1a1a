/** Proxy mode when things go wrong, and at scale: 502/504, cut connections, retries, tunnels, 1 GiB bodies, TLS, cluster, shutdown. */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { freePort, logLines, startServerProcess, waitFor } from '../helpers.js'
import { startUpstream, type Behaviour } from '../upstream.js'

const KEY = 'proxy-failure-key-0123456789abc'
const fixture = (name: string) => fileURLToPath(new URL(`../../test/fixtures/${name}`, import.meta.url))

async function keygateFor(t: TestContext, upstreamUrl: string, env: Record<string, string> = {}) {
  return startServerProcess(t, { UPSTREAM_URL: upstreamUrl, API_KEY: KEY, ...env })
}

async function proxied(t: TestContext, behaviour: Behaviour, env: Record<string, string> = {}) {
  const upstream = await startUpstream(t, behaviour)
  return { upstream, ...(await keygateFor(t, upstream.url, env)) }
}

const get = (url: string, init: RequestInit = {}) => fetch(url, { ...init, headers: { authorization: KEY, ...init.headers } })

test('the service unreachable: 502; no answer head within UPSTREAM_TIMEOUT_MS: 504', async (t) => {
  const closed = await freePort()
  const { url, child } = await keygateFor(t, `http://127.0.0.1:${closed}`)
  const refused = await get(`${url}/x`)
  assert.deepEqual([refused.status, await refused.text()], [502, '{"error":"Bad Gateway"}'])
  const slow = await proxied(t, (_req, res) => setTimeout(() => res.end('late'), 2_000), { UPSTREAM_TIMEOUT_MS: '200' })
  const timedOut = await get(`${slow.url}/x`)
  assert.deepEqual([timedOut.status, await timedOut.text()], [504, '{"error":"Gateway Timeout"}'])
  const line = await waitFor('the 502 line', () => logLines(child).find((entry) => entry.status === 502))
  assert.equal(line.upstreamError, 'connect')
  const metrics = await (await get(`${slow.url}/_keygate/metrics`)).text()
  assert.match(metrics, /^keygate_upstream_errors_total\{kind="timeout"\} 1$/m)
})

test('a reset before the head is 502; a reset after it cuts the client\'s connection (never a short body passed off as whole)', async (t) => {
  const before = await proxied(t, (req) => req.socket.destroy())
  assert.equal((await get(`${before.url}/x`)).status, 502)
  const after = await proxied(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '100000' })
    res.write('x'.repeat(1000), () => setTimeout(() => res.socket?.destroy(), 20))
  })
  const res = await get(`${after.url}/x`)
  assert.equal(res.status, 200)
  await assert.rejects(res.text(), 'the body fails instead of ending short')
})

test('a service answering with a malformed head or a header Node will not pass on gets 502, and keygate keeps serving', async (t) => {
  const { createServer } = await import('node:net')
  const answers = ['HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok', 'HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nok', 'HTTX/9 200\r\n\r\n']
  let next = 0
  const service = createServer((socket) => socket.once('data', () => socket.end(answers[next++ % answers.length] ?? ""))).listen(0, '127.0.0.1')
  await once(service, 'listening')
  t.after(() => service.close())
  const { url, child } = await keygateFor(t, `http://127.0.0.1:${(service.address() as { port: number }).port}`)
  for (let i = 0; i < answers.length; i++) assert.equal((await get(`${url}/x${i}`)).status, 502)
  assert.equal((await get(`${url}/_keygate/healthz`)).status, 200)
  const lines = await waitFor('the access lines', () => {
    const found = logLines(child).filter((line) => line.status === 502)
    return found.length >= 3 ? found : undefined
  })
  assert.deepEqual(lines.map((line) => line.upstreamError), ['bad_answer', 'bad_answer', 'bad_answer'])
})

test('a client that goes away aborts its upstream request', async (t) => {
  let upstreamClosed: (() => void) | undefined
  const closedSeen = new Promise<void>((resolve) => (upstreamClosed = resolve))
  const { url } = await proxied(t, (req) => req.socket.once('close', () => upstreamClosed?.()))
  const controller = new AbortController()
  const pending = get(`${url}/slow`, { signal: controller.signal }).catch(() => 'aborted')
  await new Promise((resolve) => setTimeout(resolve, 200))
  controller.abort()
  assert.equal(await pending, 'aborted')
  await closedSeen // the upstream connection is closed: it does not wait for an answer nobody reads
})

test('a reused connection closed by the service is retried once for GET and HEAD only', async (t) => {
  // Every second request on a connection finds it closed, as a service's keep-alive timeout would.
  const seen = new WeakMap<object, number>()
  const upstream = await startUpstream(t, (req, res) => {
    const count = (seen.get(req.socket) ?? 0) + 1
    seen.set(req.socket, count)
    if (count === 2) return req.socket.destroy()
    res.end('ok')
  })
  const { url } = await keygateFor(t, upstream.url)
  assert.equal((await get(`${url}/a`)).status, 200, 'a new connection')
  assert.equal((await get(`${url}/p`, { method: 'POST', body: 'x' })).status, 502, 'POST on the reused one: never sent twice')
  assert.equal((await get(`${url}/b`)).status, 200, 'a new connection again')
  const retried = await get(`${url}/c`)
  assert.deepEqual([retried.status, await retried.text()], [200, 'ok'], 'GET on the reused one: retried on a new connection')
  const count = (path: string) => upstream.received.filter((r) => r.url === path).length
  assert.deepEqual([count('/p'), count('/c')], [1, 2])
})

function upgradeRequest(port: number, key: string | undefined): Promise<{ socket: Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let head = ''
    socket.setEncoding('latin1')
    const onData = (chunk: string) => {
      head += chunk
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      resolve({ socket, head })
    }
    socket.on('data', onData).on('error', reject)
    socket.write(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${key === undefined ? '' : `Authorization: ${key}\r\n`}\r\n`)
  })
}

test('WebSocket: an upgrade with a valid key is tunnelled both ways; without one, 401 and no upstream connection', async (t) => {
  const upstream = await startUpstream(t, undefined, (req, socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Key-Id: ${String(req.headers['x-keygate-key-id'])}\r\n\r\n`)
    socket.pipe(socket) // echo
  })
  const { url } = await keygateFor(t, upstream.url)
  const port = Number(new URL(url).port)
  const refused = await upgradeRequest(port, undefined)
  assert.match(refused.head, /^HTTP\/1\.1 401 /)
  await once(refused.socket, 'close')
  assert.equal(upstream.connections(), 0)
  const { socket, head } = await upgradeRequest(port, KEY)
  assert.match(head, /^HTTP\/1\.1 101 /)
  assert.match(head, /X-Key-Id: env/)
  assert.match(head, /\r\nUpgrade: websocket\r\n/i)
  socket.write('ping over the tunnel')
  const [echoed] = await once(socket, 'data')
  assert.equal(echoed, 'ping over the tunnel')
  socket.destroy()
})

function rssKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
}

const GiB = 1024 * 1024 * 1024

/** Writes 1 GiB in 1 MiB chunks, waiting for 'drain' whenever the stream asks to: the sender's side of backpressure. */
function writeGiB(stream: { write(chunk: Buffer): boolean; once(event: 'drain', listener: () => void): unknown; end(): unknown }): void {
  const chunk = Buffer.alloc(1024 * 1024, 'x')
  let sent = 0
  const pump = () => {
    while (sent < GiB) {
      sent += chunk.length
      if (!stream.write(chunk)) return void stream.once('drain', pump)
    }
    stream.end()
  }
  pump()
}

test('1 GiB down and 1 GiB up stream through with backpressure: keygate\'s RSS grows by less than 50 MB', { timeout: 180_000 }, async (t) => {
  const upstream = await startUpstream(t, (req, res) => {
    if (req.method === 'POST') return res.end(String(req.socket.bytesRead))
    res.writeHead(200, { 'content-length': String(GiB) })
    writeGiB(res)
  })
  const { url, child } = await keygateFor(t, upstream.url, { MAX_BODY_BYTES: '0' })
  const pid = child.process.pid as number
  await (await get(`${url}/warm`)).arrayBuffer()
  const baselineKb = rssKb(pid, 'VmRSS')
  let downloaded = 0
  for await (const part of (await get(`${url}/big`)).body ?? []) downloaded += (part as Uint8Array).length
  assert.equal(downloaded, GiB)
  const uploaded = await new Promise<string>((resolve, reject) => {
    const req = request(`${url}/upload`, { method: 'POST', headers: { authorization: KEY, 'content-length': String(GiB) } }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text))
    })
    req.on('error', reject)
    writeGiB(req)
  })
  assert.ok(Number(uploaded) >= GiB, `the service received ${uploaded} bytes`)
  const growthMb = (rssKb(pid, 'VmHWM') - baselineKb) / 1024
  t.diagnostic(`1 GiB each way; keygate's peak RSS grew by ${growthMb.toFixed(1)} MB`)
  assert.ok(growthMb < 50, `peak RSS grew by ${growthMb.toFixed(1)} MB`)
})

test('an https:// upstream, trusted through NODE_EXTRA_CA_CERTS; TLS on the client side; WORKERS=2', async (t) => {
  const { createServer } = await import('node:https')
  const service = createServer({ cert: readFileSync(fixture('test-only-a.cert.pem')), key: readFileSync(fixture('test-only-a.key.pem')) }, (req, res) => res.end(`secure ${req.url}`))
  service.listen(0, '127.0.0.1')
  await once(service, 'listening')
  t.after(() => service.close())
  const address = `https://localhost:${(service.address() as { port: number }).port}`
  const trusted = await keygateFor(t, address, { NODE_EXTRA_CA_CERTS: fixture('test-only-a.cert.pem'), WORKERS: '2' })
  for (let i = 0; i < 4; i++) assert.equal(await (await get(`${trusted.url}/p${i}`)).text(), `secure /p${i}`)
  const untrusted = await keygateFor(t, address)
  assert.equal((await get(`${untrusted.url}/p`)).status, 502, 'an unknown CA is refused')
  const refusal = await waitFor('the 502 line', () => logLines(untrusted.child).find((line) => line.status === 502))
  assert.equal(refusal.upstreamError, 'tls', 'the log names the real cause, not a reset')
  assert.match(String(refusal.upstreamErrorCode), /^[A-Z_]+$/, 'with Node\'s code of the certificate error')
  const upstream = await startUpstream(t)
  const tls = await keygateFor(t, upstream.url, { TLS_CERT_FILE: fixture('test-only-b.cert.pem'), TLS_KEY_FILE: fixture('test-only-b.key.pem'), NODE_EXTRA_CA_CERTS: fixture('test-only-b.cert.pem') })
  const { request: httpsRequest } = await import('node:https')
  const body = await new Promise<string>((resolve, reject) => {
    httpsRequest(`${tls.url}/over-tls`, { ca: readFileSync(fixture('test-only-b.cert.pem')), headers: { authorization: KEY } }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text))
    }).on('error', reject).end()
  })
  assert.equal(JSON.parse(body).url, '/over-tls')
  assert.equal(upstream.header('x-forwarded-proto'), 'https')
})

test('SIGTERM drains a slow upload in progress: it finishes and the process exits 0', async (t) => {
  const upstream = await startUpstream(t, (_req, res, received) => res.end(`got ${received.bodyBytes}`))
  const { url, child } = await keygateFor(t, upstream.url)
  const answer = new Promise<string>((resolve, reject) => {
    const req = request(`${url}/upload`, { method: 'POST', headers: { authorization: KEY, 'content-length': '30' } }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text))
    })
    req.on('error', reject)
    req.write('0123456789')
    setTimeout(() => child.process.kill('SIGTERM'), 200)
    setTimeout(() => req.write('0123456789'), 400)
    setTimeout(() => req.end('0123456789'), 600)
  })
  assert.equal(await answer, 'got 30')
  assert.equal(await child.exited, 0)
})
