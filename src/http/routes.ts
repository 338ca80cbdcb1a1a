/**
 * keygate's own routes (`/data`, `/healthz`, `/auth`, `/metrics`) and proxy mode's route for every
 * other path: their methods and what each answers once the gate (gate.ts) lets a request through.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { authenticate, isCredentialAuthorization } from '../keys/auth.js'
import type { KeyStore } from '../keys/store.js'
import type { RateLimitStore } from '../limits/rate-limit.js'
import type { Throttle } from '../limits/throttle.js'
import { ROUTE_NAMES, type MetricsSnapshot } from '../observe/metrics.js'
import { renderMetrics } from '../observe/metrics-text.js'
import { canonicalPath } from './canonical-path.js'
import type { Proxy } from './forwarding.js'
import { createGate, type Answer, type Context, type Gate } from './gate.js'
import { originalRequestOf } from './original-request.js'
import { MALFORMED, PUBLIC, REPLY, type Outcome } from './replies.js'
import { createReply, METRICS_TYPE, sendReply, type Reply } from './respond.js'
import type { OwnedRoute } from './route-paths.js'

/** A route answers the request and returns the authentication outcome, if it needed a key. */
export type Route = (req: IncomingMessage, res: ServerResponse, context: Context) => Outcome | undefined | Promise<Outcome>

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

/** What the routes serve: the keys and limits of the gate, the metrics to scrape, and the service in proxy mode. */
export interface RouteSources {
  keys: KeyStore
  throttle: Throttle | undefined
  rateLimits: RateLimitStore
  collectMetrics: () => MetricsSnapshot | Promise<MetricsSnapshot>
  localSnapshot: () => MetricsSnapshot
  proxy?: Proxy
  /** What is not ready now (`/readyz`); absent: always ready. */
  readiness?: () => string[] | Promise<string[]>
  /** The gate's clock (HandlerOptions.now). */
  now?: () => number
}

/** The route table of the owned routes at their paths, and in proxy mode the fallback to the service. */
export function createRoutes(sources: RouteSources, paths: ReadonlyMap<OwnedRoute, string>): RouteTable {
  const gate = createGate(sources.keys, sources.throttle, sources.rateLimits, sources.now)
  const segmentsOf = (name: OwnedRoute) => (paths.get(name) ?? `/${name}`).slice(1).split('/')
  const routes: Record<OwnedRoute, Route> = {
    data: keyedReply(gate, REPLY.data, segmentsOf('data')),
    healthz: openReply(REPLY.healthy),
    readyz: readiness(sources.readiness),
    auth: forwardAuth(gate, sources.keys),
    metrics: scrape(gate, sources, segmentsOf('metrics')),
  }
  const table = [...paths].map(([name, path]): RouteEntry => ({ path, route: routes[name], index: ROUTE_NAMES.indexOf(name) }))
  // Four comparisons, most ending at the length: cheaper than a Map, which would hash each request's new path string.
  const lookup = (path: string) => {
    for (const candidate of table) if (candidate.path === path) return candidate
    return undefined
  }
  if (sources.proxy === undefined) return lookup
  const fallback: RouteEntry = { path: '', route: proxied(gate, sources.keys, sources.proxy), index: ROUTE_NAMES.indexOf('proxy'), takesBody: true }
  return Object.assign(lookup, { fallback })
}

/** GET and HEAD only (OPTIONS: 204 with Allow; others: 405). */
function refusesMethod(req: IncomingMessage, res: ServerResponse, requestId: string): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return false
  sendReply(req, res, req.method === 'OPTIONS' ? REPLY.options : REPLY.methodNotAllowed, requestId)
  return true
}

/** A prepared reply behind a key (or a public rule), with the key's RateLimit headers. */
function keyedReply(gate: Gate, reply: Reply, segments: readonly string[]): Route {
  const answer: Answer = (req, res, context, _outcome, headers) => sendReply(req, res, reply, context.requestId, headers)
  return (req, res, context) => {
    if (refusesMethod(req, res, context.requestId)) return undefined
    if (!gate.isPublic(req.method, segments)) return gate.keyed(req, res, context, req.method, segments, answer)
    sendReply(req, res, reply, context.requestId)
    return PUBLIC
  }
}

/** A prepared reply for anyone (`/healthz`). */
function openReply(reply: Reply): Route {
  return (req, res, { requestId }) => {
    if (!refusesMethod(req, res, requestId)) sendReply(req, res, reply, requestId)
    return undefined
  }
}

/** `/readyz`: 200 when nothing is wrong, else 503 naming each problem (for load balancers and Kubernetes). */
function readiness(problemsNow: RouteSources['readiness']): Route {
  const answer = (req: IncomingMessage, res: ServerResponse, requestId: string, problems: string[]) => {
    if (res.destroyed) return
    if (problems.length === 0) return sendReply(req, res, REPLY.ready, requestId)
    sendReply(req, res, createReply(503, JSON.stringify({ status: 'not ready', reasons: problems }), ['retry-after', '1']), requestId)
  }
  return (req, res, { requestId }) => {
    if (refusesMethod(req, res, requestId)) return undefined
    const problems = problemsNow?.() ?? []
    if (problems instanceof Promise) problems.then((found) => answer(req, res, requestId, found), (error: unknown) => answer(req, res, requestId, [`readiness check failed: ${String(error)}`]))
    else answer(req, res, requestId, problems)
    return undefined
  }
}

/**
 * Forward-auth for reverse proxies: every method, OPTIONS included, needs a key, unless a public
 * rule lets the original request through. Scopes are matched against that original request.
 */
function forwardAuth(gate: Gate, keys: KeyStore): Route {
  const answer: Answer = (req, res, context, outcome, headers) =>
    sendReply(req, res, REPLY.keyAccepted, context.requestId, ['x-keygate-key-id', outcome.keyId, ...(headers ?? [])])
  return (req, res, context) => {
    const original = (context.original = originalRequestOf(req.headers))
    if (original !== undefined && 'problem' in original) {
      sendReply(req, res, REPLY.badRequest, context.requestId)
      return MALFORMED
    }
    if (original !== undefined && keys.publicPolicy?.allows(original.method, original.segments) === true) {
      sendReply(req, res, REPLY.keyAccepted, context.requestId)
      return PUBLIC
    }
    return gate.keyed(req, res, context, original?.method, original?.segments, answer)
  }
}

/** `/metrics`: the Prometheus text of the whole server (every worker), behind a key; never rate limited, and served while a limits store is away. */
function scrape(gate: Gate, sources: RouteSources, segments: readonly string[]): Route {
  const answer: Answer = (req, res, context, _outcome, headers) => {
    const send = (snapshot: MetricsSnapshot) => {
      if (!res.destroyed) sendReply(req, res, createReply(200, renderMetrics(snapshot), [], METRICS_TYPE), context.requestId, headers)
    }
    const snapshot = sources.collectMetrics()
    // Should the cluster not answer, this process's own counters are still worth a scrape.
    if (snapshot instanceof Promise) snapshot.then(send, () => send(sources.localSnapshot()))
    else send(snapshot)
  }
  return (req, res, context) => {
    if (refusesMethod(req, res, context.requestId)) return undefined
    if (gate.isPublic(req.method, segments)) return gate.limitThenAnswer(PUBLIC, req, res, context, answer)
    return gate.keyedScrape(req, res, context, segments, answer)
  }
}

/** Proxy mode: a public path or an authorized key goes to the service, with the key's id. */
function proxied(gate: Gate, keys: KeyStore, proxy: Proxy): Route {
  const forward = (dropAuthorization: (req: IncomingMessage) => boolean): Answer => (req, res, context, outcome, headers) =>
    proxy.forward(req, res, { keyId: outcome.keyId || undefined, requestId: context.requestId, dropAuthorization: dropAuthorization(req) }, headers).then((result) => {
      if (result !== undefined) context.upstream = result
    })
  // The credential goes no further than keygate: Authorization is dropped when it held the key
  // (on a public path too: a client may send its key everywhere); another scheme is the service's.
  const holdsCredential = (req: IncomingMessage) => isCredentialAuthorization(req.headers.authorization)
  const keyedForward = forward(holdsCredential)
  const publicForward = forward((req) => holdsCredential(req) && authenticate(keys, req).keyId !== undefined)
  return (req, res, context) => {
    const url = req.url ?? ''
    const query = url.indexOf('?')
    const canonical = canonicalPath(query === -1 ? url : url.slice(0, query))
    // A path, a Host or a method the service could read otherwise than keygate checked it.
    if (!canonical.ok || proxy.ambiguityOf(req) !== undefined) {
      sendReply(req, res, REPLY.badRequest, context.requestId)
      return MALFORMED
    }
    if (gate.isPublic(req.method, canonical.segments)) return gate.limitThenAnswer(PUBLIC, req, res, context, publicForward)
    return gate.keyed(req, res, context, req.method, canonical.segments, keyedForward)
  }
}
