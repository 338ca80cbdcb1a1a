/** `createHandler()`: routes by method and path, authenticates, answers with prepared replies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { authenticate, type AuthResult } from './auth.js'
import type { KeyStore } from './keys.js'
import { silentLogger, type Logger } from './log.js'
import { createEmptyReply, createReply, requestIdOf, sendReply, type Reply } from './respond.js'

export interface HandlerOptions {
  /** The keys that unlock `/data` and `/auth`. */
  keys: KeyStore
  /** Receives one `request` line per answered request (at `info`) and route errors. Default: silent. */
  log?: Logger
}

/** Connect/Express-style continuation: called for paths keygate does not own. */
export type Next = (err?: unknown) => void
/** A `node:http` request listener that also mounts as Connect/Express middleware. */
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: Next) => void

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
  internalError: createReply(500, '{"error":"Internal Server Error"}'),
} satisfies Record<string, Reply>

/** A route answers the request and returns the authentication outcome, if it needed a key. */
type Route = (req: IncomingMessage, res: ServerResponse, requestId: string) => AuthResult | undefined

/** Creates the keygate request handler; unmatched paths go to `next` when given, else 404. */
export function createHandler(options: HandlerOptions): Handler {
  const { keys, log = silentLogger } = validateOptions(options)
  const routes = createRoutes(keys)
  return function keygate(req, res, next) {
    const startedMs = log.enabled('info') ? performance.now() : 0
    const path = pathnameOf(req.url)
    const route = routes.get(path)
    if (route === undefined && next !== undefined) return next()
    const requestId = requestIdOf(req)
    let auth: AuthResult | undefined
    try {
      if (route === undefined) sendReply(req, res, REPLY.notFound, requestId)
      else auth = route(req, res, requestId)
    } catch (error) {
      sendInternalError(req, res, requestId, log, error)
    }
    if (startedMs !== 0) logRequest(log, req, res, path, startedMs, requestId, auth)
  }
}

function validateOptions(options: HandlerOptions): HandlerOptions {
  if (options === null || typeof options !== 'object') throw new TypeError('createHandler(options): options must be an object')
  if (typeof options.keys?.lookup !== 'function') throw new TypeError('createHandler(options): keys must be a key store from createKeyStore()')
  if (options.log !== undefined && typeof options.log.info !== 'function') throw new TypeError('createHandler(options): log must be a logger from createLogger()')
  return options
}

function createRoutes(keys: KeyStore): Map<string, Route> {
  const requireKey = (reply: Reply): Route => (req, res, requestId) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, requestId)
      return undefined
    }
    const auth = authenticate(keys, req)
    sendReply(req, res, auth.ok ? reply : refusalFor(auth), requestId)
    return auth
  }
  const open = (reply: Reply): Route => (req, res, requestId) => {
    if (req.method === 'GET' || req.method === 'HEAD') sendReply(req, res, reply, requestId)
    else sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, requestId)
    return undefined
  }
  // Forward-auth for reverse proxies: every method, OPTIONS included, needs a key.
  const forwardAuth: Route = (req, res, requestId) => {
    const auth = authenticate(keys, req)
    if (auth.ok) sendReply(req, res, REPLY.keyAccepted, requestId, ['x-keygate-key-id', auth.keyId])
    else sendReply(req, res, refusalFor(auth), requestId)
    return auth
  }
  return new Map([
    ['/data', requireKey(REPLY.data)],
    ['/healthz', open(REPLY.healthy)],
    ['/auth', forwardAuth],
  ])
}

function refusalFor(auth: AuthResult): Reply {
  return !auth.ok && auth.reason === 'missing' ? REPLY.noCredential : REPLY.badCredential
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
  requestId: string,
  auth: AuthResult | undefined,
): void {
  log.info('request', {
    method: req.method,
    path: path.length > MAX_LOGGED_PATH ? path.slice(0, MAX_LOGGED_PATH) : path,
    status: res.statusCode,
    ms: Math.round((performance.now() - startedMs) * 1000) / 1000,
    keyId: auth?.keyId,
    reason: auth?.ok === false ? auth.reason : undefined,
    client: req.socket.remoteAddress,
    requestId,
  })
}
