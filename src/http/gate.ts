/**
 * The gate a keyed request passes, in order: failed-attempt throttle (429), key (401), the key's
 * address allowlist (403), scope (403), rate limit and quota (429 with the RateLimit headers; 503
 * when a store cannot decide: limit-stage.ts), then its answer. Each refusal is written here or
 * there. The same gate serves keygate's own routes, `/auth`, proxy mode and the guard.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { authenticate, type AuthResult } from '../keys/auth.js'
import type { KeyStore } from '../keys/store.js'
import { createMemoryQuotaStore, type QuotaStore } from '../limits/quota.js'
import type { RateLimitStore } from '../limits/rate-limit.js'
import { THROTTLE_UNAVAILABLE, throttleKeyOf, type Throttle } from '../limits/throttle.js'
import type { UpstreamResult } from './forwarding.js'
import { decideLimits, LIMITED, QUOTA_SPENT, UNDECIDED, type LimitStores, type LimitVerdict } from './limit-stage.js'
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

/**
 * `now`: the clock of expiry, grace periods and quota periods (milliseconds since the epoch). A
 * rate-limit store that cannot `spend` leaves the quotas to this gate's memory.
 */
export function createGate(keys: KeyStore, throttle: Throttle | undefined, rateLimits: RateLimitStore, now: () => number = Date.now): Gate {
  const stores: LimitStores = { rates: rateLimits, quotas: rateLimits.spend === undefined ? createMemoryQuotaStore() : (rateLimits as QuotaStore) }
  /**
   * The rest of a keyed request once its limits are decided: at once with a memory store, when
   * the answer comes with a remote one (the route then returns a promise of its outcome).
   */
  const limitThenAnswer = (outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context, answer: Answer): Outcome | Promise<Outcome> => {
    const verdict = decideLimits(stores, outcome, now, req, res, context)
    if (verdict instanceof Promise) return verdict.then((settled) => settle(outcome, settled, req, res, context, answer))
    return settle(outcome, verdict, req, res, context, answer)
  }
  return {
    limitThenAnswer,
    keyed(req, res, context, method, segments, answer) {
      const auth = checkKey(keys, throttle, req, res, context, now)
      if (auth instanceof Promise) return auth
      return limitThenAnswer(checkScope(checkAddress(auth, req, res, context), method, segments, req, res, context), req, res, context, answer)
    },
    isPublic: (method, segments) => keys.publicPolicy !== undefined && method !== undefined && keys.publicPolicy.allows(method, segments),
    keyedScrape(req, res, context, segments, answer) {
      const auth = checkKey(keys, throttle, req, res, context, now, false)
      if (auth instanceof Promise) return auth
      return settle(checkScope(checkAddress(auth, req, res, context), req.method, segments, req, res, context), undefined, req, res, context, answer)
    },
  }
}

/**
 * Throttle check, then key check; sends the 429, 401 or 503 itself. A failed attempt counted by
 * a store in another process settles later (a promise): only failures wait, and nothing follows them.
 */
function checkKey(keys: KeyStore, throttle: Throttle | undefined, req: IncomingMessage, res: ServerResponse, context: Context, now: () => number, refuseWhileAway = true): Outcome | Promise<Outcome> {
  // While no client can be refused, there is no need to find out who this client is.
  if (throttle !== undefined && (throttle.mayRefuse ?? throttle.size > 0)) {
    const waitS = throttle.retryAfterS(throttleKeyOf(context.client), Date.now())
    if (waitS !== 0 && (refuseWhileAway || waitS !== THROTTLE_UNAVAILABLE)) return refuseThrottled(waitS, req, res, context)
  }
  // With the real clock, authenticate reads it only for a key that expires.
  const auth = authenticate(keys, req, now === Date.now ? undefined : now())
  if (auth.ok) return auth
  // A request without any credential guesses nothing: only wrong and expired keys count.
  if (throttle === undefined || auth.reason === 'missing') return refuseKey(auth, req, res, context)
  const waitS = throttle.recordFailure(throttleKeyOf(context.client), Date.now())
  const settleFailure = (settled: number) =>
    settled === 0 || (!refuseWhileAway && settled === THROTTLE_UNAVAILABLE) ? refuseKey(auth, req, res, context) : refuseThrottled(settled, req, res, context)
  return waitS instanceof Promise ? waitS.then(settleFailure) : settleFailure(waitS)
}

function settle(outcome: Outcome, headers: LimitVerdict, req: IncomingMessage, res: ServerResponse, context: Context, answer: Answer): Outcome | Promise<Outcome> {
  if (headers === LIMITED) return refusedKey(outcome, 'rate_limited')
  if (headers === QUOTA_SPENT) return refusedKey(outcome, 'quota_exceeded')
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

/** A valid key refused for what it may do: its id, and whether it is an earlier key, stay on the access line. */
function refusedKey(outcome: Outcome, reason: 'forbidden' | 'rate_limited' | 'quota_exceeded' | 'ip_not_allowed'): Outcome {
  return { ok: false, reason, keyId: outcome.keyId ?? '', ...('previousKey' in outcome && outcome.previousKey && { previousKey: true }) }
}

/**
 * A key with an allowlist is used only from its addresses (the client's, with TRUST_PROXY):
 * otherwise 403, before its scope, and nothing is counted (not a failed attempt: the key is valid).
 */
function checkAddress(outcome: Outcome, req: IncomingMessage, res: ServerResponse, context: Context): Outcome {
  if (!outcome.ok || outcome.addresses === undefined || outcome.addresses.allows(context.client)) return outcome
  sendReply(req, res, REPLY.addressNotAllowed, context.requestId)
  return refusedKey(outcome, 'ip_not_allowed')
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
  return refusedKey(outcome, 'forbidden')
}
