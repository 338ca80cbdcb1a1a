/**
 * `createGuard()`: the host app's own routes behind the whole gateway. Every request of the app
 * passes what proxy mode checks (canonical path, method override, `public` rules, failed-attempt
 * throttle, key, scopes, rate limit); a refusal is keygate's own reply and the app never sees the
 * request. An allowed one goes on to `next()` with its key's id (`keyIdOf(req)`), the RateLimit
 * headers and `X-Request-Id` already set, and is counted and logged once the app's answer ends,
 * with the app's status and time.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { KeyStore } from '../keys/store.js'
import { createKeysFileStore } from '../keys-file/reload.js'
import { createMemoryRateLimitStore } from '../limits/rate-limit.js'
import { silentLogger, type Logger } from '../observe/log.js'
import { ROUTE_NAMES } from '../observe/metrics.js'
import { canonicalPath } from './canonical-path.js'
import { createGate, type Answer, type Gate } from './gate.js'
import { createHandler, pathnameOf, type Handler, type Next } from './handler.js'
import { createHandlerMetrics, validateOptions, type HandlerOptions } from './handler-options.js'
import { overridesMethod } from './original-request.js'
import { MALFORMED, PUBLIC, REPLY, type Outcome } from './replies.js'
import { createRequestRecorder, RequestContext, type RecordRequest } from './request-record.js'
import { requestIdOf, sendReply } from './respond.js'
import { fetchVariantOf, type FetchGuardInfo } from './fetch-guard.js'
import { rememberKeyId } from './identity.js'

export interface GuardOptions extends Omit<HandlerOptions, 'keys' | 'routes' | 'proxy'> {
  /** A key store, or the path of a keys file, loaded now and reloaded whenever it changes (a bad file keeps the old keys). */
  keys: KeyStore | string
  /** keygate's own `/healthz`, `/readyz` and `/metrics` in the app, each at the path given; default: none. */
  expose?: { healthz?: string | false; readyz?: string | false; metrics?: string | false }
}

/** Connect/Express middleware, also usable around a plain `node:http` listener, with a Web-standard variant. */
export interface Guard {
  (req: IncomingMessage, res: ServerResponse, next: Next): void
  /**
   * The same checks for a fetch-style app: keygate's refusal as a `Response`, or `undefined` when
   * the request may go on (then `keyIdOf(request)` is its key's id).
   */
  fetch(request: Request, info?: FetchGuardInfo): Promise<Response | undefined>
  /** The app's answer to a request `fetch` let through, with keygate's headers; counts and logs it. */
  answered(request: Request, response: Response): Response
  /** Stops watching the keys file (when `keys` was a path). */
  close(): void
}

/** The Web-standard guard alone: `(request, info) => Promise<Response | undefined>`, with `answered` and `close`. */
export function createFetchGuard(options: GuardOptions): Guard['fetch'] & Pick<Guard, 'answered' | 'close'> {
  const guard = createGuard(options)
  return Object.assign((request: Request, info?: FetchGuardInfo) => guard.fetch(request, info), { answered: guard.answered, close: guard.close })
}

const APP_ROUTE = ROUTE_NAMES.indexOf('app')
export function createGuard(options: GuardOptions): Guard {
  if (options === null || typeof options !== 'object') throw new TypeError('createGuard(options): options must be an object')
  const log = options.log ?? silentLogger
  const { keys, close } = keysOf(options.keys, log)
  const checked = validateOptions({ ...options, keys, routes: exposedRoutes(options.expose) }, 'createGuard')
  const metrics = checked.metrics ?? createHandlerMetrics(keys, checked.throttle, log)
  const rateLimits = checked.rateLimits ?? createMemoryRateLimitStore()
  const own: Handler = createHandler({ ...checked, metrics, rateLimits })
  const guardApp = guardRoutes(createGate(keys, checked.throttle, rateLimits, checked.now), createRequestRecorder(metrics, log), checked.trustProxy ?? 0)
  const guard = (req: IncomingMessage, res: ServerResponse, next: Next) => own(req, res, () => guardApp(req, res, next))
  return Object.assign(guard, fetchVariantOf(guard), { close })
}

/** The store, and what stops it: watching the keys file when `keys` is its path, nothing for a store. */
function keysOf(keys: KeyStore | string, log: Logger): { keys: KeyStore; close: () => void } {
  if (typeof keys !== 'string') return { keys, close: () => undefined }
  if (keys === '') throw new TypeError('createGuard(options): keys must be a key store or the path of a keys file')
  const store = createKeysFileStore(keys, { log })
  return { keys: store, close: store.close }
}

/** keygate's routes in a guarded app: none of its own API, only what `expose` asks for. */
function exposedRoutes(expose: GuardOptions['expose'] = {}): HandlerOptions['routes'] {
  if (expose === null || typeof expose !== 'object') throw new TypeError('createGuard(options): expose must be { healthz?, readyz?, metrics? }')
  return { data: false, auth: false, healthz: expose.healthz ?? false, readyz: expose.readyz ?? false, metrics: expose.metrics ?? false }
}

/** The check of one request of the app, then `next()` for an allowed one. */
function guardRoutes(gate: Gate, record: RecordRequest, trustProxy: number) {
  return (req: IncomingMessage, res: ServerResponse, next: Next): void => {
    const startedMs = performance.now()
    const context = new RequestContext(requestIdOf(req), req, trustProxy)
    const url = req.url ?? '/'
    const path = pathnameOf(url)
    const method = req.method ?? 'GET'
    const canonical = canonicalPath(path)
    // A path, a fragment or a method override the app could read otherwise than keygate checked it.
    if (!canonical.ok || url.includes('#') || overridesMethod(req.headers, method)) {
      sendReply(req, res, REPLY.badRequest, context.requestId)
      return record(req, res, path, APP_ROUTE, startedMs, context, MALFORMED)
    }
    const pass = (outcome: Outcome & { ok: true }, headers: readonly string[] | undefined) => {
      rememberKeyId(req, outcome.keyId || undefined)
      res.setHeader('x-request-id', context.requestId)
      for (let i = 0; headers !== undefined && i < headers.length; i += 2) res.setHeader(headers[i] as string, headers[i + 1] as string)
      res.once('close', () => record(req, res, path, APP_ROUTE, startedMs, context, outcome))
      next()
    }
    if (gate.isPublic(method, canonical.segments)) return pass(PUBLIC as Outcome & { ok: true }, undefined)
    const answer: Answer = (_req, _res, _context, outcome, headers) => pass(outcome, headers)
    settle(gate.keyed(req, res, context, method, canonical.segments, answer), (outcome) => {
      if (!outcome.ok) record(req, res, path, APP_ROUTE, startedMs, context, outcome)
    }, next)
  }
}

/** A refusal is counted now; a decision from another process (cluster primary, Redis) when it comes. */
function settle(outcome: Outcome | Promise<Outcome>, done: (outcome: Outcome) => void, next: Next): void {
  if (outcome instanceof Promise) outcome.then(done, next)
  else done(outcome)
}

