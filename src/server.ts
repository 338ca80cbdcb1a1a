#!/usr/bin/env node
/** Entry point: configuration from the environment, the server (or the cluster), signals and clean shutdown. */
import cluster from 'node:cluster'
import { createServer, type Server } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { Server as NetServer, type AddressInfo } from 'node:net'
import { availableParallelism } from 'node:os'
import { connectWorkerMetrics, runPrimary } from './cluster.js'
import { ConfigError, DEMO_KEY, loadConfig, type Config } from './config.js'
import { createHandler, type Handler } from './handler.js'
import { createKeyStore, type KeyStore } from './keys.js'
import { createSwappableKeyStore, ENV_KEY_ID, loadKeysFile, startKeysFileReloads, type SwappableKeyStore } from './keys-file.js'
import { createLogger, type Logger } from './log.js'
import { createMetrics, type Metrics } from './metrics.js'
import { answerClientError } from './respond.js'
import { createThrottle, type Throttle } from './throttle.js'
import { MIN_TLS_VERSION, loadTlsPair, reloadTls, type TlsPair } from './tls.js'

// How often node:http looks for connections past their headers or request timeout (its default
// is 30 s): a quarter of the headers timeout, so a slow client is closed within 1.25 times it.
const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000
const MIN_TIMEOUT_CHECK_INTERVAL_MS = 10
// On shutdown, keep-alive connections get this long to send their next request (answered with
// `Connection: close`) before idle ones are closed: closing at once could reset a request in transit.
const MAX_DRAIN_GRACE_MS = 1000
const CLOSE_IDLE_EVERY_MS = 50

function main(): void {
  const { config, warnings } = exitOnConfigError(() => loadConfig(process.env, availableParallelism()))
  const log = createLogger({
    level: config.logLevel,
    fd: 1,
    // Workers and the primary share stdout: pieces a pipe writes atomically, and each worker's number.
    shared: config.workers > 1,
    base: cluster.isWorker ? { worker: cluster.worker?.id } : undefined,
  })
  process.on('exit', () => log.flush())
  process.on('uncaughtException', (error) => {
    log.error('fatal error: exiting', { error: error.stack ?? String(error) })
    log.flush()
    process.stderr.write(`keygate: fatal error: ${error.stack ?? String(error)}\n`)
    process.exit(1)
  })
  if (cluster.isPrimary) for (const warning of warnings) log.warn(warning)
  if (config.workers > 1 && cluster.isPrimary) {
    // Check keys and certificates once here, so a mistake is one line and exit 1, not a crash loop.
    exitOnConfigError(() => loadKeys(config), log)
    if (config.tls !== undefined) exitOnConfigError(() => loadTlsPair(config.tls as NonNullable<Config['tls']>), log)
    return runPrimary(config, log, (port) => urlOf(config, port))
  }
  serve(config, log)
}

/** Runs one serving process: the whole server, or one cluster worker. */
function serve(config: Config, log: Logger): void {
  const loaded = exitOnConfigError(() => loadKeys(config), log)
  const keys = loaded.keys
  const tls = config.tls
  const tlsPair = tls === undefined ? undefined : exitOnConfigError(() => loadTlsPair(tls), log)
  const throttle = createThrottleFor(config)
  const metrics = createMetrics({
    keysLoaded: () => keys.size,
    throttleClients: () => throttle?.size ?? 0,
    logLinesDropped: () => log.dropped,
  })
  const reloader = loaded.reload === undefined
    ? undefined
    : startKeysFileReloads({ ...loaded.reload, store: loaded.keys, log, onReload: (ok) => metrics.recordKeyReload(ok) })
  const handler = createHandler({
    keys,
    log,
    throttle,
    trustProxy: config.trustProxy,
    metrics,
    collectMetrics: cluster.isWorker ? connectWorkerMetrics(metrics) : undefined,
  })
  const server = createHttpServer(config, handler, tlsPair)
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    const status = answerClientError(error, socket)
    if (status !== 0) metrics.recordClientError(status)
  })
  server.on('error', (error: NodeJS.ErrnoException) => exitOnListenError(error, config, log))
  server.listen(config.port, config.host, () => {
    const { port } = server.address() as AddressInfo
    // In a cluster the primary announces the one URL; each worker says so at debug.
    const fields = { url: urlOf(config, port), keys: keys.size, pid: process.pid, ...(tlsPair && { certificateValidTo: tlsPair.validTo }) }
    if (cluster.isWorker) log.debug('worker listening', fields)
    else log.info('listening', fields)
  })
  process.on('SIGHUP', () => {
    if (reloader === undefined && tls === undefined) log.info('SIGHUP: no API_KEYS_FILE or TLS certificate to reload')
    reloader?.reload('SIGHUP')
    if (tls !== undefined) reloadTls(server as HttpsServer, tls, log)
  })
  let stopping = false
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return // Ctrl-C reaches a whole process group: the primary forwards it again
      stopping = true
      reloader?.close()
      shutdown(server, log, config.shutdownTimeoutMs, signal)
    })
  }
}

function createThrottleFor(config: Config): Throttle | undefined {
  if (config.authFailLimit === 0) return undefined
  return createThrottle({ limit: config.authFailLimit, windowMs: config.authFailWindowS * 1000, maxClients: config.throttleMaxClients })
}

/** An HTTP server, or HTTPS when the pair is given, with the configured timeouts; it does not listen yet. */
function createHttpServer(config: Config, handler: Handler, tlsPair: TlsPair | undefined): Server {
  const options = {
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(
      MIN_TIMEOUT_CHECK_INTERVAL_MS,
      Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, Math.floor(config.headersTimeoutMs / 4)),
    ),
  }
  if (tlsPair === undefined) return createServer(options, handler)
  return createHttpsServer({ ...options, cert: tlsPair.cert, key: tlsPair.key, minVersion: MIN_TLS_VERSION }, handler)
}

/** The key store for the configuration: the keys file (with what reloads need) plus `API_KEY`, or the demo key. */
function loadKeys(config: Config):
  | { keys: KeyStore; reload?: undefined }
  | { keys: SwappableKeyStore; reload: { file: string; envKey?: string; initialText: string } } {
  if (config.keysFile === undefined) {
    const id = config.demo ? 'demo' : ENV_KEY_ID
    return { keys: createKeyStore([{ id, key: config.apiKey ?? DEMO_KEY }]) }
  }
  const { store, text } = loadKeysFile(config.keysFile, config.apiKey)
  return { keys: createSwappableKeyStore(store), reload: { file: config.keysFile, envKey: config.apiKey, initialText: text } }
}

/** Runs `load`; a `ConfigError` (a user's mistake) becomes one stderr line and exit 1, anything else a crash. */
function exitOnConfigError<T>(load: () => T, log?: Logger): T {
  try {
    return load()
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
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
function shutdown(server: Server, log: Logger, timeoutMs: number, signal: NodeJS.Signals): void {
  log.info('shutting down', { signal, timeoutMs })
  server.prependListener('request', (_req, res) => res.setHeader('connection', 'close'))
  const exit = (code: number): never => {
    log.flush()
    process.exit(code)
  }
  // net.Server's close stops accepting without http.Server's closeIdleConnections(), which would
  // cut a connection whose next request is already on its way.
  NetServer.prototype.close.call(server, () => {
    log.info('stopped', { signal })
    exit(0)
  })
  const graceMs = Math.min(MAX_DRAIN_GRACE_MS, Math.floor(timeoutMs / 4))
  setTimeout(() => {
    server.closeIdleConnections()
    setInterval(() => server.closeIdleConnections(), CLOSE_IDLE_EVERY_MS).unref()
  }, graceMs).unref()
  setTimeout(() => {
    log.error('shutdown timed out: requests still in flight were cut off', { timeoutMs })
    exit(1)
  }, timeoutMs).unref()
}

main()
