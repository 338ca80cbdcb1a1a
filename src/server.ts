#!/usr/bin/env node
/** Entry point: configuration from the environment, the server (or the cluster), signals and clean shutdown. */
import type { Server as HttpsServer } from 'node:https'
import type { Socket } from 'node:net'
import { availableParallelism } from 'node:os'
import { loadConfig, settingsOf, type Config } from './config.js'
import { createHandler } from './http/handler.js'
import { createHandlerMetrics } from './http/handler-options.js'
import { answerClientError } from './http/respond.js'
import { startKeysFileReloads } from './keys-file/reload.js'
import { createLogger, type Logger } from './observe/log.js'
import { exitOnConfigError, exitOnListenError } from './process/exits.js'
import { clientOfSocket, createHttpServer, listen, urlOf, type TlsModule } from './process/http-server.js'
import { afterReload, checkKeys, loadKeys, warnAboutKeys } from './process/keys.js'
import { createLimits } from './process/limits.js'
import { createReadiness } from './process/readiness.js'
import { collectGarbage } from './process/memory.js'
import { holdSighup, shutdown } from './process/shutdown.js'
import { nodeVersionProblem } from './version.js'

// node:cluster, node:https (with TLS) and their modules load only when configured: each costs
// startup time, and time to the first answer is part of what keygate promises.
type ClusterRole = { primary: true } | { primary: false; worker: number }

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
    if (config.tls !== undefined) {
      const pair = exitOnConfigError(() => tlsModule?.loadTlsPair(config.tls as NonNullable<Config['tls']>), log)
      warnAboutCertificate(pair && tlsModule?.certificateWarning(pair, config.tls.certFile), log)
    }
    const { runPrimary } = await import('./process/cluster.js')
    return runPrimary(config, log, (port) => urlOf(config, port), (error) => exitOnListenError(error, config, log))
  }
  await serve(config, log, tlsModule, role === undefined ? undefined : await import('./process/cluster-worker.js'))
}

function warnAboutCertificate(warning: string | undefined, log: Logger): void {
  if (warning !== undefined) log.warn(warning)
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
  if (worker === undefined) warnAboutCertificate(tls && tlsPair && tlsModule?.certificateWarning(tlsPair, tls.certFile), log)
  let certificateNotAfterMs = tlsPair === undefined ? NaN : Date.parse(tlsPair.validTo)
  // Waiting for Redis takes up to REDIS_TIMEOUT_MS: a SIGHUP meanwhile must not kill the process.
  const installSighup = holdSighup()
  const limits = await createLimits(config, log, worker)
  const throttle = limits.throttle
  const metrics = createHandlerMetrics(keys, throttle, log, limits.store, { certificateNotAfterMs: () => certificateNotAfterMs })
  const reloader = loaded.reload === undefined
    ? undefined
    : startKeysFileReloads({ ...loaded.reload, store: loaded.keys, log, onReload: (ok) => afterReload(ok, metrics) })
  const upstream = config.upstream
  const proxyModule = upstream === undefined ? undefined : await import('./proxy/proxy.js')
  const tunnelModule = upstream === undefined ? undefined : await import('./proxy/tunnel.js')
  const proxy = upstream && proxyModule?.createProxy({ upstream: upstream.url, timeoutMs: upstream.timeoutMs, maxBodyBytes: config.maxBodyBytes, trustProxy: config.trustProxy })
  const readiness = createReadiness(config, limits.store)
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
    readiness: readiness.problems,
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
    const renewed = tls === undefined ? undefined : tlsModule?.reloadTls(server as HttpsServer, tls, log)
    if (renewed !== undefined) certificateNotAfterMs = Date.parse(renewed.validTo)
  })
  let stopping = false
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return
    stopping = true
    readiness.shuttingDown()
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

await main()
