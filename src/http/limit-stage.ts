/**
 * The last stage of the gate for a key let through so far: its rate limit, then its quota. Each
 * store is asked only for a key that has one; a quota counts only a request its rate limit
 * allowed. Sends the 429 or 503 itself; otherwise hands back the RateLimit headers (IETF
 * draft-ietf-httpapi-ratelimit-headers: a policy each, the one closer to refusing first in
 * `RateLimit`) for the answer.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { quotaPolicyItem, type Quota, type QuotaDecision, type QuotaStore } from '../limits/quota.js'
import type { RateDecision, RateLimit, RateLimitStore } from '../limits/rate-limit.js'
import { REPLY, type Outcome } from './replies.js'
import { sendReply } from './respond.js'

export const LIMITED = Symbol('rate limited')
export const QUOTA_SPENT = Symbol('quota exceeded')
export const UNDECIDED = Symbol('no store to decide')
/** The RateLimit headers for the answer (undefined: none); or which refusal has been sent. */
export type LimitVerdict = string[] | undefined | typeof LIMITED | typeof QUOTA_SPENT | typeof UNDECIDED

export interface LimitStores {
  rates: RateLimitStore
  quotas: QuotaStore
}

/** Rate limit, then quota, of an allowed `outcome`'s key: at once from memory, later from another process. */
export function decideLimits(stores: LimitStores, outcome: Outcome, now: () => number, req: IncomingMessage, res: ServerResponse, context: RequestIdOnly): LimitVerdict | Promise<LimitVerdict> {
  if (!outcome.ok || (outcome.rateLimit === undefined && outcome.quota === undefined)) return undefined
  const { rateLimit, quota } = outcome
  const nowMs = now() // read only for a key with a limit
  const limits = { rateLimit, quota, nowMs, req, res, context }
  const rate = rateLimit === undefined ? undefined : stores.rates.take(rateLimit.stateKey, rateLimit, nowMs)
  return then(rate, (rateDecision) => {
    if (quota === undefined || (rateDecision !== undefined && (!rateDecision.allowed || rateDecision.unavailable === true))) return verdictOf(limits, rateDecision, undefined)
    return then(stores.quotas.spend(quota, nowMs), (quotaDecision) => verdictOf(limits, rateDecision, quotaDecision))
  })
}

/** What the stage needs of the gate's Context. */
interface RequestIdOnly {
  readonly requestId: string
}

interface Limits {
  rateLimit?: RateLimit
  quota?: Quota
  nowMs: number
  req: IncomingMessage
  res: ServerResponse
  context: RequestIdOnly
}

function verdictOf(limits: Limits, rate: RateDecision | undefined, quota: QuotaDecision | undefined): LimitVerdict {
  const { req, res, context } = limits
  if (rate?.unavailable === true || quota?.unavailable === true) {
    sendReply(req, res, REPLY.limitsUnavailable, context.requestId)
    return UNDECIDED
  }
  const headers = headersOf(limits, rate, quota)
  if (rate !== undefined && !rate.allowed) {
    sendReply(req, res, REPLY.tooManyRequests, context.requestId, [...(headers ?? []), 'retry-after', String(rate.retryAfterS)])
    return LIMITED
  }
  if (quota !== undefined && !quota.allowed) {
    sendReply(req, res, REPLY.tooManyRequests, context.requestId, [...(headers ?? []), 'retry-after', String(quota.resetS)])
    return QUOTA_SPENT
  }
  return headers
}

/** `RateLimit-Policy` and `RateLimit` for what was decided; none when nothing was (a store away, failing open). */
function headersOf({ rateLimit, quota, nowMs }: Limits, rate: RateDecision | undefined, quotaDecision: QuotaDecision | undefined): string[] | undefined {
  const rateItem = rate === undefined ? undefined : `"key";r=${rate.remaining};t=${rate.resetS}`
  // One policy (the usual case): its two fields, built without lists.
  if (quota === undefined || quotaDecision === undefined) {
    if (rateItem === undefined) return undefined
    const policy = quota === undefined ? (rateLimit as RateLimit).policyHeader : `${(rateLimit as RateLimit).policyHeader}, ${quotaPolicyItem(quota, nowMs)}`
    return ['ratelimit-policy', policy, 'ratelimit', rateItem]
  }
  const quotaItem = `"quota";r=${quotaDecision.remaining};t=${quotaDecision.resetS}`
  if (rateItem === undefined) return ['ratelimit-policy', rateLimit === undefined ? quotaPolicyItem(quota, nowMs) : `${rateLimit.policyHeader}, ${quotaPolicyItem(quota, nowMs)}`, 'ratelimit', quotaItem]
  const quotaFirst = quotaDecision.remaining < (rate as RateDecision).remaining
  return ['ratelimit-policy', `${(rateLimit as RateLimit).policyHeader}, ${quotaPolicyItem(quota, nowMs)}`, 'ratelimit', quotaFirst ? `${quotaItem}, ${rateItem}` : `${rateItem}, ${quotaItem}`]
}

function then<T, R>(value: T | Promise<T>, next: (settled: T) => R | Promise<R>): R | Promise<R> {
  return value instanceof Promise ? value.then(next) : next(value)
}
