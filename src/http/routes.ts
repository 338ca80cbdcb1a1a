/** The routes keygate owns: their methods, key checks, throttling and prepared replies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { authenticate, isCredentialAuthorization, type AuthResult } from '../keys/auth.js'
import type { KeyStore } from '../keys/store.js'
import { ROUTE_NAMES, renderMetrics, type MetricsSnapshot, type RouteName } from '../observe/metrics.js'
import { createEmptyReply, createReply, sendReply, METRICS_TYPE, type Reply } from './respond.js'
import { THROTTLE_UNAVAILABLE, throttleKeyOf, type Throttle } from '../limits/throttle.js'
import { originalRequestOf, type OriginalRequest } from './original-request.js'
import type { RateDecision, RateLimit, RateLimitStore } from '../limits/rate-limit.js'
import { canonicalPath } from './canonical-path.js'
import type { Proxy, ProxyReplies, UpstreamResult } from './forwarding.js'

export type Outcome =
  | AuthResult
  | { ok: false; reason: 'throttled' | 'malformed' | 'expectation_failed' | 'limits_unavailable'; keyId?: undefined }
  | { ok: false; reason: 'forbidden' | 'rate_limited'; keyId: string }
/** A request that a `public` rule lets through without a key. */
const PUBLIC: Outcome = Object.freeze({ ok: true, keyId: '' })
const THROTTLED: Outcome = Object.freeze({ ok: false, reason: 'throttled' })
const LIMITS_UNAVAILABLE: Outcome = Object.freeze({ ok: false, reason: 'limits_unavailable' })
export const MALFORMED: Outcome = Object.freeze({ ok: false, reason: 'malformed' })
export const EXPECTATION_FAILED: Outcome = Object.freeze({ ok: false, reason: 'expectation_failed' })

const ALLOW = 'GET, HEAD, OPTIONS'
export const REPLY = {
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
  badRequest: createReply(400, '{"error":"Bad Request"}', ['connection', 'close']),
  expectationFailed: createReply(417, '{"error":"Expectation Failed"}', ['connection', 'close']),
  tooLarge: createReply(413, '{"error":"Payload Too Large"}', ['connection', 'close']),
  // A throttled client and a key past its rate limit: the same answer, with different headers added.
  tooManyRequests: createReply(429, '{"error":"Too Many Requests"}'),
  // RFC 6750 section 3.1: a valid token without the scope the request needs.
  forbidden: createReply(403, '{"error":"Forbidden"}', ['www-authenticate', 'Bearer realm="keygate", error="insufficient_scope"']),
  internalError: createReply(500, '{"error":"Internal Server Error"}'),
  // Proxy mode: the service could not be reached or failed before its answer; it did not answer in time.
  badGateway: createReply(502, '{"error":"Bad Gateway"}'),
  gatewayTimeout: createReply(504, '{"error":"Gateway Timeout"}'),
  // A shared limits store is away and LIMITS_ON_REDIS_FAILURE=closed: no decision, no answer.
  limitsUnavailable: createReply(503, '{"error":"Service Unavailable"}', ['retry-after', '1']),
} satisfies Record<string, Reply>

/** What a route needs to know about the request beyond `req`. */
export interface Context {
  readonly requestId: string
  /** The client's address (see `clientAddressOf`). */
  readonly client: string
  /** On `/auth`: the request the proxy asks about, as the route read it (for the access line). */
  original?: OriginalRequest | 'ambiguous'
  /** In proxy mode: how the exchange with the service went (for the access line and metrics). */
  upstream?: UpstreamResult
}

/** A route answers the request and returns the authentication outcome, if it needed a key. */
export type Route = (req: IncomingMessage, res: ServerResponse, context: Context) => Outcome | undefined | Promise<Outcome>

/** Writes the answer of an allowed request, with the rate-limit headers when the key has a limit; a proxied one settles later. */
type Answer = (req: IncomingMessage, res: ServerResponse, context: Context, outcome: Outcome & { ok: true }, headers: string[] | undefined) => void | Promise<void>

/** A route, its path and its index in `ROUTE_NAMES`, for the metrics. */
export interface RouteEntry {
  path: string
  route: Route
  index: number
  /** The route streams the request body on (the proxy) instead of having the handler discard it. */
  takesBody?: boolean
}

/** Finds the route of an exact path, or `undefined`; in proxy mode `fallback` takes every other path. */
export interface RouteTable {
  (path: string): RouteEntry | undefined
  readonly fallback?: RouteEntry
}

/** A built-in route that has a path of its own (the proxy takes every other path, `other` is none). */
export type OwnedRoute = Exclude<RouteName, 'other' | 'proxy'>
/** The built-in routes a handler owns, each at its path or turned off (`false`). */
export type RoutePaths = Partial<Record<OwnedRoute, string | false>>
const OWNED_ROUTES = ['data', 'healthz', 'auth', 'metrics'] as const
const ROUTE_PATH = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/

/** The paths of the routes a handler owns: the defaults (`/data` ...) with `paths` applied; throws a `TypeError`. */
export function resolveRoutePaths(paths: RoutePaths = {}): Map<OwnedRoute, string> {
  const resolved = new Map<OwnedRoute, string>()
  for (const name of OWNED_ROUTES) {
    const path = paths[name] ?? `/${name}`
    if (path === false) continue
    if (typeof path !== 'string' || !ROUTE_PATH.test(path)) throw new TypeError(`routes.${name} must be a path starting with "/" (no query) or false`)
    if ([...resolved.values()].includes(path)) throw new TypeError(`routes.${name}: ${path} is already the path of another route`)
    resolved.set(name, path)
  }
  return resolved
}

/**
 * The spellings of an owned path that a host router may treat as that path (`/DATA`, `/data/`,
 * `/%64ata`): keygate answers them with 404 itself, so that such a router never serves its own
 * route of that name without a key.
 */
export function claimedVariant(paths: ReadonlyMap<string, string>): (path: string) => boolean {
  const owned = new Set([...paths.values()].map(looseForm))
  return (path) => owned.has(looseForm(path))
}

function looseForm(path: string): string {
  let decoded = path
  try {
    decoded = decodeURIComponent(path)
  } catch {
    // a bad escape: compared as it is
  }
  return decoded.toLowerCase().replace(/\/+$/, '')
}

const LIMITED = Symbol('rate limited')
const UNDECIDED = Symbol('no store to decide')
/** The RateLimit headers for the answer, undefined for no limit (or no decision), LIMITED once the 429 is sent, UNDECIDED once the 503 is. */
type RateHeaders = string[] | undefined | typeof LIMITED | typeof UNDECIDED

function headersOf(decision: RateDecision | undefined, limit: RateLimit, req: IncomingMessage, res: ServerResponse, context: Context): RateHeaders {
  if (decision === undefined) return undefined
  if (decision.unavailable === true) {
    sendReply(req, res, REPLY.limitsUnavailable, context.requestId)
    return UNDECIDED
  }
  const headers = ['ratelimit-policy', limit.policyHeader, 'ratelimit', `"key";r=${decision.remaining};t=${decision.resetS}`]
  if (decision.allowed) return headers
  sendReply(req, res, REPLY.tooManyRequests, context.requestId, [...headers, 'retry-after', String(decision.retryAfterS)])
  return LIMITED
}

function settle(outcome: Outcome, headers: RateHeaders, req: IncomingMessage, res: ServerResponse, context: Context, answer: Answer): Outcome | Promise<Outcome> {
  if (headers === LIMITED) return rateLimited(outcome)
  if (headers === UNDECIDED) return LIMITS_UNAVAILABLE
  if (!outcome.ok) return outcome
  const answered = answer(req, res, context, outcome, headers)
  return answered instanceof Promise ? answered.then(() => outcome) : outcome
}

function refuseThrottled(waitS: number, req: IncomingMessage, res: ServerResponse, context: Context): Outcome {
  if (waitS === THROTTLE_UNAVAILABLE) {
    sendReply(req, res, REPLY.limitsUnavailable, context.requestId)
    return LIMITS_UNAVAILABLE
  }
  sendReply(req, res, REPLY.tooManyRequests, context.requestId, ['retry-after', String(waitS)])
  return THROTTLED
}

function refuseKey(auth: AuthResult & { ok: false }, req: IncomingMessage, res: ServerResponse, context: Context): Outcome {
  sendReply(req, res, auth.reason === 'missing' ? REPLY.noCredential : REPLY.badCredential, context.requestId)
  return auth
}

function rateLimited(outcome: Outcome): Outcome {
  return { ok: false, reason: 'rate_limited', keyId: outcome.keyId ?? '' }
}

/**
 * A key with rules may make only what they allow: otherwise 403 (not a failed attempt: the key is
 * valid). Without a request to match (`/auth` with no original request), a key with rules gets 403.
 */
function checkScope(
  outcome: Outcome,
  method: string | undefined,
  segments: readonly string[] | undefined,
  req: IncomingMessage,
  res: ServerResponse,
  context: Context,
): Outcome {
  if (!outcome.ok || outcome.policy === undefined) return outcome
  if (method !== undefined && segments !== undefined && outcome.policy.allows(method, segments)) return outcome
  sendReply(req, res, REPLY.forbidden, context.requestId)
  return { ok: false, reason: 'forbidden', keyId: outcome.keyId }
}

/** The route table. */
export function createRoutes(
  keys: KeyStore,
  throttle: Throttle | undefined,
  collectMetrics: () => MetricsSnapshot | Promise<MetricsSnapshot>,
  localSnapshot: () => MetricsSnapshot,
  paths: ReadonlyMap<OwnedRoute, string>,
  rateLimits: RateLimitStore,
  proxy?: Proxy,
): RouteTable {
  /**
   * After the scope, the key's rate limit: the RateLimit headers for the answer (undefined for a
   * key without a limit: no store is asked), or LIMITED once the 429 has been sent.
   */
  const rateHeaders = (outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context): RateHeaders | Promise<RateHeaders> => {
    const limit = outcome.ok ? outcome.rateLimit : undefined
    if (limit === undefined) return undefined
    const decision = rateLimits.take(limit.stateKey, limit, Date.now())
    if (decision instanceof Promise) return decision.then((settled) => headersOf(settled, limit, req, res, context))
    return headersOf(decision, limit, req, res, context)
  }
  /**
   * The rest of a keyed request once its rate limit is decided: at once with a memory store, when
   * the answer comes with a remote one (the route then returns a promise of its outcome).
   */
  const limitThenAnswer = (outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context, answer: Answer): Outcome | Promise<Outcome> => {
    const headers = rateHeaders(outcome, req, res, context)
    if (headers instanceof Promise) return headers.then((settled) => settle(outcome, settled, req, res, context, answer))
    return settle(outcome, headers, req, res, context, answer)
  }
  /**
   * Throttle check, then key check; sends the 429, 401 or 503 itself. A failed attempt counted by
   * a store in another process settles later (a promise): only failures wait, and nothing follows them.
   */
  const checkKey = (req: IncomingMessage, res: ServerResponse, context: Context): Outcome | Promise<Outcome> => {
    // While no client can be refused, there is no need to find out who this client is.
    if (throttle !== undefined && (throttle.mayRefuse ?? throttle.size > 0)) {
      const waitS = throttle.retryAfterS(throttleKeyOf(context.client), Date.now())
      if (waitS !== 0) return refuseThrottled(waitS, req, res, context)
    }
    const auth = authenticate(keys, req)
    if (auth.ok) return auth
    // A request without any credential guesses nothing: only wrong and expired keys count.
    if (throttle === undefined || auth.reason === 'missing') return refuseKey(auth, req, res, context)
    const waitS = throttle.recordFailure(throttleKeyOf(context.client), Date.now())
    const settleFailure = (settled: number) => (settled === 0 ? refuseKey(auth, req, res, context) : refuseThrottled(settled, req, res, context))
    return waitS instanceof Promise ? waitS.then(settleFailure) : settleFailure(waitS)
  }
  /** The keyed part of a route: key, scope, rate limit, answer. */
  const keyed = (req: IncomingMessage, res: ServerResponse, context: Context, method: string | undefined, segments: readonly string[] | undefined, answer: Answer) => {
    const auth = checkKey(req, res, context)
    if (auth instanceof Promise) return auth
    return limitThenAnswer(checkScope(auth, method, segments, req, res, context), req, res, context, answer)
  }
  // A `public` rule lets a request through without a key; while there is none, this is one property read.
  const isPublic = (method: string | undefined, segments: readonly string[]) =>
    keys.publicPolicy !== undefined && method !== undefined && keys.publicPolicy.allows(method, segments)
  const requireKey = (reply: Reply, segments: readonly string[]): Route => {
    const answer: Answer = (req, res, context, _outcome, headers) => sendReply(req, res, reply, context.requestId, headers)
    return (req, res, context) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, context.requestId)
      return undefined
    }
    if (isPublic(req.method, segments)) {
      sendReply(req, res, reply, context.requestId)
      return PUBLIC
    }
    return keyed(req, res, context, req.method, segments, answer)
    }
  }
  const open = (reply: Reply): Route => (req, res, { requestId }) => {
    if (req.method === 'GET' || req.method === 'HEAD') sendReply(req, res, reply, requestId)
    else sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, requestId)
    return undefined
  }
  // Forward-auth for reverse proxies: every method, OPTIONS included, needs a key, unless a public
  // rule lets the original request through. Scopes are matched against that original request.
  const answerAuth: Answer = (req, res, context, outcome, headers) =>
    sendReply(req, res, REPLY.keyAccepted, context.requestId, ['x-keygate-key-id', outcome.keyId, ...(headers ?? [])])
  const forwardAuth: Route = (req, res, context) => {
    const original = (context.original = originalRequestOf(req.headers))
    if (original === 'ambiguous') {
      sendReply(req, res, REPLY.badRequest, context.requestId)
      return MALFORMED
    }
    if (original !== undefined && keys.publicPolicy?.allows(original.method, original.segments) === true) {
      sendReply(req, res, REPLY.keyAccepted, context.requestId)
      return PUBLIC
    }
    return keyed(req, res, context, original?.method, original?.segments, answerAuth)
  }
  const answerScrape: Answer = (req, res, context, _outcome, headers) => {
    const send = (snapshot: MetricsSnapshot) => {
      if (!res.destroyed) sendReply(req, res, createReply(200, renderMetrics(snapshot), [], METRICS_TYPE), context.requestId, headers)
    }
    const snapshot = collectMetrics()
    // Should the cluster not answer, this process's own counters are still worth a scrape.
    if (snapshot instanceof Promise) snapshot.then(send, () => send(localSnapshot()))
    else send(snapshot)
  }
  const scrape: Route = (req, res, context) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, context.requestId)
      return undefined
    }
    if (isPublic(req.method, METRICS_SEGMENTS)) return limitThenAnswer(PUBLIC, req, res, context, answerScrape)
    return keyed(req, res, context, req.method, METRICS_SEGMENTS, answerScrape)
  }
  const segmentsOf = (name: OwnedRoute) => (paths.get(name) ?? `/${name}`).slice(1).split('/')
  const METRICS_SEGMENTS = segmentsOf('metrics')
  const routes: Record<OwnedRoute, Route> = { data: requireKey(REPLY.data, segmentsOf('data')), healthz: open(REPLY.healthy), auth: forwardAuth, metrics: scrape }
  const table = [...paths].map(([name, path]): RouteEntry => ({ path, route: routes[name], index: ROUTE_NAMES.indexOf(name) }))
  // Four comparisons, most ending at the length: cheaper than a Map, which would hash each request's new path string.
  const lookup = (path: string) => {
    for (const candidate of table) if (candidate.path === path) return candidate
    return undefined
  }
  if (proxy === undefined) return lookup
  // A public path or an authorized key: the request goes to the service, with the key's id.
  const forward = (dropAuthorization: (req: IncomingMessage) => boolean): Answer => (req, res, context, outcome, headers) =>
    proxy.forward(req, res, { keyId: outcome.keyId || undefined, requestId: context.requestId, dropAuthorization: dropAuthorization(req) }, headers).then((result) => {
      if (result !== undefined) context.upstream = result
    })
  // The credential goes no further than keygate: Authorization is dropped when it held the key
  // (on a public path too: a client may send its key everywhere); another scheme is the service's.
  const holdsCredential = (req: IncomingMessage) => isCredentialAuthorization(req.headers.authorization)
  const keyedForward = forward(holdsCredential)
  const publicForward = forward((req) => holdsCredential(req) && authenticate(keys, req).keyId !== undefined)
  const proxied: Route = (req, res, context) => {
    const url = req.url ?? ''
    const query = url.indexOf('?')
    const canonical = canonicalPath(query === -1 ? url : url.slice(0, query))
    // A path, a Host or a method the service could read otherwise than keygate checked it.
    if (!canonical.ok || proxy.ambiguityOf(req) !== undefined) {
      sendReply(req, res, REPLY.badRequest, context.requestId)
      return MALFORMED
    }
    if (isPublic(req.method, canonical.segments)) return settle(PUBLIC, undefined, req, res, context, publicForward)
    return keyed(req, res, context, req.method, canonical.segments, keyedForward)
  }
  return Object.assign(lookup, { fallback: { path: '', route: proxied, index: ROUTE_NAMES.indexOf('proxy'), takesBody: true } })
}

/** The answers the proxy writes itself, from the prepared replies. */
export const PROXY_REPLIES: ProxyReplies = {
  tooLarge: (req, res, requestId) => sendReply(req, res, REPLY.tooLarge, requestId),
  badGateway: (req, res, requestId) => sendReply(req, res, REPLY.badGateway, requestId),
  gatewayTimeout: (req, res, requestId) => sendReply(req, res, REPLY.gatewayTimeout, requestId),
}

/** keygate's own routes in proxy mode: every other path belongs to the service. */
export const PROXY_MODE_ROUTES: RoutePaths = { data: false, auth: false, healthz: '/_keygate/healthz', metrics: '/_keygate/metrics' }
