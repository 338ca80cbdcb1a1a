#!/usr/bin/env node
/** Entry point: configuration from the environment, the HTTP server, signals and clean shutdown. */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ConfigError, DEMO_KEY, loadConfig, type Config } from './config.js'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { createHandler, type Handler } from './handler.js'
import { createKeyStore, type KeyStore } from './keys.js'
import { createSwappableKeyStore, ENV_KEY_ID, loadKeysFile, startKeysFileReloads, type KeysFileReloader } from './keys-file.js'
import { createLogger, type Logger } from './log.js'
import { answerClientError } from './respond.js'
import { createThrottle } from './throttle.js'
import { MIN_TLS_VERSION, loadTlsPair, reloadTls, type TlsPair } from './tls.js'

// How often node:http looks for connections past their headers or request timeout (its default
// is 30 s): a quarter of the headers timeout, so a slow client is closed within 1.25 times it.
const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000
const MIN_TIMEOUT_CHECK_INTERVAL_MS = 10

function main(): void {
  const { config, warnings } = loadConfigOrExit()
  const log = createLogger({ level: config.logLevel, write: (chunk) => process.stdout.write(chunk) })
  for (const warning of warnings) log.warn(warning)
  const { keys, reloader } = exitOnConfigError(() => loadKeys(config, log), log)
  const tls = config.tls
  const tlsPair = tls === undefined ? undefined : exitOnConfigError(() => loadTlsPair(tls), log)
  const throttle = config.authFailLimit === 0 ? undefined : createThrottle({
    limit: config.authFailLimit,
    windowMs: config.authFailWindowS * 1000,
    maxClients: config.throttleMaxClients,
  })
  const handler = createHandler({ keys, log, throttle, trustProxy: config.trustProxy })
  const server = createHttpServer(config, handler, tlsPair)
  server.on('clientError', answerClientError)
  server.on('error', (error: NodeJS.ErrnoException) => exitOnListenError(error, config, log))
  server.listen(config.port, config.host, () => {
    const { port } = server.address() as AddressInfo
    const url = `${tlsPair ? 'https' : 'http'}://${urlHost(config.host)}:${port}`
    log.info('listening', { url, keys: keys.size, pid: process.pid, ...(tlsPair && { certificateValidTo: tlsPair.validTo }) })
  })
  // Without a handler SIGHUP would kill the process.
  process.on('SIGHUP', () => {
    if (reloader === undefined && tls === undefined) log.info('SIGHUP: no API_KEYS_FILE or TLS certificate to reload')
    reloader?.reload('SIGHUP')
    if (tls !== undefined) reloadTls(server as HttpsServer, tls, log)
  })
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      reloader?.close()
      shutdown(server, log, config.shutdownTimeoutMs, signal)
    })
  }
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

/** The key store for the configuration: the keys file (reloaded as it changes) plus `API_KEY`, or the demo key. */
function loadKeys(config: Config, log: Logger): { keys: KeyStore; reloader?: KeysFileReloader } {
  if (config.keysFile === undefined) {
    const id = config.demo ? 'demo' : ENV_KEY_ID
    return { keys: createKeyStore([{ id, key: config.apiKey ?? DEMO_KEY }]) }
  }
  const file = config.keysFile
  const { store, text } = loadKeysFile(file, config.apiKey)
  const keys = createSwappableKeyStore(store)
  return { keys, reloader: startKeysFileReloads({ file, envKey: config.apiKey, store: keys, initialText: text, log }) }
}

function loadConfigOrExit(): ReturnType<typeof loadConfig> {
  return exitOnConfigError(() => loadConfig(process.env))
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

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

/** Stops accepting, lets requests in flight finish, closes idle keep-alive sockets, then exits. */
function shutdown(server: Server, log: Logger, timeoutMs: number, signal: NodeJS.Signals): void {
  log.info('shutting down', { signal, timeoutMs })
  // Responses written from now on tell the client not to reuse the connection.
  server.prependListener('request', (_req, res) => res.setHeader('connection', 'close'))
  const exit = (code: number): never => {
    log.flush()
    process.exit(code)
  }
  server.close(() => {
    log.info('stopped', { signal })
    exit(0)
  })
  // A keep-alive socket whose response was already under way when the signal came becomes
  // idle once that response is written: close such sockets as they go idle.
  const closeIdle = setInterval(() => server.closeIdleConnections(), 50)
  closeIdle.unref()
  setTimeout(() => {
    log.error('shutdown timed out: requests still in flight were cut off', { timeoutMs })
    exit(1)
  }, timeoutMs).unref()
}

main()
