/** `createHandler()`: routes by method and path, authenticates, answers with prepared replies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { authenticate, type AuthFailure, type AuthResult } from './auth.js'
import { discardBody, hasUnreadBody } from './body.js'
import { clientAddressOf } from './client.js'
import type { KeyStore } from './keys.js'
import { silentLogger, type Logger } from './log.js'
import { createEmptyReply, createReply, requestIdOf, sendReply, type Reply } from './respond.js'
import { throttleKeyOf, type Throttle } from './throttle.js'

export interface HandlerOptions {
  /** The keys that unlock `/data` and `/auth`. */
  keys: KeyStore
  /** Receives one `request` line per answered request (at `info`) and route errors. Default: silent. */
  log?: Logger
  /** Blocks clients after repeated failures (429). Default: no throttling. */
  throttle?: Throttle
  /** Proxy hops trusted in `X-Forwarded-For` to find the client address. Default 0: the socket peer. */
  trustProxy?: number
}

/** Connect/Express-style continuation: called for paths keygate does not own. */
export type Next = (err?: unknown) => void
/** A `node:http` request listener that also mounts as Connect/Express middleware. */
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: Next) => void

/** Why a request that needed a key was refused, as the access log says it. */
export type RefusalReason = AuthFailure | 'throttled'
type Outcome = AuthResult | { ok: false; reason: 'throttled'; keyId?: undefined }
const THROTTLED: Outcome = Object.freeze({ ok: false, reason: 'throttled' })

const ALLOW = 'GET, HEAD, OPTIONS'
const REPLY = {
  data: createReply(200, '{"message":"Here is your data"}'),
  healthy: createReply(200, '{"status":"ok"}'),
  notFound: createReply(404, '{"error":"Not Found"}'),
  methodNotAllowed: createReply(405, '{"error":"Method Not Allowed"}', ['allow', ALLOW]),
  options: createEmptyReply(204, ['allow', ALLOW]),
  keyAccepted: createEmptyReply(204),
  // RFC 6750 section 3: no error code when no credential was presented, invalid_token otherwise.
  noCredential: createReply(401, '{"error":"Unauthorized"}', ['www-authenticate', 'Bearer realm="keygate"']),
  badCredential: createReply(401, '{"error":"Unauthorized"}', [
    'www-authenticate',
    'Bearer realm="keygate", error="invalid_token"',
  ]),
  tooLarge: createReply(413, '{"error":"Payload Too Large"}', ['connection', 'close']),
  throttled: createReply(429, '{"error":"Too Many Requests"}'),
  internalError: createReply(500, '{"error":"Internal Server Error"}'),
} satisfies Record<string, Reply>

/** What a route needs to know about the request beyond `req`. */
interface Context {
  requestId: string
  client: string
}

/** A route answers the request and returns the authentication outcome, if it needed a key. */
type Route = (req: IncomingMessage, res: ServerResponse, context: Context) => Outcome | undefined

/** Creates the keygate request handler; unmatched paths go to `next` when given, else 404. */
export function createHandler(options: HandlerOptions): Handler {
  const { keys, log = silentLogger, throttle, trustProxy = 0 } = validateOptions(options)
  const routes = createRoutes(keys, throttle)
  const logging = log.enabled('info')
  const needsClient = logging || throttle !== undefined

  const dispatch = (req: IncomingMessage, res: ServerResponse, route: Route | undefined, path: string, startedMs: number, context: Context) => {
    let outcome: Outcome | undefined
    try {
      if (route === undefined) sendReply(req, res, REPLY.notFound, context.requestId)
      else outcome = route(req, res, context)
    } catch (error) {
      sendInternalError(req, res, context.requestId, log, error)
    }
    if (logging) logRequest(log, req, res, path, startedMs, context, outcome)
  }

  return function keygate(req, res, next) {
    const startedMs = logging ? performance.now() : 0
    const path = pathnameOf(req.url)
    const route = routes.get(path)
    if (route === undefined && next !== undefined) return next()
    const context: Context = { requestId: requestIdOf(req), client: needsClient ? clientAddressOf(req, trustProxy) : '' }
    if (!hasUnreadBody(req)) return dispatch(req, res, route, path, startedMs, context)
    discardBody(
      req,
      () => dispatch(req, res, route, path, startedMs, context),
      () => {
        sendReply(req, res, REPLY.tooLarge, context.requestId)
        if (logging) logRequest(log, req, res, path, startedMs, context, undefined)
      },
    )
  }
}

function validateOptions(options: HandlerOptions): HandlerOptions {
  const fail = (message: string) => new TypeError(`createHandler(options): ${message}`)
  if (options === null || typeof options !== 'object') throw fail('options must be an object')
  if (typeof options.keys?.lookup !== 'function') throw fail('keys must be a key store from createKeyStore()')
  if (options.log !== undefined && typeof options.log.info !== 'function') throw fail('log must be a logger from createLogger()')
  if (options.throttle !== undefined && typeof options.throttle.recordFailure !== 'function') {
    throw fail('throttle must come from createThrottle()')
  }
  const { trustProxy } = options
  if (trustProxy !== undefined && (!Number.isSafeInteger(trustProxy) || trustProxy < 0)) {
    throw fail('trustProxy must be a whole number of proxy hops (0 or more)')
  }
  return options
}

function createRoutes(keys: KeyStore, throttle: Throttle | undefined): Map<string, Route> {
  /** Throttle check, then key check; sends the 429 or 401 itself. */
  const checkKey = (req: IncomingMessage, res: ServerResponse, { requestId, client }: Context): Outcome => {
    const now = Date.now()
    const throttleKey = throttle === undefined ? '' : throttleKeyOf(client)
    const waitS = throttle === undefined ? 0 : throttle.retryAfterS(throttleKey, now)
    if (waitS > 0) {
      sendReply(req, res, REPLY.throttled, requestId, ['retry-after', String(waitS)])
      return THROTTLED
    }
    const auth = authenticate(keys, req, now)
    if (!auth.ok) {
      // A request without any credential guesses nothing: only wrong and expired keys count.
      if (throttle !== undefined && auth.reason !== 'missing') throttle.recordFailure(throttleKey, now)
      sendReply(req, res, auth.reason === 'missing' ? REPLY.noCredential : REPLY.badCredential, requestId)
    }
    return auth
  }
  const requireKey = (reply: Reply): Route => (req, res, context) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, context.requestId)
      return undefined
    }
    const outcome = checkKey(req, res, context)
    if (outcome.ok) sendReply(req, res, reply, context.requestId)
    return outcome
  }
  const open = (reply: Reply): Route => (req, res, { requestId }) => {
    if (req.method === 'GET' || req.method === 'HEAD') sendReply(req, res, reply, requestId)
    else sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, requestId)
    return undefined
  }
  // Forward-auth for reverse proxies: every method, OPTIONS included, needs a key.
  const forwardAuth: Route = (req, res, context) => {
    const outcome = checkKey(req, res, context)
    if (outcome.ok) sendReply(req, res, REPLY.keyAccepted, context.requestId, ['x-keygate-key-id', outcome.keyId])
    return outcome
  }
  return new Map([
    ['/data', requireKey(REPLY.data)],
    ['/healthz', open(REPLY.healthy)],
    ['/auth', forwardAuth],
  ])
}

/** The path of the request target, without the query; absolute-form targets are accepted too. */
function pathnameOf(url = '/'): string {
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
  startedMs: number,
  { requestId, client }: Context,
  outcome: Outcome | undefined,
): void {
  log.info('request', {
    method: req.method,
    path: path.length > MAX_LOGGED_PATH ? path.slice(0, MAX_LOGGED_PATH) : path,
    status: res.statusCode,
    ms: Math.round((performance.now() - startedMs) * 1000) / 1000,
    keyId: outcome?.keyId,
    reason: outcome?.ok === false ? outcome.reason : undefined,
    client,
    requestId,
  })
}
