/** `createHandler()`: routes by method and path, authenticates, answers with prepared replies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { silentLogger, type Logger } from '../observe/log.js'
import { ROUTE_NAMES } from '../observe/metrics.js'
import { createMemoryRateLimitStore } from '../limits/rate-limit.js'
import { discardBody, hasUnreadBody, MAX_BODY_BYTES, takeContinue } from './body.js'
import type { Context } from './gate.js'
import { createHandlerMetrics, validateOptions, type HandlerOptions } from './handler-options.js'
import { EXPECTATION_FAILED, MALFORMED, REPLY, type Outcome } from './replies.js'
import { createRequestRecorder, RequestContext } from './request-record.js'
import { requestIdOf, sendReply } from './respond.js'
import { claimedVariant, PROXY_MODE_ROUTES, resolveRoutePaths } from './route-paths.js'
import { createRoutes, type RouteEntry } from './routes.js'

/** Connect/Express-style continuation: called for paths keygate does not own. */
export type Next = (err?: unknown) => void
/** A `node:http` request listener that also mounts as Connect/Express middleware. */
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: Next) => void

const OTHER_ROUTE = ROUTE_NAMES.indexOf('other')

/** Creates the keygate request handler; unmatched paths go to `next` when given, else 404. */
export function createHandler(options: HandlerOptions): Handler {
  const { keys, log = silentLogger, throttle, trustProxy = 0 } = validateOptions(options)
  const metrics = options.metrics ?? createHandlerMetrics(keys, throttle, log)
  const localSnapshot = () => metrics.snapshot()
  const paths = resolveRoutePaths(options.routes ?? (options.proxy === undefined ? undefined : PROXY_MODE_ROUTES))
  const rateLimits = options.rateLimits ?? createMemoryRateLimitStore()
  const sources = { keys, throttle, rateLimits, collectMetrics: options.collectMetrics ?? localSnapshot, localSnapshot, proxy: options.proxy, readiness: options.readiness, now: options.now }
  const routes = createRoutes(sources, paths)
  const maxBodyBytes = options.maxBodyBytes || MAX_BODY_BYTES
  const claimed = claimedVariant(paths)

  const finish = createRequestRecorder(metrics, log)
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
export function pathnameOf(url: string): string {
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

