/** `createHandler()`: routes by method and path, authenticates, answers with prepared replies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { discardBody, hasUnreadBody, MAX_BODY_BYTES, takeContinue } from './body.js'
import type { Proxy } from './forwarding.js'
import { clientAddressOf } from './client.js'
import { createMemoryRateLimitStore, type RateLimitStore } from '../limits/rate-limit.js'
import type { KeyStore } from '../keys/store.js'
import { silentLogger, type Logger } from '../observe/log.js'
import { FAILURE_REASONS, ROUTE_NAMES, createMetrics, type Metrics, type MetricsSnapshot } from '../observe/metrics.js'
import { requestIdOf, sendReply } from './respond.js'
import { claimedVariant, createRoutes, EXPECTATION_FAILED, MALFORMED, PROXY_MODE_ROUTES, REPLY, resolveRoutePaths, type Context, type Outcome, type RouteEntry, type RoutePaths } from './routes.js'
import type { Throttle } from '../limits/throttle.js'

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
}

/** Connect/Express-style continuation: called for paths keygate does not own. */
export type Next = (err?: unknown) => void
/** A `node:http` request listener that also mounts as Connect/Express middleware. */
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: Next) => void

const OTHER_ROUTE = ROUTE_NAMES.indexOf('other')
const FAILURE_INDEX: Record<string, number> = Object.fromEntries(FAILURE_REASONS.map((reason, i) => [reason, i]))

/** Creates the keygate request handler; unmatched paths go to `next` when given, else 404. */
export function createHandler(options: HandlerOptions): Handler {
  const { keys, log = silentLogger, throttle, trustProxy = 0 } = validateOptions(options)
  const metrics = options.metrics ?? createHandlerMetrics(keys, throttle, log)
  const localSnapshot = () => metrics.snapshot()
  const paths = resolveRoutePaths(options.routes ?? (options.proxy === undefined ? undefined : PROXY_MODE_ROUTES))
  const routes = createRoutes(keys, throttle, options.collectMetrics ?? localSnapshot, localSnapshot, paths, options.rateLimits ?? createMemoryRateLimitStore(), options.proxy)
  const maxBodyBytes = options.maxBodyBytes || MAX_BODY_BYTES
  const claimed = claimedVariant(paths)
  const logging = log.enabled('info')

  /** Counts and logs one answered request. */
  const finish = (req: IncomingMessage, res: ServerResponse, path: string, routeIndex: number, startedMs: number, context: Context, outcome?: Outcome) => {
    const ms = performance.now() - startedMs
    const failure = outcome === undefined || outcome.ok ? -1 : (FAILURE_INDEX[outcome.reason] ?? -1)
    metrics.recordRequest(routeIndex, res.statusCode, ms / 1000, failure)
    if (context.upstream !== undefined) metrics.recordUpstream(context.upstream.status, context.upstream.error)
    if (logging) logRequest(log, req, res, path, ms, context, outcome)
  }
  const dispatch = (req: IncomingMessage, res: ServerResponse, entry: RouteEntry | undefined, path: string, startedMs: number, context: Context, bodyUnread = false) => {
    let outcome: Outcome | undefined | Promise<Outcome>
    try {
      if (entry === undefined) sendReply(req, res, REPLY.notFound, context.requestId)
      else outcome = entry.route(req, res, context)
    } catch (error) {
      sendInternalError(req, res, context.requestId, log, error)
    }
    const index = entry?.index ?? OTHER_ROUTE
    const settle = (settled: Outcome | undefined) => {
      // A refused request's body is never read: the connection cannot carry another request.
      if (bodyUnread && settled?.ok !== true && !req.readableEnded) closeAfterAnswer(req, res)
      finish(req, res, path, index, startedMs, context, settled)
    }
    // A decision from a store in another process comes later: count and log the request then.
    if (!(outcome instanceof Promise)) return settle(outcome)
    outcome.then(
      settle,
      (error: unknown) => {
        sendInternalError(req, res, context.requestId, log, error)
        finish(req, res, path, index, startedMs, context)
      },
    )
  }

  return function keygate(req, res, next) {
    const startedMs = performance.now()
    // The usual target is a bare path: look it up as it is before taking it apart.
    const target = req.url ?? '/'
    let path = target
    let entry = routes(target)
    if (entry === undefined) entry = routes((path = pathnameOf(target)))
    if (entry === undefined && routes.fallback !== undefined && !path.startsWith(OWN_PREFIX)) entry = routes.fallback
    // `/DATA` or `/data/` is not keygate's route, but a lenient host router may think it is its own `/data`.
    if (entry === undefined && next !== undefined && !claimed(path)) return next()
    const context = new RequestContext(requestIdOf(req), req, trustProxy)
    // Before the body: a request HTTP forbids is answered without reading what it sends.
    const refused = refuseBadProtocol(req, res, context.requestId)
    if (refused !== undefined) return finish(req, res, path, entry?.index ?? OTHER_ROUTE, startedMs, context, refused)
    if (!hasUnreadBody(req)) return dispatch(req, res, entry, path, startedMs, context)
    // The proxy streams the body on once the request is allowed; a refused one closes the connection.
    if (entry?.takesBody === true) return dispatch(req, res, entry, path, startedMs, context, true)
    if (takeContinue(req)) res.writeContinue()
    discardBody(
      req,
      () => dispatch(req, res, entry, path, startedMs, context),
      () => {
        sendReply(req, res, REPLY.tooLarge, context.requestId)
        finish(req, res, path, entry?.index ?? OTHER_ROUTE, startedMs, context)
      },
      maxBodyBytes,
    )
  }
}

// In proxy mode keygate's own routes live here; any other path below it is keygate's 404, never the service's.
const OWN_PREFIX = '/_keygate/'

function closeAfterAnswer(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket as IncomingMessage['socket'] & { destroySoon?: () => void }
  const close = () => (socket.destroySoon === undefined ? socket.destroy() : socket.destroySoon())
  if (res.writableFinished) close()
  else res.once('finish', close)
}

/** What a route needs beyond `req`; the client's address is worked out only if something asks for it. */
class RequestContext implements Context {
  private address: string | undefined
  original: Context['original'] = undefined

  constructor(
    readonly requestId: string,
    private readonly req: IncomingMessage,
    private readonly trustProxy: number,
  ) {}

  get client(): string {
    this.address ??= clientAddressOf(this.req, this.trustProxy)
    return this.address
  }
}

/** Counters whose gauges read these keys, throttle, logger (and limits store): what a handler counts by default. */
export function createHandlerMetrics(keys: KeyStore, throttle: Throttle | undefined, log: Logger, store?: { up(): number; errors(): number }): Metrics {
  return createMetrics({
    keysLoaded: () => keys.size,
    throttleClients: () => throttle?.size ?? 0,
    logLinesDropped: () => log.dropped,
    ...(store !== undefined && { limitsStoreUp: store.up, limitsStoreErrors: store.errors }),
  })
}

function validateOptions(options: HandlerOptions): HandlerOptions {
  const fail = (message: string) => new TypeError(`createHandler(options): ${message}`)
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
  const { trustProxy } = options
  if (trustProxy !== undefined && (!Number.isSafeInteger(trustProxy) || trustProxy < 0)) {
    throw fail('trustProxy must be a whole number of proxy hops (0 or more)')
  }
  return options
}

// Node's test for a request that waits for 100 Continue; any other expectation cannot be met (RFC 9110 section 10.1.1).
const CONTINUE_EXPECTATION = /(?:^|\W)100-continue(?:$|\W)/i

/**
 * Answers what HTTP itself forbids, with keygate's headers: HTTP/1.1 without `Host` (400, RFC 9112
 * section 3.2), a `#` in the request target (400: a fragment is never sent, and parsers disagree on
 * where such a path ends) and an `Expect` other than 100-continue (417). Node answers the first and
 * last bare by itself unless the server opts out (the keygate server does: `requireHostHeader: false`,
 * `checkExpectation`).
 */
function refuseBadProtocol(req: IncomingMessage, res: ServerResponse, requestId: string): Outcome | undefined {
  const headers = req.headers
  if ((headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor === 1) || req.url?.includes('#') === true) {
    sendReply(req, res, REPLY.badRequest, requestId)
    return MALFORMED
  }
  const expect = headers.expect
  if (expect === undefined || CONTINUE_EXPECTATION.test(expect)) return undefined
  sendReply(req, res, REPLY.expectationFailed, requestId)
  return EXPECTATION_FAILED
}

/** The path of the request target, without the query; absolute-form targets are accepted too. */
function pathnameOf(url: string): string {
  if (url.charCodeAt(0) === 47 /* "/" */) {
    const query = url.indexOf('?')
    return query === -1 ? url : url.slice(0, query)
  }
  // absolute-form (RFC 9112 section 3.2.2), as sent to proxies; anything else, such as "*", matches no route.
  try {
    return new URL(url).pathname
  } catch {
    return ''
  }
}

function sendInternalError(req: IncomingMessage, res: ServerResponse, requestId: string, log: Logger, error: unknown): void {
  log.error('route failed', { requestId, error: error instanceof Error ? error.message : String(error) })
  // Headers already on the wire cannot be taken back: cutting the connection is the only honest answer.
  if (res.headersSent) res.destroy()
  else sendReply(req, res, REPLY.internalError, requestId)
}

const MAX_LOGGED_PATH = 256

function logRequest(
  log: Logger,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  ms: number,
  context: Context,
  outcome: Outcome | undefined,
): void {
  log.access({
    method: req.method,
    path: path.length > MAX_LOGGED_PATH ? path.slice(0, MAX_LOGGED_PATH) : path,
    status: res.statusCode,
    ms,
    keyId: outcome?.keyId || undefined, // a public request has no key
    reason: outcome?.ok === false ? outcome.reason : undefined,
    client: context.client,
    requestId: context.requestId,
    // The route's own reading of it: canonical, without the query (which may hold secrets).
    ...(context.original !== undefined && context.original !== 'ambiguous' && {
      originalMethod: context.original.method,
      originalPath: context.original.path.slice(0, MAX_LOGGED_PATH),
    }),
    ...(context.upstream !== undefined && {
      upstreamStatus: context.upstream.status,
      upstreamMs: context.upstream.ms,
      upstreamError: context.upstream.error,
      upstreamErrorCode: context.upstream.code,
    }),
  })
}
