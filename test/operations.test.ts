import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { test, type TestContext } from 'node:test'
import { createLogger } from '../dist/observe/log.js'
import { freePort, logLines, runNode, startServerProcess, waitFor } from './helpers.js'

const KEY = 'operations-key-0123456789abcdef'
const LOAD_CLIENT = fileURLToPath(new URL('./load-client.js', import.meta.url))

async function status(url: string, headers: Record<string, string> = { authorization: KEY }, path = '/data', method = 'GET') {
  const res = await fetch(`${url}${path}`, { headers, method })
  await res.arrayBuffer()
  return res.status
}

/** Parses Prometheus text format 0.0.4 strictly enough to catch malformed output. */
function parseMetrics(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed')
  const samples = new Map<string, number>()
  const typed = new Map<string, string>()
  for (const line of text.trimEnd().split('\n')) {
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line)
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line)
    if (help) continue
    if (type) {
      assert.ok(!typed.has(type[1] ?? ''), `one TYPE line per family: ${type[1]}`)
      typed.set(type[1] ?? '', type[2] ?? '')
      continue
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/.exec(line)
    assert.ok(sample, `not a valid sample line: ${JSON.stringify(line)}`)
    const name = sample[1] ?? ''
    const family = name.replace(/_(bucket|sum|count)$/, '')
    assert.ok(typed.has(name) || typed.get(family) === 'histogram', `sample before its TYPE: ${name}`)
    samples.set(`${name}${sample[2] ?? ''}`, Number(sample[3]))
  }
  return samples
}

async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: KEY } })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8')
  return parseMetrics(await res.text())
}

/** Sends a known mix of requests and checks that the scrape counts exactly them. */
async function assertCountsMatch(url: string, expectedWorkers: number) {
  for (let i = 0; i < 6; i++) assert.equal(await status(url), 200)
  for (let i = 0; i < 3; i++) assert.equal(await status(url, { authorization: 'wrong' }), 401)
  assert.equal(await status(url, {}), 401)
  assert.equal(await status(url, {}, '/nowhere'), 404)
  assert.equal(await status(url, {}, '/data', 'POST'), 405)
  assert.equal(await status(url, {}, '/healthz'), 200)
  const m = await scrape(url)
  assert.equal(m.get('keygate_requests_total{route="data",status="200"}'), 6)
  assert.equal(m.get('keygate_requests_total{route="data",status="401"}'), 4)
  assert.equal(m.get('keygate_requests_total{route="data",status="405"}'), 1)
  assert.equal(m.get('keygate_requests_total{route="other",status="404"}'), 1)
  assert.equal(m.get('keygate_requests_total{route="healthz",status="200"}'), 1)
  assert.equal(m.get('keygate_auth_failures_total{reason="invalid"}'), 3)
  assert.equal(m.get('keygate_auth_failures_total{reason="missing"}'), 1)
  assert.equal(m.get('keygate_keys_loaded'), 1)
  assert.equal(m.get('keygate_workers'), expectedWorkers)
  // The scrape itself is counted by the worker that answered it, before its own snapshot.
  const answered = 6 + 4 + 1 + 1 + 1 + (m.get('keygate_requests_total{route="metrics",status="200"}') ?? 0)
  // The histogram is by route: /data's answers in its own, and the routes add up to every answer.
  assert.equal(m.get('keygate_request_duration_seconds_count{route="data"}'), 6 + 4 + 1)
  assert.equal(m.get('keygate_request_duration_seconds_bucket{route="data",le="+Inf"}'), 6 + 4 + 1)
  assert.equal(m.get('keygate_request_duration_seconds_count{route="healthz"}'), 1)
  const counted = [...m].filter(([name]) => name.startsWith('keygate_request_duration_seconds_count{')).reduce((sum, [, n]) => sum + n, 0)
  assert.equal(counted, answered)
  let previous = 0
  for (const [name, value] of m) {
    if (!name.startsWith('keygate_request_duration_seconds_bucket{route="data"')) continue
    assert.ok(value >= previous, 'buckets are cumulative')
    previous = value
  }
  assert.equal(previous, 6 + 4 + 1, 'the last bucket is +Inf')
  assert.ok((m.get('keygate_request_duration_seconds_sum{route="data"}') ?? 0) > 0)
  assert.ok((m.get('process_resident_memory_bytes') ?? 0) > 10_000_000)
  assert.ok((m.get('keygate_uptime_seconds') ?? -1) >= 0)
  // The standard process series, with the meaning of the Prometheus client conventions.
  assert.ok((m.get('process_cpu_seconds_total') ?? 0) > 0)
  assert.ok((m.get('process_open_fds') ?? 0) >= 3 * expectedWorkers, 'stdin, stdout, stderr at least')
  assert.ok((m.get('process_max_fds') ?? 0) >= (m.get('process_open_fds') ?? Infinity) / expectedWorkers)
  assert.ok((m.get('nodejs_eventloop_lag_seconds') ?? -1) >= 0 && (m.get('nodejs_eventloop_lag_seconds') ?? 1) < 1)
  assert.ok((m.get('nodejs_eventloop_lag_p99_seconds') ?? -1) >= 0)
  // Known labels are there at zero before anything happened.
  assert.equal(m.get('keygate_upstream_errors_total{kind="connect"}'), 0)
  assert.equal(m.get('keygate_upstream_responses_total{class="5xx"}'), 0)
  assert.equal(m.get('keygate_client_errors_total{status="408"}'), 0)
}

test('/metrics needs a key and counts exactly the requests sent', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: KEY })
  await assertCountsMatch(url, 1)
  assert.equal(await status(url, {}, '/metrics'), 401)
  assert.equal(await status(url, { authorization: 'wrong' }, '/metrics'), 401)
})

test('/metrics with WORKERS=2 is the sum over both workers', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: KEY, WORKERS: '2' })
  assert.equal(logLines(child).filter((line) => line.msg === 'worker started').length, 2)
  await assertCountsMatch(url, 2)
})

test('LOG_LEVEL=info writes exactly one access line per request, and never a credential or query', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: KEY })
  await status(url, { authorization: KEY }, '/data?api_key=leaked-in-query')
  await status(url, { authorization: `Bearer ${KEY}` })
  await status(url, { 'x-api-key': KEY })
  await status(url, { authorization: 'Bearer wrong-guess-value' })
  await status(url, { 'x-api-key': 'another-wrong-guess' })
  await waitFor('five access lines', () => (logLines(child).filter((line) => line.msg === 'request').length >= 5 ? true : undefined))
  const access = logLines(child).filter((line) => line.msg === 'request')
  assert.equal(access.length, 5)
  for (const line of access) {
    assert.deepEqual(Object.keys(line).filter((k) => !['keyId', 'reason'].includes(k)), ['time', 'level', 'msg', 'method', 'path', 'status', 'ms', 'client', 'requestId'])
    assert.equal(line.path, '/data')
  }
  for (const secret of [KEY, 'leaked-in-query', 'wrong-guess-value', 'another-wrong-guess']) {
    assert.ok(!child.stdout().includes(secret) && !child.stderr().includes(secret), 'a secret reached the output')
  }
})

test('LOG_LEVEL=silent writes nothing at all, even while serving', async (t) => {
  const port = await freePort()
  const child = runNode(t, { API_KEY: KEY, PORT: String(port), LOG_LEVEL: 'silent' })
  // Silent hides the listening line: poll the port the server was given.
  const url = `http://127.0.0.1:${port}`
  await waitFor('the server to answer', () => status(url, {}, '/healthz').then((s) => (s === 200 ? true : undefined), () => undefined))
  assert.equal(await status(url), 200)
  assert.equal(await status(url, { authorization: 'wrong' }), 401)
  child.process.kill('SIGTERM')
  assert.equal(await child.exited, 0)
  assert.equal(child.stdout() + child.stderr(), '')
})

test('access lines are valid JSON whatever the path and key id, with ms as JavaScript prints it to three decimals', () => {
  let written = ''
  const log = createLogger({ level: 'info', write: (chunk) => (written += chunk) })
  const cases = [
    { path: '/data', keyId: 'ci-2026', ms: 0.0004 },
    { path: '/a"b\\c', keyId: 'k', ms: 0.0125 },
    { path: '/tab\there\u0001', keyId: 'odd"id', ms: 7 },
    { path: '/\u00e9t\u00e9', keyId: 'k', ms: 1234.5678 },
    { path: '/data', keyId: 'k', ms: 0.31 },
    { path: '/data', keyId: 'k', ms: 0.05 },
    { path: '/data', keyId: 'k', ms: 2.1004 },
    { path: '/data', keyId: 'k', ms: 12.999 },
  ]
  for (const { path, keyId, ms } of cases) {
    log.access({ method: 'GET', path, status: 200, ms, keyId, reason: undefined, client: '127.0.0.1', requestId: 'r1' })
  }
  log.flush()
  const lines = written.trimEnd().split('\n')
  assert.equal(lines.length, cases.length)
  cases.forEach(({ path, keyId, ms }, i) => {
    const line = lines[i] as string
    const entry = JSON.parse(line)
    assert.equal(entry.path, path)
    assert.equal(entry.keyId, keyId)
    // Exactly the text JavaScript gives the rounded number, as in DESIGN.md's example ("ms":0.31).
    assert.ok(line.includes(`"ms":${Math.round(ms * 1000) / 1000},`), line)
  })
})

/** Runs `script` (ES module text) in a child with the logger, and returns its stdout and exit code. */
async function runLoggerScript(t: TestContext, script: string) {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-log-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'script.mjs')
  writeFileSync(file, `import { createLogger } from ${JSON.stringify(new URL('../dist/observe/log.js', import.meta.url).href)}\n${script}`)
  const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const code = await new Promise((resolve) => child.on('close', resolve))
  return { code, stdout, stderr }
}

test('a burst beyond the buffer bound drops lines, counts them and says so', async (t) => {
  const { stdout, stderr } = await runLoggerScript(t, `
    const log = createLogger({ level: 'info', fd: 1, maxBufferBytes: 64 * 1024 })
    for (let i = 0; i < 10000; i++) log.info('burst', { i })
    process.stderr.write(String(log.dropped))
    setTimeout(() => log.flush(), 50)
  `)
  const dropped = Number(stderr)
  const lines = stdout.trimEnd().split('\n').map((line) => JSON.parse(line))
  const burst = lines.filter((line) => line.msg === 'burst')
  assert.ok(dropped > 0, 'some lines were dropped')
  assert.equal(burst.length + dropped, 10_000)
  assert.ok(stdout.length < 200 * 1024, 'the buffer stayed bounded')
  assert.deepEqual(lines.find((line) => line.level === 'warn')?.count, dropped)
})

test('buffered lines are flushed before an exit, including one on a fatal error', async (t) => {
  const { code, stdout } = await runLoggerScript(t, `
    const log = createLogger({ level: 'info', fd: 1 })
    process.on('exit', () => log.flush())
    for (let i = 0; i < 1000; i++) log.info('before the crash', { i })
    throw new Error('boom')
  `)
  assert.equal(code, 1)
  assert.equal(stdout.trimEnd().split('\n').length, 1000)
})

test('lines from many writers sharing one pipe never interleave', async (t) => {
  const { stdout } = await runLoggerScript(t, `
    import { fork } from 'node:child_process'
    if (process.argv[2] === 'child') {
      const log = createLogger({ level: 'info', fd: 1, shared: true })
      for (let i = 0; i < 3000; i++) log.info('line', { writer: process.pid, padding: 'x'.repeat(100) })
    } else {
      for (let i = 0; i < 4; i++) fork(new URL(import.meta.url).pathname, ['child'], { stdio: 'inherit' })
    }
  `)
  const lines = stdout.trimEnd().split('\n')
  assert.equal(lines.length, 12_000)
  for (const line of lines) JSON.parse(line)
})

function writeKeys(file: string, ...keys: Array<{ id: string; key: string }>) {
  writeFileSync(`${file}.tmp`, JSON.stringify({ keys }))
  renameSync(`${file}.tmp`, file) // as a deployment would: a reload never sees half a file
}

test('WORKERS=2: a worker killed with SIGKILL is replaced and service continues', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: KEY, WORKERS: '2' })
  const started = () => logLines(child).filter((line) => line.msg === 'worker started')
  const victim = Number(started()[0]?.workerPid)
  const killedAt = Date.now()
  process.kill(victim, 'SIGKILL')
  await waitFor('the replacement to listen', () => logLines(child).find((line) => line.msg === 'worker ready'))
  t.diagnostic(`worker replaced and listening ${Date.now() - killedAt} ms after SIGKILL`)
  assert.equal(started().length, 3)
  assert.ok(logLines(child).some((line) => line.msg === 'worker died' && line.workerPid === victim))
  for (let i = 0; i < 20; i++) assert.equal(await status(url), 200)
  const m = await scrape(url)
  assert.equal(m.get('keygate_workers'), 2)
})

test('WORKERS=2: workers that keep dying make the primary give up with exit 1', async (t) => {
  const { child } = await startServerProcess(t, { API_KEY: KEY, WORKERS: '2' })
  const pids = () => logLines(child).filter((line) => line.msg === 'worker started').map((line) => Number(line.workerPid))
  const killed = new Set<number>()
  await waitFor('the primary to give up', () => {
    for (const pid of pids()) {
      if (killed.has(pid)) continue
      killed.add(pid)
      try {
        process.kill(pid, 'SIGKILL')
      } catch {} // already gone
    }
    return child.process.exitCode !== null ? true : undefined
  }, 20_000)
  assert.equal(await child.exited, 1)
  assert.ok(logLines(child).some((line) => line.level === 'error' && String(line.msg).includes('crash-looping')))
  assert.ok(killed.size >= 6 && killed.size <= 8, `${killed.size} deaths`)
})

test('WORKERS=2: SIGHUP to the primary reloads the keys in every worker', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-cluster-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeKeys(file, { id: 'a', key: KEY })
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file, WORKERS: '2' })
  writeKeys(file, { id: 'a', key: KEY }, { id: 'b', key: 'second-key-0123456789' })
  child.process.kill('SIGHUP')
  const reloadedBy = () => new Set(logLines(child).filter((l) => l.msg === 'keys reloaded' && l.trigger === 'SIGHUP').map((l) => l.worker))
  await waitFor('both workers to reload', () => (reloadedBy().size === 2 ? true : undefined))
  for (let i = 0; i < 20; i++) assert.equal(await status(url, { authorization: 'second-key-0123456789' }), 200)
})

/** Starts the load client against `url` and resolves once requests flow. */
async function startLoad(t: TestContext, url: string, mode = 'keepalive') {
  const load = spawn(process.execPath, [LOAD_CLIENT, url, KEY, '16', mode], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.after(() => load.exitCode === null && load.kill('SIGKILL'))
  let output = ''
  load.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const exited = new Promise((resolve) => load.on('close', resolve))
  await waitFor('load to flow', () => (output.includes('flowing') ? true : undefined))
  return {
    async stop() {
      load.stdin.end('stop\n')
      await exited
      return JSON.parse(output.trimEnd().split('\n').at(-1) ?? '{}') as {
        completed: number
        refused: number
        lost: number
        lostOnNewConnection: number
        connectionClose: number
        lostErrors: string[]
      }
    },
  }
}

for (const workers of ['1', '2']) {
  test(`zero-loss shutdown under keep-alive load (WORKERS=${workers}): every request on an open connection gets a whole answer`, async (t) => {
    const { child, url } = await startServerProcess(t, { API_KEY: KEY, WORKERS: workers })
    const load = await startLoad(t, url)
    child.process.kill('SIGTERM')
    assert.equal(await child.exited, 0)
    const summary = await load.stop()
    t.diagnostic(`WORKERS=${workers}: ${JSON.stringify(summary)}`)
    assert.equal(summary.lost, 0, `lost on keep-alive connections: ${summary.lostErrors.join('; ')}`)
    // A connection the server accepted is served, in both modes: the listening socket closes first.
    assert.equal(summary.lostOnNewConnection, 0, summary.lostErrors.join('; '))
    assert.ok(summary.completed > 200)
    assert.ok(summary.refused > 0, 'after the exit, new connections are refused')
    assert.ok(summary.connectionClose > 0, 'responses during the drain say Connection: close')
  })
}

for (const workers of ['1', '2']) {
  test(`shutdown under a storm of new connections (WORKERS=${workers}): every connection keygate accepted is answered`, async (t) => {
    const { child, url } = await startServerProcess(t, { API_KEY: KEY, WORKERS: workers })
    const load = await startLoad(t, url, 'storm')
    child.process.kill('SIGTERM')
    assert.equal(await child.exited, 0)
    const summary = await load.stop()
    t.diagnostic(`WORKERS=${workers}: ${JSON.stringify(summary)}`)
    // Every connection keygate accepted was answered: one connection per request, so the counts match.
    // (A connection still in the kernel's accept queue when the listening socket closes is reset by
    // the kernel, not by keygate: it counts as lostOnNewConnection and was never accepted.)
    const stopped = logLines(child).find((line) => line.msg === 'stopped' && line.acceptedConnections !== undefined)
    assert.equal(stopped?.acceptedConnections, summary.completed, JSON.stringify(stopped))
    assert.equal(summary.lost, 0, summary.lostErrors.join('; '))
    assert.ok(summary.completed >= 1000)
    assert.ok(summary.refused > 0, 'after the listening socket closed, new connections are refused')
  })
}

test('WORKERS=2: a burst of SIGHUPs while the workers start kills none of them', async (t) => {
  const child = runNode(t, { API_KEY: KEY, WORKERS: '2', PORT: '0' })
  // The primary handles SIGHUP once it forks; the workers are then still starting.
  await waitFor('the primary to fork', () => (logLines(child).filter((line) => line.msg === 'worker started').length >= 2 ? true : undefined))
  for (let i = 0; i < 10 && !logLines(child).some((line) => line.msg === 'listening'); i++) {
    child.process.kill('SIGHUP')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const listening = await waitFor('the listening line', () => logLines(child).find((line) => line.msg === 'listening'))
  assert.equal(await status(String(listening.url)), 200)
  assert.deepEqual(logLines(child).filter((line) => line.msg === 'worker died'), [])
  child.process.kill('SIGTERM')
  assert.equal(await child.exited, 0)
})

test('createLogger needs write or fd: its types say so (this file would not compile) and it throws', () => {
  // @ts-expect-error: neither write nor fd
  assert.throws(() => createLogger({ level: 'info' }), { name: 'TypeError', message: /give write or fd/ })
  // @ts-expect-error: both
  assert.equal(typeof createLogger({ level: 'info', write: () => {}, fd: 1 }).flush, 'function')
})
