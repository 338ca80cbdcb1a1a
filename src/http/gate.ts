/**
 * The gate a keyed request passes, in order: failed-attempt throttle (429), key (401), scope
 * (403), rate limit (429 with the RateLimit headers; 503 when its store cannot decide), then its
 * answer. Each refusal is written here. The same gate serves keygate's own routes, `/auth` and
 * proxy mode.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { authenticate, type AuthResult } from '../keys/auth.js'
import type { KeyStore } from '../keys/store.js'
import type { RateDecision, RateLimit, RateLimitStore } from '../limits/rate-limit.js'
import { THROTTLE_UNAVAILABLE, throttleKeyOf, type Throttle } from '../limits/throttle.js'
import type { UpstreamResult } from './forwarding.js'
import type { Ambiguous, OriginalRequest } from './original-request.js'
import { LIMITS_UNAVAILABLE, REPLY, THROTTLED, type Outcome } from './replies.js'
import { sendReply } from './respond.js'

/** What a route needs to know about the request beyond `req`. */
export interface Context {
  readonly requestId: string
  /** The client's address (see `clientAddressOf`). */
  readonly client: string
  /** On `/auth`: the request the proxy asks about, as the route read it (for the access line). */
  original?: OriginalRequest | Ambiguous
  /** In proxy mode: how the exchange with the service went (for the access line and metrics). */
  upstream?: UpstreamResult
}

/** Writes the answer of an allowed request, with the rate-limit headers when the key has a limit; a proxied one settles later. */
export type Answer = (req: IncomingMessage, res: ServerResponse, context: Context, outcome: Outcome & { ok: true }, headers: string[] | undefined) => void | Promise<void>

export interface Gate {
  /** Throttle, key, scope (against `method` and `segments`, when known), rate limit, then `answer`. */
  keyed(req: IncomingMessage, res: ServerResponse, context: Context, method: string | undefined, segments: readonly string[] | undefined, answer: Answer): Outcome | Promise<Outcome>
  /** The rate limit (if the outcome's key has one), then `answer`: for a request already let through. */
  limitThenAnswer(outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context, answer: Answer): Outcome | Promise<Outcome>
  /** Whether a `public` rule lets the request through without a key; while there is none, one property read. */
  isPublic(method: string | undefined, segments: readonly string[]): boolean
  /**
   * Key and scope only, for a scrape of `/metrics`: not rate limited, and a limits store that is
   * away refuses nothing (the scrape is how the outage is seen). Failed attempts still count.
   */
  keyedScrape(req: IncomingMessage, res: ServerResponse, context: Context, segments: readonly string[], answer: Answer): Outcome | Promise<Outcome>
}

export function createGate(keys: KeyStore, throttle: Throttle | undefined, rateLimits: RateLimitStore): Gate {
  /**
   * The rest of a keyed request once its rate limit is decided: at once with a memory store, when
   * the answer comes with a remote one (the route then returns a promise of its outcome).
   */
  const limitThenAnswer = (outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context, answer: Answer): Outcome | Promise<Outcome> => {
    const headers = rateHeaders(rateLimits, outcome, req, res, context)
    if (headers instanceof Promise) return headers.then((settled) => settle(outcome, settled, req, res, context, answer))
    return settle(outcome, headers, req, res, context, answer)
  }
  return {
    limitThenAnswer,
    keyed(req, res, context, method, segments, answer) {
      const auth = checkKey(keys, throttle, req, res, context)
      if (auth instanceof Promise) return auth
      return limitThenAnswer(checkScope(auth, method, segments, req, res, context), req, res, context, answer)
    },
    isPublic: (method, segments) => keys.publicPolicy !== undefined && method !== undefined && keys.publicPolicy.allows(method, segments),
    keyedScrape(req, res, context, segments, answer) {
      const auth = checkKey(keys, throttle, req, res, context, false)
      if (auth instanceof Promise) return auth
      return settle(checkScope(auth, req.method, segments, req, res, context), undefined, req, res, context, answer)
    },
  }
}

/**
 * Throttle check, then key check; sends the 429, 401 or 503 itself. A failed attempt counted by
 * a store in another process settles later (a promise): only failures wait, and nothing follows them.
 */
function checkKey(keys: KeyStore, throttle: Throttle | undefined, req: IncomingMessage, res: ServerResponse, context: Context, refuseWhileAway = true): Outcome | Promise<Outcome> {
  // While no client can be refused, there is no need to find out who this client is.
  if (throttle !== undefined && (throttle.mayRefuse ?? throttle.size > 0)) {
    const waitS = throttle.retryAfterS(throttleKeyOf(context.client), Date.now())
    if (waitS !== 0 && (refuseWhileAway || waitS !== THROTTLE_UNAVAILABLE)) return refuseThrottled(waitS, req, res, context)
  }
  const auth = authenticate(keys, req)
  if (auth.ok) return auth
  // A request without any credential guesses nothing: only wrong and expired keys count.
  if (throttle === undefined || auth.reason === 'missing') return refuseKey(auth, req, res, context)
  const waitS = throttle.recordFailure(throttleKeyOf(context.client), Date.now())
  const settleFailure = (settled: number) =>
    settled === 0 || (!refuseWhileAway && settled === THROTTLE_UNAVAILABLE) ? refuseKey(auth, req, res, context) : refuseThrottled(settled, req, res, context)
  return waitS instanceof Promise ? waitS.then(settleFailure) : settleFailure(waitS)
}

/**
 * After the scope, the key's rate limit: the RateLimit headers for the answer (undefined for a
 * key without a limit: no store is asked), or LIMITED once the 429 has been sent.
 */
function rateHeaders(rateLimits: RateLimitStore, outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context): RateHeaders | Promise<RateHeaders> {
  const limit = outcome.ok ? outcome.rateLimit : undefined
  if (limit === undefined) return undefined
  const decision = rateLimits.take(limit.stateKey, limit, Date.now())
  if (decision instanceof Promise) return decision.then((settled) => headersOf(settled, limit, req, res, context))
  return headersOf(decision, limit, req, res, context)
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
