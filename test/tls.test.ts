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
import { spawnSync } from 'node:child_process'
import { certificateWarning, loadTlsPair } from '../dist/process/tls.js'
import { DIST_DIR, TEST_KEY, logLines, runNode, startServerProcess, waitFor } from './helpers.js'

const fixture = (name: string) => fileURLToPath(new URL(`../test/fixtures/${name}`, import.meta.url))
const CERT_A = fixture('test-only-a.cert.pem')
const KEY_A = fixture('test-only-a.key.pem')
const CERT_B = fixture('test-only-b.cert.pem')
const KEY_B = fixture('test-only-b.key.pem')
const BOTH_CAS = [readFileSync(CERT_A), readFileSync(CERT_B)]

/** GET over HTTPS trusting the test-only certificates (fetch cannot be given a CA). */
async function httpsGet(url: string, path: string, headers: Record<string, string> = {}, ca: Buffer[] = BOTH_CAS) {
  const req = request(`${url}${path}`, { ca, headers })
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

/** Seconds until expiry as /metrics says it, over HTTPS. */
async function certificateExpirySeconds(url: string, ca = BOTH_CAS): Promise<number> {
  const { body } = await httpsGet(url, '/metrics', { authorization: TEST_KEY }, ca)
  const line = body.split('\n').find((l) => l.startsWith('keygate_tls_certificate_expiry_seconds '))
  assert.ok(line !== undefined, 'the expiry gauge is in /metrics')
  return Number(line.split(' ')[1])
}

test('/metrics gives the seconds until the certificate expires', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: CERT_A, TLS_KEY_FILE: KEY_A })
  const expected = (Date.parse(loadTlsPair({ certFile: CERT_A, keyFile: KEY_A }).validTo) - Date.now()) / 1000
  assert.ok(Math.abs((await certificateExpirySeconds(url)) - expected) < 60)
  assert.ok(!logLines(child).some((line) => line.level === 'warn'), 'a certificate far from expiry gets no warning')
})

test('without TLS /metrics has no certificate series', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY })
  const body = await (await fetch(`${url}/metrics`, { headers: { authorization: TEST_KEY } })).text()
  assert.doesNotMatch(body, /keygate_tls_certificate_expiry_seconds/)
})

test('certificateWarning: expired, within 30 days, and not yet', () => {
  const pair = loadTlsPair({ certFile: CERT_A, keyFile: KEY_A })
  const expiry = Date.parse(pair.validTo)
  const day = 86_400_000
  assert.equal(certificateWarning(pair, 'a.pem', expiry - 31 * day), undefined)
  assert.equal(certificateWarning(pair, 'a.pem', expiry - 30 * day), `TLS_CERT_FILE a.pem: the certificate expires within 30 days, at ${pair.validTo}`)
  assert.equal(certificateWarning(pair, 'a.pem', expiry - 1), `TLS_CERT_FILE a.pem: the certificate expires within 30 days, at ${pair.validTo}`)
  assert.equal(certificateWarning(pair, 'a.pem', expiry), `TLS_CERT_FILE a.pem: the certificate expired at ${pair.validTo}`)
})

const OPENSSL = spawnSync('sh', ['-c', 'command -v openssl']).status === 0 || 'openssl is not installed: apt-get install openssl'
const NEEDS_OPENSSL = { skip: OPENSSL === true ? false : OPENSSL }

/** A self-signed pair for 127.0.0.1 that expires in 10 days, written over `certFile` and `keyFile`. */
function writeCertificateForTenDays(certFile: string, keyFile: string): void {
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '10',
    '-subj', '/CN=keygate-test-only-soon', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { encoding: 'utf8' })
  assert.equal(made.status, 0, made.stderr)
}

const SOON = /^TLS_CERT_FILE \S+: the certificate expires within 30 days, at \d{4}-/

for (const workers of ['1', '2']) {
  test(`WORKERS=${workers}: a certificate expiring within 30 days is served, with one startup warning`, NEEDS_OPENSSL, async (t) => {
    const { certFile, keyFile } = tempPair(t)
    writeCertificateForTenDays(certFile, keyFile)
    const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile, WORKERS: workers })
    const warnings = logLines(child).filter((line) => line.level === 'warn' && String(line.msg).includes('TLS_CERT_FILE'))
    assert.equal(warnings.length, 1, child.stdout())
    assert.match(String(warnings[0]?.msg), SOON)
    const seconds = await certificateExpirySeconds(url, [readFileSync(certFile)])
    assert.ok(seconds > 9 * 86_400 && seconds <= 10 * 86_400, `${seconds} s`)
  })
}

test('a reload moves the expiry gauge to the new certificate, and warns when it is close to expiry', NEEDS_OPENSSL, async (t) => {
  const { certFile, keyFile } = tempPair(t)
  const { child, url } = await startServerProcess(t, { API_KEY: TEST_KEY, TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile })
  assert.ok((await certificateExpirySeconds(url)) > 365 * 86_400)
  writeCertificateForTenDays(certFile, keyFile)
  const fresh = readFileSync(certFile)
  child.process.kill('SIGHUP')
  await waitFor('the tls reload line', () => child.stdout().includes('"msg":"tls reloaded"') || undefined)
  const warning = logLines(child).find((line) => line.level === 'warn')
  assert.match(String(warning?.msg), SOON)
  // The new certificate is self-signed by another key: trust it alone now.
  const seconds = await certificateExpirySeconds(url, [fresh])
  assert.ok(seconds > 9 * 86_400 && seconds <= 10 * 86_400, `${seconds} s`)
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
