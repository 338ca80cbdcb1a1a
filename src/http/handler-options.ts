/** What `createHandler()` takes: the options, their defaults, and their checks. */
import type { KeyStore } from '../keys/store.js'
import type { RateLimitStore } from '../limits/rate-limit.js'
import type { Throttle } from '../limits/throttle.js'
import type { Logger } from '../observe/log.js'
import { createMetrics, type Metrics, type MetricsGauges, type MetricsSnapshot } from '../observe/metrics.js'
import type { Proxy } from './forwarding.js'
import { resolveRoutePaths, type RoutePaths } from './route-paths.js'

export interface HandlerOptions {
  /** The keys that unlock `/data` and `/auth`. */
  keys: KeyStore
  /** Receives one `request` line per answered request (at `info`) and route errors. Default: silent. */
  log?: Logger
  /** Blocks clients after repeated failures (429). Default: no throttling. */
  throttle?: Throttle
  /** Proxy hops trusted in `X-Forwarded-For` to find the client address. Default 0: the socket peer. */
  trustProxy?: number
  /** Where requests are counted. Default: counters of this handler's own. */
  metrics?: Metrics
  /** What `GET /metrics` shows. Default: this process's snapshot; a cluster worker asks for the whole server. */
  collectMetrics?: () => MetricsSnapshot | Promise<MetricsSnapshot>
  /**
   * The built-in routes this handler owns: each at another path, or `false` to leave that path to
   * the host app. Default `{ data: '/data', healthz: '/healthz', auth: '/auth', metrics: '/metrics' }`.
   */
  routes?: RoutePaths
  /** Where the per-key rate-limit state lives. Default: this handler's memory. */
  rateLimits?: RateLimitStore
  /**
   * Proxy mode: every path but keygate's own goes to this service, once allowed (from
   * `createProxy`); paths under `/_keygate/` that are no route of keygate's get 404. `next` is never called.
   */
  proxy?: Proxy
  /** Request bodies above this get 413 on keygate's own routes (default 1 MiB). */
  maxBodyBytes?: number
  /**
   * What is not ready now, for `/readyz` (503 naming each; 200 when none). Default: always ready.
   * The server adds a limits store away in `closed` mode, an unreachable service, shutting down.
   */
  readiness?: () => string[] | Promise<string[]>
  /**
   * The clock of key expiry, earlier keys' `until` and quota periods, in milliseconds since the
   * epoch. Default `Date.now`; a test sets it to cross a period's end without waiting for it.
   */
  now?: () => number
}

/**
 * Counters whose gauges read these keys, throttle, logger (and limits store): what a handler counts
 * by default. `gauges` adds or replaces gauges (the server's TLS certificate expiry).
 */
export function createHandlerMetrics(
  keys: KeyStore,
  throttle: Throttle | undefined,
  log: Logger,
  store?: { up(): number; errors(): number },
  gauges: Partial<MetricsGauges> = {},
): Metrics {
  return createMetrics({
    keysLoaded: () => keys.size,
    throttleClients: () => throttle?.size ?? 0,
    logLinesDropped: () => log.dropped,
    ...(store !== undefined && { limitsStoreUp: store.up, limitsStoreErrors: store.errors }),
    ...gauges,
  })
}

/** The options as given, once each is known to be of its kind; throws a `TypeError` naming the option. */
export function validateOptions(options: HandlerOptions, caller = 'createHandler'): HandlerOptions {
  const fail = (message: string) => new TypeError(`${caller}(options): ${message}`)
  if (options === null || typeof options !== 'object') throw fail('options must be an object')
  if (typeof options.keys?.lookup !== 'function') throw fail('keys must be a key store from createKeyStore()')
  if (options.log !== undefined && typeof options.log.info !== 'function') throw fail('log must be a logger from createLogger()')
  if (options.throttle !== undefined && typeof options.throttle.recordFailure !== 'function') {
    throw fail('throttle must come from createThrottle()')
  }
  if (options.routes !== undefined && (options.routes === null || typeof options.routes !== 'object')) throw fail('routes must be an object of paths')
  try {
    resolveRoutePaths(options.routes)
  } catch (error) {
    throw fail((error as Error).message)
  }
  if (options.readiness !== undefined && typeof options.readiness !== 'function') throw fail('readiness must be a function returning what is not ready')
  if (options.now !== undefined && typeof options.now !== 'function') throw fail('now must be a function returning milliseconds since the epoch')
  const { trustProxy } = options
  if (trustProxy !== undefined && (!Number.isSafeInteger(trustProxy) || trustProxy < 0)) {
    throw fail('trustProxy must be a whole number of proxy hops (0 or more)')
  }
  return options
}
