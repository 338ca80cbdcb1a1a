import assert from 'node:assert/strict'
import { once } from 'node:events'
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { Script } from 'node:vm'
import { DIST_DIR, logLines, runNode, startServerProcess, waitFor } from './helpers.js'
import { VERSION } from '../dist/version.js'

const STRONG_KEY = 's3cr3t-value-for-the-entry-point-test'

test('logs one listening line with the real URL for PORT=0, and serves /data', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: STRONG_KEY })
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)
  assert.notEqual(url, 'http://127.0.0.1:0')
  const res = await fetch(`${url}/data`, { headers: { authorization: STRONG_KEY } })
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { message: 'Here is your data' })
  const listening = logLines(child).filter((line) => line.msg === 'listening')
  assert.equal(listening.length, 1)
  assert.equal(listening[0]?.level, 'info')
  assert.equal(listening[0]?.version, VERSION)
  assert.equal(listening[0]?.node, process.version)
  assert.equal(child.stderr(), '')
})

test('without a key it serves the demo key 12345 and warns about it', async (t) => {
  const { child, url } = await startServerProcess(t, {})
  const res = await fetch(`${url}/data`, { headers: { authorization: '12345' } })
  assert.equal(res.status, 200)
  await res.arrayBuffer()
  const warning = logLines(child).find((line) => line.level === 'warn')
  assert.match(String(warning?.msg), /demo key/)
})

test('a short API_KEY starts with a warning that does not contain the key', async (t) => {
  const { child } = await startServerProcess(t, { API_KEY: 'tiny-key' })
  const warning = logLines(child).find((line) => line.level === 'warn')
  assert.match(String(warning?.msg), /shorter than 16/)
  assert.ok(!child.stdout().includes('tiny-key'))
})

for (const [name, env, variable] of [
  ['the demo key in production', { NODE_ENV: 'production' }, 'API_KEY'],
  ['PORT=abc', { PORT: 'abc' }, 'PORT'],
  ['PORT=70000', { PORT: '70000' }, 'PORT'],
  ['an empty API_KEY', { API_KEY: '' }, 'API_KEY'],
  ['an API_KEY with a space', { API_KEY: 'top secret' }, 'API_KEY'],
  ['an API_KEY with a control character', { API_KEY: 'top\u0007secret' }, 'API_KEY'],
  ['a negative HEADERS_TIMEOUT_MS', { HEADERS_TIMEOUT_MS: '-1' }, 'HEADERS_TIMEOUT_MS'],
  ['a negative REQUEST_TIMEOUT_MS', { REQUEST_TIMEOUT_MS: '-1' }, 'REQUEST_TIMEOUT_MS'],
  ['a negative KEEP_ALIVE_TIMEOUT_MS', { KEEP_ALIVE_TIMEOUT_MS: '-1' }, 'KEEP_ALIVE_TIMEOUT_MS'],
  ['a negative SHUTDOWN_TIMEOUT_MS', { SHUTDOWN_TIMEOUT_MS: '-1' }, 'SHUTDOWN_TIMEOUT_MS'],
  ['an unknown LOG_LEVEL', { LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
  ['a HOST that is not an address here', { HOST: '192.0.2.123', API_KEY: STRONG_KEY }, 'HOST'],
] as const) {
  test(`${name}: exit 1 with one stderr line naming ${variable}, no stack trace`, async (t) => {
    const child = runNode(t, { PORT: '0', ...env })
    assert.equal(await child.exited, 1)
    const lines = child.stderr().trimEnd().split('\n')
    assert.equal(lines.length, 1, child.stderr())
    assert.match(lines[0] ?? '', new RegExp(`^keygate: ${variable}\\b`))
    assert.doesNotMatch(child.stderr(), /\n\s+at /)
    assert.doesNotMatch(child.stderr(), /secret/)
  })
}

for (const workers of ['1', '2']) {
  test(`a port already in use, WORKERS=${workers}: exit 1 naming PORT, and nothing else on stderr`, async (t) => {
    const { url } = await startServerProcess(t, { API_KEY: STRONG_KEY })
    const child = runNode(t, { API_KEY: STRONG_KEY, PORT: new URL(url).port, WORKERS: workers })
    assert.equal(await child.exited, 1)
    assert.match(child.stderr(), /^keygate: PORT \d+ is already in use on 127\.0\.0\.1\n$/)
  })
}

test('runs from a copy of dist/ alone, with no package.json or node_modules around it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-dist-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(DIST_DIR, dir, { recursive: true })
  assert.ok(!readdirSync(dir).includes('node_modules'))
  const { url } = await startServerProcess(t, { API_KEY: STRONG_KEY }, join(dir, 'server.js'), dir)
  const res = await fetch(`${url}/data`, { headers: { authorization: STRONG_KEY } })
  assert.equal(res.status, 200)
  await res.arrayBuffer()
})

test('the V8 code cache built with dist/server-bundle.js is accepted by this Node', () => {
  const file = join(DIST_DIR, 'server-bundle.js')
  const script = new Script(readFileSync(file, 'utf8'), { filename: file, cachedData: readFileSync(join(DIST_DIR, 'server-bundle.cache')) })
  assert.equal(script.cachedDataRejected, false)
})

const DATA_REQUEST = `GET /data HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${STRONG_KEY}\r\n`

/**
 * Leaves a request in flight on a raw connection: one write holds a whole request and the start
 * of a second. Once the first response is back, the server has read the second one's beginning.
 */
async function startPartialRequest(url: string, partial = true) {
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  await once(socket, 'connect')
  let received = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => (received += chunk))
  const closed = once(socket, 'close')
  socket.write(`${DATA_REQUEST}\r\n${partial ? DATA_REQUEST : ''}`)
  await waitFor('the first response', () => (received.endsWith('{"message":"Here is your data"}') ? true : undefined))
  const firstLength = received.length
  return { socket, closed, second: () => received.slice(firstLength) }
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} with a request in flight: the request completes, then exit 0`, async (t) => {
    const { child, url } = await startServerProcess(t, { API_KEY: STRONG_KEY })
    const idle = await startPartialRequest(url, false) // one whole request; the second is never begun
    const request = await startPartialRequest(url)
    child.process.kill(signal)
    await waitFor('the shutdown line', () => logLines(child).find((line) => line.msg === 'shutting down'))
    await idle.closed // an idle keep-alive socket is closed without waiting for its timeout
    request.socket.write('\r\n')
    await request.closed
    assert.match(request.second(), /^HTTP\/1\.1 200 /)
    assert.match(request.second(), /\r\nconnection: close\r\n/i)
    assert.ok(request.second().endsWith('{"message":"Here is your data"}'))
    assert.equal(await child.exited, 0)
    assert.ok(logLines(child).some((line) => line.msg === 'stopped'))
  })
}

test('a request that never finishes: exit 1 once SHUTDOWN_TIMEOUT_MS passes', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: STRONG_KEY, SHUTDOWN_TIMEOUT_MS: '300' })
  const request = await startPartialRequest(url)
  child.process.kill('SIGTERM')
  assert.equal(await child.exited, 1)
  await request.closed
  assert.ok(logLines(child).some((line) => line.level === 'error' && String(line.msg).includes('shutdown timed out')))
})
