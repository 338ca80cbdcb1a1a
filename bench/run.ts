/**
 * `npm run bench`: keygate against a bare node:http server, each case in its own process and driven
 * by the load generator in another, interleaved over rounds. `--timing` runs the timing-leak check,
 * `--keys N` the many-keys check (many-keys.ts).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { canPin, firstAnswer, freePort, nodeCommand as nodeCommandOn, statusMb, stop } from './processes.js'
import { runManyKeysCheck } from './many-keys.js'
import { DEFAULT_BATCHES, runTimingCheck } from './timing.js'

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url))
const KEYGATE = here('../dist/server.js')
const BARE = here('./bare-server.js')
const LOAD = here('./load.js')
const KEY = 'bench-key-0123456789abcdefghijklmnopqrstuv'

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    timing: { type: 'boolean', default: false },
    // --keys N: the many-keys check (load time, memory, reload peak, lookup cost) with N entries.
    keys: { type: 'string' },
    connections: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    rounds: { type: 'string' },
    samples: { type: 'string' },
    batches: { type: 'string' },
    json: { type: 'string' },
    only: { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    // The dist/ of another build (say, the last release): its server runs as cases of its own.
    'baseline-dist': { type: 'string' },
  },
  strict: true,
})
const settings = {
  connections: Number(flags.connections ?? 50),
  durationMs: Number(flags.duration ?? (flags.quick ? 1 : 4)) * 1000,
  warmupMs: Number(flags.warmup ?? (flags.quick ? 0.3 : 2)) * 1000,
  rounds: Number(flags.rounds ?? (flags.quick ? 1 : 7)),
  startupPairs: flags.quick ? 3 : 15,
  // A smoke run (one short round) shows that every case runs; its ratios are too noisy to judge.
  judged: !flags.quick,
}

interface Case {
  name: string
  /** How to start the server: keygate with this environment, a baseline, or another program (a proxy). */
  server:
    | { keygate: Record<string, string> }
    | { baseline: 'http' | 'headers' | 'contract' | 'raw' }
    | { program: (port: number, dir: string) => { command: string; args: string[]; env?: Record<string, string> } }
  /** The request headers the generator sends. */
  headers: string
  /** The status those requests get (200 unless said). */
  status?: number
  logFile?: boolean
  /** Another build's server.js (with --baseline-dist). */
  script?: string
  /** Processes of the run whose CPU time is this case's too (keygate's /auth behind nginx). */
  alsoCounted?: number[]
}

interface Run {
  rps: number
  p50Us: number
  p99Us: number
  /** Server CPU time (all its processes) per request: NaN where /proc is missing. */
  cpuUsPerRequest: number
  errors: number
  rssIdleMb: number
  rssLoadedMb: number
}

const auth = `Authorization: ${KEY}\r\n`
const wrongKey = 'Authorization: wrong-key-0123456789abcdefghijklmnopq\r\n'
const silent = { API_KEY: KEY, LOG_LEVEL: 'silent' }

function cases(keysFile: string, policyFiles: PolicyFiles, redisUrl: string | undefined, services: Services): Case[] {
  const limited = { API_KEYS_FILE: policyFiles.limited, LOG_LEVEL: 'silent' }
  const quota = { API_KEYS_FILE: policyFiles.quota, LOG_LEVEL: 'silent' }
  const baseline = flags['baseline-dist'] === undefined ? undefined : join(flags['baseline-dist'], 'server.js')
  return [
    { name: 'raw net (generator ceiling)', server: { baseline: 'raw' }, headers: '' },
    { name: 'bare node:http', server: { baseline: 'http' }, headers: '' },
    { name: "bare node:http + keygate's response headers", server: { baseline: 'headers' }, headers: '' },
    { name: 'bare node:http + the contract minimum', server: { baseline: 'contract' }, headers: auth },
    { name: 'bare node:http + the contract minimum, wrong key', server: { baseline: 'contract' }, headers: wrongKey, status: 401 },
    { name: 'keygate GET /data, authorized', server: { keygate: silent }, headers: auth },
    { name: 'keygate wrong key (401), no throttling', server: { keygate: { ...silent, AUTH_FAIL_LIMIT: '0' } }, headers: wrongKey, status: 401 },
    { name: 'keygate 100,000 keys loaded', server: { keygate: { API_KEYS_FILE: keysFile, LOG_LEVEL: 'silent' } }, headers: auth },
    { name: 'keygate access log at info, to a file', server: { keygate: { API_KEY: KEY, LOG_LEVEL: 'info' } }, headers: auth, logFile: true },
    { name: 'keygate WORKERS=2', server: { keygate: { ...silent, WORKERS: '2' } }, headers: auth },
    { name: 'keygate key with 50 rules', server: { keygate: { API_KEYS_FILE: policyFiles.rules, LOG_LEVEL: 'silent' } }, headers: auth },
    { name: 'keygate rate-limited key (never refused)', server: { keygate: limited }, headers: auth },
    { name: 'keygate key with a quota (never refused)', server: { keygate: quota }, headers: auth },
    { name: 'keygate key with 1,000 address ranges', server: { keygate: { API_KEYS_FILE: policyFiles.ranges, LOG_LEVEL: 'silent' } }, headers: auth },
    { name: 'keygate key with 1 address range', server: { keygate: { API_KEYS_FILE: policyFiles.oneRange, LOG_LEVEL: 'silent' } }, headers: auth },
    { name: 'keygate WORKERS=2, rate-limited key (counted by the primary)', server: { keygate: { ...limited, WORKERS: '2' } }, headers: auth },
    ...(redisUrl === undefined ? [] : [
      { name: 'keygate REDIS_URL, key without a rate limit', server: { keygate: { ...silent, REDIS_URL: redisUrl } }, headers: auth },
      { name: 'keygate rate-limited key, counted in Redis', server: { keygate: { ...limited, REDIS_URL: redisUrl } }, headers: auth },
      { name: 'keygate key with a quota, counted in Redis', server: { keygate: { ...quota, REDIS_URL: redisUrl } }, headers: auth },
    ]),
    ...proxyCases(services),
    ...(baseline === undefined ? [] : [
      { name: 'baseline build GET /data, authorized', server: { keygate: silent }, headers: auth, script: baseline },
      { name: 'baseline build WORKERS=2', server: { keygate: { ...silent, WORKERS: '2' } }, headers: auth, script: baseline },
      { name: 'baseline build rate-limited key', server: { keygate: limited }, headers: auth, script: baseline },
      { name: 'baseline build proxy mode before the service', server: { keygate: { ...silent, UPSTREAM_URL: services.upstreamUrl } }, headers: auth, script: baseline },
    ]),
  ]
}

// On a machine of two or more CPUs, with taskset at hand, the server gets CPU 1 and the generator
// CPU 0, so that the scheduler does not move them onto one core in the middle of a run. A
// cluster (WORKERS=2) is left free to use every core: that is what it is for.
const PIN = !flags['no-pin'] && canPin()
const nodeCommand = (args: string[], cpu: number | undefined) => nodeCommandOn(args, cpu, PIN)

function startServer(c: Case, port: number, dir: string): ChildProcess {
  if ('program' in c.server) {
    const { command, args, env } = c.server.program(port, dir)
    const [pinned, pinnedArgs] = PIN ? ['taskset', ['-c', '1', command, ...args]] : [command, args]
    return spawn(pinned, pinnedArgs, { env: { PATH: process.env.PATH ?? '', PORT: String(port), ...env }, stdio: ['ignore', 'ignore', 'inherit'] })
  }
  const out = c.logFile ? openSync(join(dir, `access-${port}.log`), 'w') : 'ignore'
  const args = 'keygate' in c.server ? [c.script ?? KEYGATE] : [BARE, c.server.baseline]
  const env = { PATH: process.env.PATH ?? '', PORT: String(port), ...('keygate' in c.server ? c.server.keygate : { API_KEY: KEY }) }
  const clustered = 'keygate' in c.server && Number(c.server.keygate.WORKERS ?? 1) > 1
  const [command, commandArgs] = nodeCommand(args, clustered ? undefined : 1)
  const child = spawn(command, commandArgs, { env, stdio: ['ignore', out, 'inherit'] })
  if (typeof out === 'number') closeSync(out)
  return child
}

/** The server's process and its children (a cluster's workers), as /proc lists them. */
function processTree(pid: number | undefined): number[] {
  if (pid === undefined) return []
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number)
    return [pid, ...children.flatMap(processTree)]
  } catch {
    return [pid]
  }
}

/** Milliseconds from spawning the server to its first answer; the server is stopped again. */
async function startupOnce(c: Case, dir: string): Promise<number> {
  const port = await freePort()
  const startedAt = process.hrtime.bigint()
  const server = startServer(c, port, dir)
  try {
    return await firstAnswer(port, c.headers, c.status ?? 200, startedAt)
  } finally {
    await stop(server)
  }
}

async function measure(c: Case, dir: string): Promise<Run & { startupMs: number }> {
  const port = await freePort()
  const startedAt = process.hrtime.bigint()
  const server = startServer(c, port, dir)
  try {
    const startupMs = await firstAnswer(port, c.headers, c.status ?? 200, startedAt)
    await new Promise((resolve) => setTimeout(resolve, 200)) // let startup garbage settle before reading RSS
    const rssIdleMb = statusMb(server.pid)
    const request = Buffer.from(`GET /data HTTP/1.1\r\nHost: 127.0.0.1\r\n${c.headers}\r\n`).toString('base64')
    const [command, args] = nodeCommand([LOAD, String(port), String(settings.connections), String(settings.warmupMs), String(settings.durationMs), request, [...processTree(server.pid), ...(c.alsoCounted ?? [])].join(',')], 0)
    const load = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    let output = ''
    load.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    await once(load, 'exit')
    const result = JSON.parse(output) as Run
    return { ...result, rssIdleMb, rssLoadedMb: statusMb(server.pid), startupMs }
  } finally {
    await stop(server)
  }
}

const median = (values: number[]) => {
  // A run with no requests gives NaN, which JSON carries as null.
  const sorted = [...values].filter((v) => typeof v === 'number' && !Number.isNaN(v)).sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length === 0 ? NaN : sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

function makeKeysFile(dir: string): string {
  const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
  const keys = Array.from({ length: 100_000 }, (_, i) => ({ id: `client-${i}`, sha256: sha256(`other-key-${i}`) }))
  keys[54_321] = { id: 'bench', sha256: sha256(KEY) }
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify({ keys }))
  return file
}

interface PolicyFiles {
  rules: string
  limited: string
  quota: string
  ranges: string
  oneRange: string
}

/**
 * Keys files for the policy cases: the bench key with 50 rules (the last allows GET /data), with a
 * limit or a quota it never reaches, and with an allowlist of 1,000 ranges (the last one its own).
 */
function makePolicyFiles(dir: string): PolicyFiles {
  const sha256 = createHash('sha256').update(KEY).digest('hex')
  const allow = [...Array.from({ length: 49 }, (_, i) => `GET,POST /v1/service-${i}/*/items/**`), 'GET /data']
  const rules = join(dir, 'rules.json')
  writeFileSync(rules, JSON.stringify({ keys: [{ id: 'bench', sha256, allow }] }))
  const limited = join(dir, 'limited.json')
  writeFileSync(limited, JSON.stringify({ keys: [{ id: 'bench', sha256, rateLimit: { limit: 1_000_000_000, windowS: 1 } }] }))
  const quota = join(dir, 'quota.json')
  writeFileSync(quota, JSON.stringify({ keys: [{ id: 'bench', sha256, quota: { limit: 1_000_000_000_000, period: 'month' } }] }))
  const ranges = join(dir, 'ranges.json')
  const ips = [...Array.from({ length: 999 }, (_, i) => (i % 2 === 0 ? `10.${i >> 8}.${i & 255}.0/24` : `2001:db8:${i.toString(16)}::/48`)), '127.0.0.1']
  writeFileSync(ranges, JSON.stringify({ keys: [{ id: 'bench', sha256, ips }] }))
  const oneRange = join(dir, 'one-range.json')
  writeFileSync(oneRange, JSON.stringify({ keys: [{ id: 'bench', sha256, ips: ['127.0.0.1'] }] }))
  return { rules, limited, quota, ranges, oneRange }
}

async function runLoadBenchmark() {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-'))
  try {
    // --only "bare,authorized": the cases whose names contain one of these words (the rest are skipped).
    const wanted = flags.only?.split(',').map((word) => word.trim().toLowerCase())
    const redis = await startRedis(dir)
    const services = await startServices(dir)
    const all = cases(makeKeysFile(dir), makePolicyFiles(dir), redis?.url, services).filter((c) => !wanted || wanted.some((word) => c.name.toLowerCase().includes(word)))
    const runs = new Map<string, Array<Run & { startupMs: number }>>(all.map((c) => [c.name, []]))
    for (let round = 1; round <= settings.rounds; round++) {
      // A new order each round: drift within a round then favours no case over another.
      for (const c of shuffled(all)) {
        const run = await measure(c, dir)
        runs.get(c.name)?.push(run)
        process.stderr.write(`round ${round}/${settings.rounds}  ${c.name.padEnd(42)} ${Math.round(run.rps).toString().padStart(7)} req/s\n`)
      }
    }
    // Start-up is measured on its own as well, in pairs: one start per round is too few to
    // compare, and a start right after a heavy case is slower for reasons of its own.
    const startups = new Map<string, number[]>()
    const startupCases = all.filter((c) => STARTUP_CASES.includes(c.name))
    for (let pair = 0; pair < (startupCases.length === STARTUP_CASES.length ? settings.startupPairs : 0); pair++) {
      for (const c of shuffled(startupCases)) startups.set(c.name, [...(startups.get(c.name) ?? []), await startupOnce(c, dir)])
    }
    return report(all, runs, startups)
  } finally {
    redisProcess?.kill('SIGKILL')
    for (const child of serviceProcesses) child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}

const PIPE_PROXY = here('./pipe-proxy.js')
const HAS_NGINX = spawnSync('sh', ['-c', 'command -v nginx']).status === 0

/** Processes shared by the proxy cases for the whole run: the service behind them, and keygate's /auth for nginx. */
interface Services {
  upstreamUrl: string
  authUrl: string
  authPid: number | undefined
}
const serviceProcesses: ChildProcess[] = []

async function startServices(dir: string): Promise<Services> {
  const start = async (args: string[], env: Record<string, string>) => {
    const port = await freePort()
    const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', PORT: String(port), ...env }, stdio: ['ignore', 'ignore', 'inherit'] })
    serviceProcesses.push(child)
    await firstAnswer(port, auth, 200, process.hrtime.bigint())
    return { url: `http://127.0.0.1:${port}`, pid: child.pid }
  }
  void dir
  const keygateAuth = await start([KEYGATE], silent)
  return { upstreamUrl: (await start([BARE, 'http'], {})).url, authUrl: keygateAuth.url, authPid: keygateAuth.pid }
}

/** keygate's proxy mode, the pipe proxy and nginx (proxy_pass, and auth_request to keygate's /auth), all before one service. */
function proxyCases({ upstreamUrl, authUrl, authPid }: Services): Case[] {
  const nginx = (site: string) => (port: number, dir: string) => {
    const conf = join(dir, `nginx-${port}.conf`)
    writeFileSync(conf, nginxConf(port, dir, upstreamUrl, authUrl, site))
    return { command: 'nginx', args: ['-p', dir, '-c', conf, '-e', join(dir, 'nginx-error.log')] }
  }
  return [
    { name: 'pipe proxy (no checks) before the service', server: { program: () => ({ command: process.execPath, args: [PIPE_PROXY], env: { UPSTREAM_URL: upstreamUrl } }) }, headers: auth },
    { name: 'keygate proxy mode before the service', server: { keygate: { ...silent, UPSTREAM_URL: upstreamUrl } }, headers: auth },
    ...(HAS_NGINX ? [
      { name: 'nginx proxy_pass before the service', server: { program: nginx('proxy') }, headers: auth },
      // The CPU per request counts nginx and the keygate it asks; unlike keygate's proxy, that keygate is not pinned to CPU 1.
      { name: 'nginx auth_request to keygate, before the service', server: { program: nginx('auth') }, headers: auth, alsoCounted: authPid === undefined ? [] : [authPid] },
    ] : []),
  ]
}

function nginxConf(port: number, dir: string, upstreamUrl: string, authUrl: string, site: 'proxy' | 'auth' | string): string {
  const auth = site === 'auth'
  return `daemon off; master_process off; worker_processes 1; pid ${dir}/nginx-${port}.pid; error_log ${dir}/nginx-error.log error;
events { worker_connections 1024; }
http {
  access_log off;
  # nginx closes a kept-alive connection after 1,000 requests by default; the generator holds its 50
  # for the whole run, and the service and keygate connections stay up as keygate's do.
  keepalive_requests 100000000;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream service { server ${new URL(upstreamUrl).host}; keepalive 64; keepalive_requests 100000000; }
  upstream keygate { server ${new URL(authUrl).host}; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:${port};
    location / {
      ${auth ? 'auth_request /_auth;' : ''}
      proxy_pass http://service; proxy_http_version 1.1; proxy_set_header Connection "";
    }
    location = /_auth {
      internal;
      proxy_pass http://keygate/auth; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Original-Method $request_method;
    }
  }
}
`
}

let redisProcess: ChildProcess | undefined

/** A redis-server of the benchmark's own on a free port (no persistence), or undefined when it is not installed. */
async function startRedis(dir: string): Promise<{ url: string } | undefined> {
  if (spawnSync('sh', ['-c', 'command -v redis-server']).status !== 0) {
    process.stderr.write('redis-server is not installed (apt-get install redis-server): the Redis cases are skipped\n')
    return undefined
  }
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  redisProcess = child
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  for (const deadline = Date.now() + 10_000; !output.includes('Ready to accept connections'); ) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start: ${output}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return { url: `redis://127.0.0.1:${port}` }
}

/** A copy of `items` in random order (Fisher-Yates). */
function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j] as T, copy[i] as T]
  }
  return copy
}

interface Comparison {
  name: string
  of: string
  against: string
  /** rps and startup: ratios; rss, p50, p99: differences (MB, µs). */
  measure: 'rps' | 'startup' | 'rss' | 'p50' | 'p99'
  target: string
  passes: (value: number) => boolean
}

const STARTUP_CASES = ['bare node:http', 'keygate GET /data, authorized']

const COMPARISONS: Comparison[] = [
  { name: 'generator ceiling: raw net / bare', of: 'raw net (generator ceiling)', against: 'bare node:http', measure: 'rps', target: '> 1.2', passes: (v) => v > 1.2 },
  { name: "bare + keygate's headers / bare", of: "bare node:http + keygate's response headers", against: 'bare node:http', measure: 'rps', target: 'report', passes: () => true },
  { name: 'bare + contract minimum / bare', of: 'bare node:http + the contract minimum', against: 'bare node:http', measure: 'rps', target: 'report', passes: () => true },
  { name: 'GET /data authorized / bare', of: 'keygate GET /data, authorized', against: 'bare node:http', measure: 'rps', target: '>= 0.95', passes: (v) => v >= 0.95 },
  { name: 'GET /data authorized / bare + contract minimum', of: 'keygate GET /data, authorized', against: 'bare node:http + the contract minimum', measure: 'rps', target: '>= 0.95', passes: (v) => v >= 0.95 },
  { name: 'wrong key 401 / bare', of: 'keygate wrong key (401), no throttling', against: 'bare node:http', measure: 'rps', target: '>= 0.95', passes: (v) => v >= 0.95 },
  { name: 'wrong key 401 / bare + contract minimum, wrong key', of: 'keygate wrong key (401), no throttling', against: 'bare node:http + the contract minimum, wrong key', measure: 'rps', target: '>= 0.95', passes: (v) => v >= 0.95 },
  { name: '100,000 keys / 1 key', of: 'keygate 100,000 keys loaded', against: 'keygate GET /data, authorized', measure: 'rps', target: '>= 0.98', passes: (v) => v >= 0.98 },
  { name: 'log at info / silent', of: 'keygate access log at info, to a file', against: 'keygate GET /data, authorized', measure: 'rps', target: '>= 0.90', passes: (v) => v >= 0.9 },
  { name: 'WORKERS=2 / 1', of: 'keygate WORKERS=2', against: 'keygate GET /data, authorized', measure: 'rps', target: 'report', passes: () => true },
  { name: 'key with 50 rules / no rules', of: 'keygate key with 50 rules', against: 'keygate GET /data, authorized', measure: 'rps', target: '>= 0.97', passes: (v) => v >= 0.97 },
  { name: 'rate-limited key / no limit', of: 'keygate rate-limited key (never refused)', against: 'keygate GET /data, authorized', measure: 'rps', target: 'report', passes: () => true },
  { name: 'key with a quota / no quota (memory)', of: 'keygate key with a quota (never refused)', against: 'keygate GET /data, authorized', measure: 'rps', target: 'report', passes: () => true },
  { name: 'key with 1,000 address ranges / none', of: 'keygate key with 1,000 address ranges', against: 'keygate GET /data, authorized', measure: 'rps', target: 'report', passes: () => true },
  { name: 'key with 1,000 address ranges / 1 range', of: 'keygate key with 1,000 address ranges', against: 'keygate key with 1 address range', measure: 'rps', target: '>= 0.97', passes: (v) => v >= 0.97 },
  { name: 'WORKERS=2: rate-limited key (primary) / no limit', of: 'keygate WORKERS=2, rate-limited key (counted by the primary)', against: 'keygate WORKERS=2', measure: 'rps', target: 'report', passes: () => true },
  { name: 'REDIS_URL, key without a limit / no REDIS_URL', of: 'keygate REDIS_URL, key without a rate limit', against: 'keygate GET /data, authorized', measure: 'rps', target: '>= 0.95', passes: (v) => v >= 0.95 },
  { name: 'key with a quota in Redis / REDIS_URL, no quota', of: 'keygate key with a quota, counted in Redis', against: 'keygate REDIS_URL, key without a rate limit', measure: 'rps', target: 'report', passes: () => true },
  { name: 'rate-limited key: in Redis / in memory', of: 'keygate rate-limited key, counted in Redis', against: 'keygate rate-limited key (never refused)', measure: 'rps', target: 'report', passes: () => true },
  { name: 'GET /data authorized / baseline build', of: 'keygate GET /data, authorized', against: 'baseline build GET /data, authorized', measure: 'rps', target: '>= 0.97', passes: (v) => v >= 0.97 },
  { name: 'rate-limited key / baseline build', of: 'keygate rate-limited key (never refused)', against: 'baseline build rate-limited key', measure: 'rps', target: '>= 0.97', passes: (v) => v >= 0.97 },
  { name: 'WORKERS=2 / baseline build WORKERS=2', of: 'keygate WORKERS=2', against: 'baseline build WORKERS=2', measure: 'rps', target: '>= 0.97', passes: (v) => v >= 0.97 },
  { name: 'keygate proxy / baseline build proxy', of: 'keygate proxy mode before the service', against: 'baseline build proxy mode before the service', measure: 'rps', target: '>= 0.95', passes: (v) => v >= 0.95 },
  { name: 'keygate proxy / pipe proxy (no checks)', of: 'keygate proxy mode before the service', against: 'pipe proxy (no checks) before the service', measure: 'rps', target: '>= 0.90', passes: (v) => v >= 0.9 },
  { name: 'keygate proxy / nginx auth_request to keygate', of: 'keygate proxy mode before the service', against: 'nginx auth_request to keygate, before the service', measure: 'rps', target: '> 1 (ahead)', passes: (v) => v > 1 },
  { name: 'keygate proxy / nginx proxy_pass (no checks)', of: 'keygate proxy mode before the service', against: 'nginx proxy_pass before the service', measure: 'rps', target: 'report', passes: () => true },
  { name: 'keygate proxy: p50 added over the service alone (µs)', of: 'keygate proxy mode before the service', against: 'bare node:http', measure: 'p50', target: 'report', passes: () => true },
  { name: 'keygate proxy: p99 added over the service alone (µs)', of: 'keygate proxy mode before the service', against: 'bare node:http', measure: 'p99', target: 'report', passes: () => true },
  { name: 'start to first 200 (separate starts in pairs): keygate / bare', of: 'keygate GET /data, authorized', against: 'bare node:http', measure: 'startup', target: '<= 1.2', passes: (v) => v <= 1.2 },
  { name: 'RSS idle: keygate - bare (MB)', of: 'keygate GET /data, authorized', against: 'bare node:http', measure: 'rss', target: '<= +10', passes: (v) => v <= 10 },
]

function report(all: Case[], runs: Map<string, Array<Run & { startupMs: number }>>, startups: Map<string, number[]>) {
  const byRound = (name: string) => runs.get(name) ?? []
  const rows = all.map((c) => {
    const r = byRound(c.name)
    return {
      case: c.name,
      rps: Math.round(median(r.map((x) => x.rps))),
      p50Us: median(r.map((x) => x.p50Us)),
      p99Us: median(r.map((x) => x.p99Us)),
      cpuUsPerRequest: Number(median(r.map((x) => x.cpuUsPerRequest)).toFixed(2)),
      startupMs: Number(median(r.map((x) => x.startupMs)).toFixed(1)),
      rssIdleMb: Number(median(r.map((x) => x.rssIdleMb)).toFixed(1)),
      rssLoadedMb: Number(median(r.map((x) => x.rssLoadedMb)).toFixed(1)),
      errors: r.reduce((sum, x) => sum + x.errors, 0),
    }
  })
  const comparisons = COMPARISONS.map((c) => {
    const of = byRound(c.of)
    const against = byRound(c.against)
    // Each round's ratio uses the two runs of that round: shared-machine drift cancels out.
    const perRound =
      c.measure === 'startup'
        ? (startups.get(c.of) ?? []).map((ms, i) => ms / (startups.get(c.against)?.[i] ?? NaN))
        : of.map((run, i) => {
            const base = against[i]
            if (base === undefined) return NaN
            if (c.measure === 'rps') return run.rps / base.rps
            if (c.measure === 'p50') return run.p50Us - base.p50Us
            if (c.measure === 'p99') return run.p99Us - base.p99Us
            return Math.max(run.rssIdleMb - base.rssIdleMb, run.rssLoadedMb - base.rssLoadedMb)
          })
    const value = median(perRound)
    // The same ratio from server CPU time per request (its inverse, so that higher is better too):
    // a steadier reading when the machine's other tenants shift requests/s between rounds.
    const byCpu = c.measure === 'rps' ? median(of.map((run, i) => (against[i]?.cpuUsPerRequest ?? NaN) / run.cpuUsPerRequest)) : NaN
    // Both sides must have run (--only may leave one out).
    const ran = perRound.some((v) => !Number.isNaN(v))
    return {
      comparison: c.name,
      value: Number(value.toFixed(3)),
      byCpu: Number(byCpu.toFixed(3)),
      perRound: perRound.map((v) => Number(v.toFixed(3))),
      target: c.target,
      pass: ran && settings.judged ? c.passes(value) : undefined,
      ran,
    }
  })
  return { settings, pinned: PIN, machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', node: process.version }, rows, comparisons }
}

function markdown(result: Awaited<ReturnType<typeof runLoadBenchmark>>): string {
  const lines = [
    `Node ${result.machine.node}, ${result.machine.cpus} CPUs (${result.machine.model}); ${settings.connections} connections, ${settings.rounds} round(s) of ${settings.durationMs / 1000} s after ${settings.warmupMs / 1000} s warm-up; medians over rounds; ${PIN ? 'server on CPU 1, generator on CPU 0 (a cluster unpinned)' : 'processes not pinned'}.`,
    '',
    '| case | req/s | p50 µs | p99 µs | server CPU µs/request | start to first 200 ms | RSS idle MB | RSS after load MB | errors |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...result.rows.map((r) => `| ${r.case} | ${r.rps} | ${r.p50Us} | ${r.p99Us} | ${r.cpuUsPerRequest} | ${r.startupMs} | ${r.rssIdleMb} | ${r.rssLoadedMb} | ${r.errors} |`),
    '',
    '| comparison (same round) | median | per round | by server CPU/request | target | |',
    '|---|---:|---|---:|---|---|',
    ...result.comparisons.map((c) =>
      `| ${c.comparison} | ${c.value} | ${c.perRound.join(', ')} | ${Number.isNaN(c.byCpu) ? '' : c.byCpu} | ${c.target} | ${!c.ran ? 'not run' : c.pass === undefined ? 'not judged (--quick)' : c.pass ? 'pass' : '**FAIL**'} |`),
  ]
  return `${lines.join('\n')}\n`
}

if (flags.timing) {
  const result = runTimingCheck(Number(flags.samples ?? 1_000_000), Number(flags.batches ?? DEFAULT_BATCHES))
  process.stdout.write(result.markdown)
  if (flags.json) writeFileSync(flags.json, JSON.stringify(result.json, null, 2))
  process.exitCode = result.pass ? 0 : 1
} else if (flags.keys !== undefined) {
  const result = await runManyKeysCheck(Number(flags.keys), { ...settings, distDir: flags['baseline-dist'] })
  process.stdout.write(result.markdown)
  if (flags.json) writeFileSync(flags.json, JSON.stringify(result.json, null, 2))
  process.exitCode = result.pass ? 0 : 1
} else {
  const result = await runLoadBenchmark()
  process.stdout.write(markdown(result))
  if (flags.json) writeFileSync(flags.json, JSON.stringify(result, null, 2))
}
