#!/usr/bin/env node
/** Entry point: configuration from the environment, the server (or the cluster), signals and clean shutdown. */
import { createServer, type Server, type ServerOptions } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import { Server as NetServer, type AddressInfo, type Socket } from 'node:net'
import { availableParallelism } from 'node:os'
import { ConfigError, DEMO_KEY, loadConfig, settingsOf, throttleOptionsOf, type Config } from './config.js'
import { createHandler, type Handler } from './http/handler.js'
import { createHandlerMetrics } from './http/handler-options.js'
import { createKeyStore } from './key-table/key-store.js'
import type { KeyStore } from './keys/store.js'
import { checkKeysFile, createSwappableKeyStore, ENV_KEY_ID, KeysFileError, loadKeysFile, startKeysFileReloads, type SwappableKeyStore } from './keys-file/file.js'
import { findingsOf, keysFileWarnings } from './keys-file/findings.js'
import { collectGarbage } from './process/memory.js'
import { createLogger, type Logger } from './observe/log.js'
import { normalizeAddress } from './http/client.js'
import { answerClientError } from './http/respond.js'
import { createThrottle, type Throttle } from './limits/throttle.js'
import type { RateLimitStore } from './limits/rate-limit.js'
import type { TlsPair } from './process/tls.js'
import { nodeVersionProblem, VERSION } from './version.js'

// node:cluster, node:https (with TLS) and their modules load only when configured: each costs
// startup time, and time to the first answer is part of what keygate promises.
type TlsModule = typeof import('./process/tls.js')
type ClusterRole = { primary: true } | { primary: false; worker: number }

// How often node:http looks for connections past their headers or request timeout (its default
// is 30 s): a quarter of the headers timeout, so a slow client is closed within 1.25 times it.
const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000
const MIN_TIMEOUT_CHECK_INTERVAL_MS = 10
// On shutdown, keep-alive connections get this long to send their next request (answered with
// `Connection: close`) before idle ones are closed: closing at once could reset a request in transit.
const MAX_DRAIN_GRACE_MS = 1000
const CLOSE_IDLE_EVERY_MS = 50

async function main(): Promise<void> {
  // First: on an older Node the rest fails with a stack trace instead of saying what is wrong.
  const nodeProblem = nodeVersionProblem(process.version)
  if (nodeProblem !== undefined) {
    process.stderr.write(`keygate: ${nodeProblem}\n`)
    process.exit(1)
  }
  const { config, warnings } = exitOnConfigError(() => loadConfig(process.env, availableParallelism()))
  const role = config.workers > 1 ? await clusterRole() : undefined
  const log = createLogger({
    level: config.logLevel,
    fd: 1,
    // Workers and the primary share stdout: pieces a pipe writes atomically, and each worker's number.
    shared: config.workers > 1,
    base: role?.primary === false ? { worker: role.worker } : undefined,
  })
  process.on('exit', () => log.flush())
  process.on('uncaughtException', (error) => {
    log.error('fatal error: exiting', { error: error.stack ?? String(error) })
    log.flush()
    process.stderr.write(`keygate: fatal error: ${error.stack ?? String(error)}\n`)
    process.exit(1)
  })
  if (role?.primary !== false) {
    for (const warning of warnings) log.warn(warning)
    log.info('settings', settingsOf(config))
  }
  const tlsModule = config.tls === undefined ? undefined : await import('./process/tls.js')
  if (role?.primary) {
    // Check keys and certificates once here, so a mistake is one line and exit 1, not a crash loop.
    checkKeys(config, log)
    collectGarbage() // the set was only checked: none of it stays in the primary
    if (config.tls !== undefined) exitOnConfigError(() => tlsModule?.loadTlsPair(config.tls as NonNullable<Config['tls']>), log)
    const { runPrimary } = await import('./process/cluster.js')
    return runPrimary(config, log, (port) => urlOf(config, port), (error) => exitOnListenError(error, config, log))
  }
  await serve(config, log, tlsModule, role === undefined ? undefined : await import('./process/cluster-worker.js'))
}

async function clusterRole(): Promise<ClusterRole> {
  const { default: cluster } = await import('node:cluster')
  return cluster.isPrimary ? { primary: true } : { primary: false, worker: cluster.worker?.id ?? 0 }
}

/** Runs one serving process: the whole server, or one cluster worker (which sums metrics over IPC). */
async function serve(
  config: Config,
  log: Logger,
  tlsModule: TlsModule | undefined,
  worker: typeof import('./process/cluster-worker.js') | undefined,
): Promise<void> {
  const loaded = exitOnConfigError(() => loadKeys(config), log)
  if (worker === undefined) warnAboutKeys(loaded, log) // in a cluster, the primary has
  if (loaded.reload !== undefined) collectGarbage() // what building the set took
  const keys = loaded.keys
  const tls = config.tls
  const tlsPair = tls === undefined || tlsModule === undefined ? undefined : exitOnConfigError(() => tlsModule.loadTlsPair(tls), log)
  // Waiting for Redis takes up to REDIS_TIMEOUT_MS: a SIGHUP meanwhile must not kill the process.
  const installSighup = holdSighup()
  const limits = await createLimits(config, log, worker)
  const throttle = limits.throttle
  const metrics = createHandlerMetrics(keys, throttle, log, limits.store)
  const reloader = loaded.reload === undefined
    ? undefined
    : startKeysFileReloads({ ...loaded.reload, store: loaded.keys, log, onReload: (ok) => afterReload(ok, metrics) })
  const upstream = config.upstream
  const proxyModule = upstream === undefined ? undefined : await import('./proxy/proxy.js')
  const tunnelModule = upstream === undefined ? undefined : await import('./proxy/tunnel.js')
  const proxy = upstream && proxyModule?.createProxy({ upstream: upstream.url, timeoutMs: upstream.timeoutMs, maxBodyBytes: config.maxBodyBytes, trustProxy: config.trustProxy })
  const handler = createHandler({
    keys,
    log,
    throttle,
    trustProxy: config.trustProxy,
    metrics,
    collectMetrics: worker?.connectWorkerMetrics(metrics),
    rateLimits: limits.rateLimits,
    proxy,
    maxBodyBytes: config.maxBodyBytes,
  })
  const server = createHttpServer(config, handler, tlsModule && tlsPair && { module: tlsModule, pair: tlsPair })
  const dropHandshakes = tlsModule === undefined ? undefined : tlsModule.trackHandshakes(server as HttpsServer)
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    const answer = answerClientError(error, socket)
    if (answer === undefined) return
    metrics.recordClientError(answer.status)
    // Nothing of the request is known, not even its method: the line has what there is.
    const { status, requestId, reason } = answer
    log.access({ method: undefined, path: undefined, status, ms: 0, keyId: undefined, reason, client: clientOfSocket(socket as Socket), requestId })
  })
  // Unknown `Expect` values reach the handler, which answers 417 with keygate's headers and logs it.
  server.on('checkExpectation', handler)
  if (proxy !== undefined) tunnelModule?.takeProxyTraffic(server, handler)
  // Before the worker reports ready: the primary then forwards SIGHUP, which would kill a process without a handler.
  installSighup(() => {
    if (reloader === undefined && tls === undefined) log.info('SIGHUP: no API_KEYS_FILE or TLS certificate to reload')
    reloader?.reload('SIGHUP')
    if (tls !== undefined) tlsModule?.reloadTls(server as HttpsServer, tls, log)
  })
  let stopping = false
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return
    stopping = true
    reloader?.close()
    shutdown(server, log, config.shutdownTimeoutMs, signal, {
      dropHandshakes,
      whenDrained: intake?.whenDrained,
      // A tunnel (WebSocket) is no request in flight: it is closed with the idle connections.
      dropIdle: proxy && (() => proxy.tunnels.forEach((tunnel) => tunnel.destroy())),
    })
  }
  const intake = worker?.acceptFromPrimary(server, stop)
  if (intake === undefined) listen(server, config, log, { keys: keys.size, ...(tlsPair && { certificateValidTo: tlsPair.validTo }) })
  // A worker stops when the primary says so, after the connections the primary handed it; a
  // signal that reaches the whole process group (Ctrl-C, systemd) must not make it stop sooner.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => (intake === undefined ? stop(signal) : undefined))
}

/** Until the real handler is installed, a SIGHUP (whose default action is exit) is remembered, then handled. */
function holdSighup(): (handler: () => void) => void {
  let pending = false
  const hold = () => {
    pending = true
  }
  process.on('SIGHUP', hold)
  return (handler) => {
    process.off('SIGHUP', hold)
    process.on('SIGHUP', handler)
    if (pending) handler()
  }
}

// Connections this process accepted: the 'stopped' line says how many, to show that none was dropped.
const accepted = { connections: 0 }

function listen(server: Server, config: Config, log: Logger, fields: Record<string, string | number>): void {
  server.on('connection', () => accepted.connections++)
  server.on('error', (error: NodeJS.ErrnoException) => exitOnListenError(error, config, log))
  server.listen(config.port, config.host, () => {
    const { port } = server.address() as AddressInfo
    log.info('listening', { url: urlOf(config, port), version: VERSION, node: process.version, ...fields, pid: process.pid })
  })
}

function clientOfSocket(socket: Socket): string {
  const peer = socket.remoteAddress ?? ''
  return normalizeAddress(peer) ?? peer
}

interface Limits {
  throttle?: Throttle
  /** Default (undefined): the handler's memory. */
  rateLimits?: RateLimitStore
  store?: { up(): number; errors(): number }
}

/**
 * Where the limit counters live: Redis with `REDIS_URL`, else the cluster primary in a worker,
 * else this process's memory. Waits briefly for Redis, and serves without it (as configured).
 */
async function createLimits(config: Config, log: Logger, worker: typeof import('./process/cluster-worker.js') | undefined): Promise<Limits> {
  const throttle = throttleOptionsOf(config)
  const redis = config.redis
  if (redis !== undefined) {
    const [{ createRedisLimits }, { describeRedis }] = await Promise.all([import('./limits/redis-store.js'), import('./redis/url.js')])
    const store = describeRedis(redis.address)
    const limits = createRedisLimits({
      redis: redis.address,
      timeoutMs: redis.timeoutMs,
      prefix: redis.prefix,
      onFailure: redis.onFailure,
      throttle,
      onStateChange: (up, reason) =>
        up ? log.info('limits store reachable', { store }) : log.warn('limits store unreachable', { store, reason, onFailure: redis.onFailure }),
    })
    await limits.whenUp(redis.timeoutMs)
    return { throttle: limits.throttle, rateLimits: limits.rateLimits, store: { up: () => (limits.up ? 1 : 0), errors: () => limits.errors } }
  }
  if (worker !== undefined) return worker.connectWorkerLimits(throttle)
  return { throttle: throttle && createThrottle(throttle) }
}

/** An HTTP server, or HTTPS when the pair is given, with the configured timeouts; it does not listen yet. */
function createHttpServer(config: Config, handler: Handler, tls: { module: TlsModule; pair: TlsPair } | undefined): Server {
  const options: ServerOptions = {
    // The handler answers a missing Host itself (400 with keygate's headers, logged and counted).
    requireHostHeader: false,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(
      MIN_TIMEOUT_CHECK_INTERVAL_MS,
      Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, Math.floor(config.headersTimeoutMs / 4)),
    ),
  }
  return tls === undefined ? createServer(options, handler) : tls.module.createHttpsServer(options, handler, tls.pair)
}

type LoadedKeys =
  | { keys: KeyStore; reload?: undefined; warnings?: undefined }
  | { keys: SwappableKeyStore; reload: { file: string; envKey?: string; contentDigest: string }; warnings: string[] }

/** The key store for the configuration: the keys file (with what reloads need) plus `API_KEY`, or the demo key. */
function loadKeys(config: Config): LoadedKeys {
  if (config.keysFile === undefined) {
    const id = config.demo ? 'demo' : ENV_KEY_ID
    return { keys: createKeyStore([{ id, key: config.apiKey ?? DEMO_KEY }]) }
  }
  const { store, contentDigest, fileKeys } = loadKeysFile(config.keysFile, config.apiKey)
  const warnings = keysFileWarnings(config.keysFile, findingsOf(store, Date.now(), fileKeys))
  return { keys: createSwappableKeyStore(store), reload: { file: config.keysFile, envKey: config.apiKey, contentDigest }, warnings }
}

/**
 * What the primary knows of the keys: that they load, and what to warn about. In a function of its
 * own, so that nothing of the set is left in a frame still running when the garbage is collected.
 */
function checkKeys(config: Config, log: Logger): void {
  if (config.keysFile === undefined) return
  const file = config.keysFile
  const { findings } = exitOnConfigError(() => checkKeysFile(file, Date.now(), config.apiKey), log)
  for (const warning of keysFileWarnings(file, findings)) log.warn(warning)
}

/** A reload is counted; the set it replaced (or the one it failed to make) leaves memory at once. */
function afterReload(ok: boolean, metrics: { recordKeyReload(ok: boolean): void }): void {
  metrics.recordKeyReload(ok)
  collectGarbage()
}

/** One warning for each kind of key that deserves a look (what `keygate check` reports). */
function warnAboutKeys(loaded: LoadedKeys, log: Logger): void {
  for (const warning of loaded.warnings ?? []) log.warn(warning)
}

/** Runs `load`; a `ConfigError` or `KeysFileError` (a user's mistake) becomes one stderr line and exit 1, anything else a crash. */
function exitOnConfigError<T>(load: () => T, log?: Logger): T {
  try {
    return load()
  } catch (error) {
    if (!(error instanceof ConfigError) && !(error instanceof KeysFileError)) throw error
    log?.flush()
    process.stderr.write(`keygate: ${error.message}\n`)
    process.exit(1)
  }
}

function exitOnListenError(error: NodeJS.ErrnoException, config: Config, log: Logger): void {
  const reasons: Record<string, string> = {
    EADDRINUSE: `PORT ${config.port} is already in use on ${config.host}`,
    EACCES: `PORT ${config.port} needs privileges this process does not have`,
    EADDRNOTAVAIL: `HOST ${config.host} is not an address of this machine`,
    ENOTFOUND: `HOST ${config.host} does not resolve`,
  }
  const reason = error.code === undefined ? undefined : reasons[error.code]
  if (reason === undefined) throw error
  log.flush()
  process.stderr.write(`keygate: ${reason}\n`)
  process.exit(1)
}

function urlOf(config: Config, port: number): string {
  const host = config.host.includes(':') ? `[${config.host}]` : config.host
  return `${config.tls ? 'https' : 'http'}://${host}:${port}`
}

/**
 * Stops accepting, answers every request already received (with `Connection: close`), gives
 * keep-alive connections a short grace to send their next request, closes idle ones, then exits 0;
 * exit 1 when `timeoutMs` passes first.
 */
function shutdown(
  server: Server,
  log: Logger,
  timeoutMs: number,
  signal: NodeJS.Signals,
  { dropHandshakes, whenDrained, dropIdle }: { dropHandshakes?: () => void; whenDrained?: (done: () => void) => void; dropIdle?: () => void },
): void {
  log.info('shutting down', { signal, timeoutMs })
  // A TLS connection still in its handshake has sent no request: nothing is lost by closing it.
  dropHandshakes?.()
  server.prependListener('request', (_req, res) => res.setHeader('connection', 'close'))
  const exit = (code: number): never => {
    log.flush()
    process.exit(code)
  }
  const stopped = () => {
    log.info('stopped', { signal, ...(whenDrained === undefined && { acceptedConnections: accepted.connections }) })
    exit(0)
  }
  // net.Server's close stops accepting without http.Server's closeIdleConnections(), which would
  // cut a connection whose next request is already on its way. A cluster worker has no listening
  // socket to close: the primary has stopped accepting, and it waits for its connections instead.
  if (whenDrained === undefined) NetServer.prototype.close.call(server, stopped)
  else whenDrained(stopped)
  const graceMs = Math.min(MAX_DRAIN_GRACE_MS, Math.floor(timeoutMs / 4))
  setTimeout(() => {
    server.closeIdleConnections()
    dropIdle?.()
    setInterval(() => server.closeIdleConnections(), CLOSE_IDLE_EVERY_MS).unref()
  }, graceMs).unref()
  setTimeout(() => {
    log.error('shutdown timed out: requests still in flight were cut off', { timeoutMs })
    exit(1)
  }, timeoutMs).unref()
}

await main()
