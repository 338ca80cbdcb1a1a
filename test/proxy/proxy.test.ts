/** Proxy mode (`UPSTREAM_URL`): what is forwarded, what never reaches the service, keygate's own routes. */
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test, type TestContext } from 'node:test'
import { logLines, rawRequest, startServerProcess, waitFor } from '../helpers.js'
import { sha256, startUpstream, writeKeysFile, type Behaviour } from '../upstream.js'

const KEY = 'proxy-key-0123456789abcdefghij'
const SCOPED = 'proxy-scoped-0123456789abcdefgh'
const LIMITED = 'proxy-limited-0123456789abcdefg'

async function proxyTo(t: TestContext, behaviour?: Behaviour, env: Record<string, string> = {}, base = '') {
  const upstream = await startUpstream(t, behaviour)
  const keys = writeKeysFile(t, {
    public: ['GET /open/**'],
    keys: [
      { id: 'full', sha256: sha256(KEY) },
      { id: 'scoped', sha256: sha256(SCOPED), allow: ['GET /v1/reports/*'] },
      { id: 'limited', sha256: sha256(LIMITED), rateLimit: { limit: 1, windowS: 60, burst: 2 } },
    ],
  })
  const { child, url } = await startServerProcess(t, { UPSTREAM_URL: upstream.url + base, API_KEYS_FILE: keys, AUTH_FAIL_LIMIT: '100', ...env })
  return { upstream, child, url }
}

test('forwards method, path and query after the base path, the headers as received less hop-by-hop ones and the credential', async (t) => {
  const { upstream, url } = await proxyTo(t, undefined, { TRUST_PROXY: '1' }, '/base/')
  const answer = rawRequest(url, Buffer.from([
    'PATCH /v1/items/7?sort=desc&x=%20 HTTP/1.1',
    'Host: api.example.test',
    'Authorization: Bearer ' + KEY,
    'X-API-Key: another-credential',
    'X-Keygate-Key-Id: forged',
    'Connection: close, X-Hop-Secret',
    'X-Hop-Secret: for-this-hop-only',
    'Keep-Alive: timeout=5',
    'Proxy-Connection: keep-alive',
    'TE: trailers',
    'Trailer: X-Checksum',
    'X-Forwarded-For: 203.0.113.7, 198.51.100.2',
    'X-Forwarded-Proto: gopher',
    'X-Custom: One',
    'x-custom: two',
    'X-Latin: caf\u00e9', // one byte, 0xE9: obs-text, passed on as the same byte
    'Content-Length: 5',
    '',
    'hello',
  ].join('\r\n'), 'latin1'), 5000, false)
  assert.match(await answer, /^HTTP\/1\.1 200 OK/)
  const [received] = upstream.received
  assert.equal(received?.method, 'PATCH')
  assert.equal(received?.url, '/base/v1/items/7?sort=desc&x=%20')
  assert.equal(received?.bodyBytes, 5)
  for (const gone of ['authorization', 'x-api-key', 'x-hop-secret', 'keep-alive', 'proxy-connection', 'te', 'trailer']) assert.equal(upstream.header(gone), undefined, gone)
  assert.equal(upstream.header('x-keygate-key-id'), 'full', 'keygate\'s, not the forged one')
  assert.equal(upstream.header('host'), 'api.example.test')
  assert.equal(upstream.header('x-forwarded-host'), 'api.example.test')
  assert.equal(upstream.header('x-forwarded-proto'), 'http')
  assert.equal(upstream.header('x-forwarded-for'), '198.51.100.2, 127.0.0.1', 'the one trusted hop, then the peer')
  assert.match(upstream.header('x-request-id') ?? '', /^[0-9a-f]{32}$/)
  const raw = received?.rawHeaders ?? []
  assert.deepEqual(raw.filter((_, i) => i % 2 === 0 && /custom/i.test(raw[i] ?? '')), ['X-Custom', 'x-custom'], 'case and repeats kept')
  assert.equal(upstream.header('x-latin'), 'caf\u00e9', 'the byte as sent, not re-encoded as UTF-8')
})

test('the service\'s answer comes back as it is, less hop-by-hop fields, with RateLimit headers and X-Request-Id', async (t) => {
  const { url } = await proxyTo(t, (_req, res) => {
    res.writeHead(201, [['X-Service', 'yes'], ['Connection', 'X-Private'], ['X-Private', 'hop'], ['Keep-Alive', 'timeout=9'], ['Set-Cookie', 'a=1'], ['Set-Cookie', 'b=2']].flat())
    res.end('created')
  })
  const res = await fetch(`${url}/v1/things`, { method: 'POST', body: 'x', headers: { authorization: LIMITED, 'x-request-id': 'client-chosen-id' } })
  assert.equal(res.status, 201)
  assert.equal(await res.text(), 'created')
  assert.equal(res.headers.get('x-service'), 'yes')
  assert.equal(res.headers.get('x-private'), null)
  assert.equal(res.headers.get('keep-alive')?.includes('timeout=9') ?? false, false)
  assert.deepEqual(res.headers.getSetCookie(), ['a=1', 'b=2'])
  assert.equal(res.headers.get('ratelimit-policy'), '"key";q=1;w=60')
  assert.equal(res.headers.get('ratelimit'), '"key";r=1;t=60')
  assert.equal(res.headers.get('x-request-id'), 'client-chosen-id')
})

test('refusals never reach the service: 400, 401, 403, 413, 429 and /_keygate/ paths', async (t) => {
  const { upstream, url } = await proxyTo(t)
  const status = async (path: string, init: RequestInit = {}) => (await fetch(url + path, init)).status
  assert.equal(await status('/v1/a%2Fb', { headers: { authorization: KEY } }), 400)
  assert.equal(await status('/v1/x'), 401)
  assert.equal(await status('/v1/x', { headers: { authorization: 'wrong-key' } }), 401)
  assert.equal(await status('/v1/orders', { headers: { authorization: SCOPED } }), 403)
  assert.equal(await status('/v1/upload', { method: 'POST', body: 'x'.repeat(1024 * 1024 + 1), headers: { authorization: KEY } }), 413)
  assert.deepEqual([await status('/l', { headers: { authorization: LIMITED } }), await status('/l', { headers: { authorization: LIMITED } }), await status('/l', { headers: { authorization: LIMITED } })], [200, 200, 429])
  assert.equal(await status('/_keygate/data', { headers: { authorization: KEY } }), 404)
  assert.equal(upstream.received.length, 2, 'only the two allowed requests of the limited key')
  const connections = upstream.connections()
  assert.equal(await status('/v1/reports/q3', { headers: { authorization: SCOPED } }), 200, 'the scope allows this one')
  assert.equal(await status('/open/docs'), 200, 'public rule: no key')
  assert.equal(upstream.header('x-keygate-key-id'), undefined, 'a public request has no key id')
  assert.ok(upstream.connections() <= connections + 1, 'connections to the service are reused')
})

test('keygate\'s own routes move under /_keygate/; /data, /healthz, /metrics and /auth belong to the service', async (t) => {
  const { upstream, url } = await proxyTo(t)
  assert.equal((await fetch(`${url}/_keygate/healthz`)).status, 200)
  assert.equal((await fetch(`${url}/_keygate/metrics`)).status, 401)
  for (const path of ['/data', '/healthz', '/metrics', '/auth']) {
    const res = await fetch(url + path, { headers: { authorization: KEY } })
    assert.equal(((await res.json()) as { url: string }).url, path)
  }
  const metrics = await (await fetch(`${url}/_keygate/metrics`, { headers: { authorization: KEY } })).text()
  assert.match(metrics, /^keygate_upstream_responses_total\{class="2xx"\} 4$/m)
  assert.match(metrics, /^keygate_requests_total\{route="proxy",status="200"\} 4$/m)
  assert.equal(upstream.received.length, 4)
})

test('Expect: 100-continue: 100 only once the checks pass; a refused client is answered before it sends its body', async (t) => {
  const { upstream, url } = await proxyTo(t)
  const { port } = new URL(url)
  const exchange = (key: string) =>
    new Promise<string>((resolve) => {
      const socket = connect(Number(port), '127.0.0.1')
      let seen = ''
      socket.setEncoding('latin1').on('data', (chunk: string) => {
        seen += chunk
        // The body goes only after the interim answer, as a client that waits does.
        if (seen.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !seen.includes('HTTP/1.1 2')) socket.write('12345')
        if (/HTTP\/1\.1 [2-5]\d\d /.test(seen) && seen.includes('\r\n\r\n', seen.search(/HTTP\/1\.1 [2-5]\d\d /))) setTimeout(() => socket.destroy(), 50)
      })
      socket.on('close', () => resolve(seen))
      socket.write(`PUT /v1/doc HTTP/1.1\r\nHost: x\r\nAuthorization: ${key}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`)
    })
  const refused = await exchange('wrong-key')
  assert.match(refused, /^HTTP\/1\.1 401 Unauthorized/, 'no 100 Continue for a refused client')
  assert.equal(upstream.received.length, 0)
  const allowed = await exchange(KEY)
  assert.match(allowed, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK/)
  assert.equal(upstream.received[0]?.bodyBytes, 5)
  assert.equal(upstream.header('expect'), undefined, 'keygate answered the expectation itself')
})

test('a 413 decided from Content-Length is the client\'s refusal: no upstream fields, no upstream error counted', async (t) => {
  const { upstream, url, child } = await proxyTo(t)
  const res = await fetch(`${url}/v1/upload`, { method: 'POST', body: 'x'.repeat(1024 * 1024 + 1), headers: { authorization: KEY } })
  assert.equal(res.status, 413)
  const line = await waitFor('the 413 line', () => logLines(child).find((entry) => entry.status === 413))
  assert.deepEqual([line.upstreamError, line.upstreamMs, line.upstreamStatus], [undefined, undefined, undefined])
  const metrics = await (await fetch(`${url}/_keygate/metrics`, { headers: { authorization: KEY } })).text()
  assert.match(metrics, /^keygate_upstream_errors_total\{kind="body_too_large"\} 0$/m, 'present at zero, never counted')
  assert.equal(upstream.connections(), 0)
})

test('each proxied request is one access line with upstreamStatus and upstreamMs', async (t) => {
  const { child, url } = await proxyTo(t, (_req, res) => {
    res.statusCode = 418
    res.end()
  })
  await (await fetch(`${url}/teapot?secret=no`, { headers: { authorization: KEY } })).arrayBuffer()
  const line = await waitFor('the access line', () => logLines(child).find((entry) => entry.path === '/teapot'))
  assert.equal(line.status, 418)
  assert.equal(line.upstreamStatus, 418)
  assert.equal(typeof line.upstreamMs, 'number')
  assert.equal(line.keyId, 'full')
  assert.ok(!JSON.stringify(line).includes('secret=no'), 'no query string in the log')
})

test('a bad UPSTREAM_URL stops startup with one line', async (t) => {
  const { runNode } = await import('../helpers.js')
  for (const [value, message] of [['ftp://x', /UPSTREAM_URL must start with http:\/\/ or https:\/\//], ['http://u:p@x', /must not hold a user or password/], ['not a url', /UPSTREAM_URL must be a URL/]] as const) {
    const child = runNode(t, { UPSTREAM_URL: value, API_KEY: KEY })
    assert.equal(await child.exited, 1)
    assert.match(child.stderr(), message)
    assert.equal(child.stderr().trim().split('\n').length, 1)
  }
})

test('a chunked body that grows past MAX_BODY_BYTES on the way is cut: 413, and the service\'s request is aborted', async (t) => {
  let aborted = false
  const { upstream, url } = await proxyTo(t, undefined, { MAX_BODY_BYTES: '65536' })
  upstream.server.on('request', (req) => req.on('aborted', () => (aborted = true)).on('close', () => (aborted ||= !req.complete)))
  const chunk = new Uint8Array(16 * 1024)
  let sent = 0
  const body = new ReadableStream({
    pull(controller) {
      if (sent >= 40) return controller.close()
      sent++
      controller.enqueue(chunk)
    },
  })
  const res = await fetch(`${url}/v1/upload`, { method: 'POST', body, headers: { authorization: KEY }, duplex: 'half' } as RequestInit).catch((error: Error) => error)
  if (!(res instanceof Error)) assert.equal(res.status, 413)
  await waitFor('the service to see its request cut', () => (aborted ? true : undefined))
  assert.ok((upstream.received[0]?.bodyBytes ?? 0) <= 65536 + 16 * 1024 * 2, 'little more than the limit reached the service')
})
