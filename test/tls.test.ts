import assert from 'node:assert/strict'
import { once } from 'node:events'
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type ConnectionOptions } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { test, type TestContext } from 'node:test'
import { DIST_DIR, TEST_KEY, runNode, startServerProcess, waitFor } from './helpers.js'

const fixture = (name: string) => fileURLToPath(new URL(`../test/fixtures/${name}`, import.meta.url))
const CERT_A = fixture('test-only-a.cert.pem')
const KEY_A = fixture('test-only-a.key.pem')
const CERT_B = fixture('test-only-b.cert.pem')
const KEY_B = fixture('test-only-b.key.pem')
const BOTH_CAS = [readFileSync(CERT_A), readFileSync(CERT_B)]

/** GET over HTTPS trusting the test-only certificates (fetch cannot be given a CA). */
async function httpsGet(url: string, path: string, headers: Record<string, string> = {}) {
  const req = request(`${url}${path}`, { ca: BOTH_CAS, headers })
  req.end()
  const [res] = (await once(req, 'response')) as [import('node:http').IncomingMessage]
  let body = ''
  for await (const chunk of res) body += chunk
  return { status: res.statusCode, body }
}

/** The SHA-256 fingerprint of the certificate the server presents. */
async function servedFingerprint(url: string, options: ConnectionOptions = {}): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(url).port), ca: BOTH_CAS, ...options })
  await once(socket, 'secureConnect')
  const fingerprint = socket.getPeerCertificate().fingerprint256
  socket.destroy()
  return fingerprint
}

function tempPair(t: TestContext): { certFile: string; keyFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-tls-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  copyFileSync(CERT_A, certFile)
  copyFileSync(KEY_A, keyFile)
  return { certFile, keyFile }
}

test('serves HTTPS with the certificate pair, and says https:// in the startup line', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_A })
  assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/)
  assert.deepEqual(await httpsGet(url, '/data', { authorization: TEST_KEY }), { status: 200, body: '{"message":"Here is your data"}' })
  assert.deepEqual(await httpsGet(url, '/data'), { status: 401, body: '{"error":"Unauthorized"}' })
})

test('refuses TLS 1.1 and accepts TLS 1.2', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_A })
  await assert.rejects(servedFingerprint(url, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }))
  assert.match(await servedFingerprint(url, { maxVersion: 'TLSv1.2' }), /^[0-9A-F:]+$/)
})

test('SIGHUP reloads a renewed certificate without a restart', async (t) => {
  const { certFile, keyFile } = tempPair(t)
  const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile })
  const before = await servedFingerprint(url)
  copyFileSync(CERT_B, certFile)
  copyFileSync(KEY_B, keyFile)
  child.process.kill('SIGHUP')
  await waitFor('the tls reload line', () => child.stdout().includes('"msg":"tls reloaded"') || undefined)
  const after = await servedFingerprint(url)
  assert.notEqual(after, before)
  assert.equal((await httpsGet(url, '/healthz')).status, 200)
})

test('an invalid new pair keeps the old certificate and logs an error', async (t) => {
  const { certFile, keyFile } = tempPair(t)
  const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile })
  const before = await servedFingerprint(url)
  copyFileSync(KEY_B, keyFile) // a key that does not match the certificate
  child.process.kill('SIGHUP')
  await waitFor('the tls reload error', () => child.stdout().includes('"msg":"tls reload failed') || undefined)
  assert.match(child.stdout(), /does not match the certificate/)
  assert.equal(await servedFingerprint(url), before)
  assert.equal((await httpsGet(url, '/healthz')).status, 200)
})

for (const [name, env, expected] of [
  ['only TLS_CERT_FILE', { TLS_CERT_FILE: CERT_A }, /^keygate: TLS_KEY_FILE is not set/],
  ['only TLS_KEY_FILE', { TLS_KEY_FILE: KEY_A }, /^keygate: TLS_CERT_FILE is not set/],
  ['a missing certificate', { TLS_CERT_FILE: '/nonexistent/cert.pem', TLS_KEY_FILE: KEY_A }, /^keygate: TLS_CERT_FILE \/nonexistent\/cert\.pem: file not found$/],
  ['a key that does not match', { TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_B }, /^keygate: TLS_KEY_FILE \S+: does not match the certificate/],
  ['a certificate that is not PEM', { TLS_CERT_FILE: fixture('README.md'), TLS_KEY_FILE: KEY_A }, /^keygate: TLS_CERT_FILE \S+: not a PEM certificate$/],
] as const) {
  test(`${name}: exit 1 with one line naming the variable`, async (t) => {
    const child = runNode(t, { PORT: '0', API_KEY: TEST_KEY, ...env })
    assert.equal(await child.exited, 1)
    const lines = child.stderr().trimEnd().split('\n')
    assert.equal(lines.length, 1, child.stderr())
    assert.match(lines[0] ?? '', expected)
  })
}

test('a private key file that is not PEM: exit 1 naming TLS_KEY_FILE', async (t) => {
  const { keyFile } = tempPair(t)
  writeFileSync(keyFile, 'not a key')
  const child = runNode(t, { PORT: '0', API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: keyFile })
  assert.equal(await child.exited, 1)
  assert.match(child.stderr(), /^keygate: TLS_KEY_FILE \S+: not a PEM private key/)
})

test('dist/server.js and its bundle run alone: with TLS and two workers, next to nothing but package.json', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bundle-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (const file of ['server.js', 'server-bundle.js', 'server-bundle.cache', 'package.json']) copyFileSync(join(DIST_DIR, file), join(dir, file))
  const env = { API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_A, WORKERS: '2' }
  const { url } = await startServerProcess(t, env, join(dir, 'server.js'), dir)
  assert.match(url, /^https:/)
  assert.deepEqual(await httpsGet(url, '/data', { authorization: TEST_KEY }), { status: 200, body: '{"message":"Here is your data"}' })
})

/** Open descriptors of a process (Linux /proc). */
const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length

test('HTTPS: connections that never start the handshake are closed after HEADERS_TIMEOUT_MS and leak no descriptor', async (t) => {
  const { child, url } = await startServerProcess(t, {
    API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_A, HEADERS_TIMEOUT_MS: '300', REQUEST_TIMEOUT_MS: '600',
  })
  const pid = child.process.pid as number
  const before = openFds(pid)
  const sockets = Array.from({ length: 20 }, () => netConnect(Number(new URL(url).port), '127.0.0.1').on('error', () => {}))
  t.after(() => sockets.forEach((socket) => socket.destroy()))
  // Each silent socket must be closed by the server itself: before the fix, none ever was.
  await Promise.all(sockets.map((socket) => Promise.race([
    once(socket, 'close'),
    new Promise((_, reject) => setTimeout(() => reject(new Error('the server kept a silent TLS connection open')), 5000).unref()),
  ])))
  await waitFor('the descriptors to be released', () => (openFds(pid) <= before ? true : undefined), 5000)
  assert.equal((await httpsGet(url, '/data', { authorization: TEST_KEY })).status, 200)
})

test('HTTPS: SIGTERM with a connection stuck before its handshake still drains and exits 0', async (t) => {
  const { child, url } = await startServerProcess(t, {
    API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_A, SHUTDOWN_TIMEOUT_MS: '5000',
  })
  const silent = netConnect(Number(new URL(url).port), '127.0.0.1').on('error', () => {})
  t.after(() => silent.destroy())
  await once(silent, 'connect')
  await waitFor('the server to hold the connection', () => (openFds(child.process.pid as number) > 0 ? true : undefined))
  child.process.kill('SIGTERM')
  // Before the fix the drain waited for the shutdown timeout and exited 1.
  assert.equal(await child.exited, 0)
})
