/**
 * Limit counters held by the cluster primary for all its workers, so that `AUTH_FAIL_LIMIT`, a
 * key's rate limit and its quota hold once per server, not once per worker, and survive a worker's
 * restart. Both sides speak plain messages; process/ carries them over the cluster's IPC channel.
 * A worker asks only for what needs a count (a failed attempt, a request of a key with a rate
 * limit or a quota); the primary announces each new block to every worker, which then refuses
 * that client by itself.
 */
import type { Quota, QuotaDecision } from './quota.js'
import { createMemoryRateLimitStore, type RateDecision, type RateLimit, type RateLimitStore } from './rate-limit.js'
import { createSharedThrottle, type FailureVerdict } from './shared-throttle.js'
import { createThrottle, type Throttle, type ThrottleOptions } from './throttle.js'

export type LimitsMessage =
  | { type: 'keygate:limit'; id: number; op: 'fail'; client: string }
  | { type: 'keygate:limit'; id: number; op: 'take'; limit: RateLimit }
  | { type: 'keygate:limit'; id: number; op: 'spend'; quota: Quota; nowMs: number }
  | { type: 'keygate:limited'; id: number; verdict?: FailureVerdict; decision?: RateDecision; quota?: QuotaDecision }
  | { type: 'keygate:blocked'; client: string; ms: number }

/** The primary's counters; `broadcast` reaches every worker. */
export function createPrimaryLimits(throttleOptions: Required<ThrottleOptions> | undefined, broadcast: (message: LimitsMessage) => void) {
  const throttle = throttleOptions === undefined ? undefined : createThrottle(throttleOptions)
  const rates = createMemoryRateLimitStore()
  const fail = (client: string, nowMs: number): FailureVerdict => {
    if (throttle === undefined) return { alreadyBlocked: false, blockedForMs: 0 }
    const alreadyBlocked = throttle.recordFailure(client, nowMs) > 0
    const blockedForMs = throttle.blockedForMs(client, nowMs)
    if (blockedForMs > 0 && !alreadyBlocked) broadcast({ type: 'keygate:blocked', client, ms: blockedForMs })
    return { alreadyBlocked, blockedForMs }
  }
  return {
    /** The reply to a worker's message, or undefined when it is not a limits request. */
    answer(message: LimitsMessage): LimitsMessage | undefined {
      if (message?.type !== 'keygate:limit') return undefined
      const nowMs = Date.now()
      if (message.op === 'fail') return { type: 'keygate:limited', id: message.id, verdict: fail(String(message.client), nowMs) }
      // The worker's clock decides the period (the same machine's, or a handler's injected one).
      if (message.op === 'spend') return { type: 'keygate:limited', id: message.id, quota: rates.spend(message.quota, Number(message.nowMs) || nowMs) }
      return { type: 'keygate:limited', id: message.id, decision: rates.take(message.limit.stateKey, message.limit, nowMs) }
    },
    get size() {
      return (throttle?.size ?? 0) + rates.size
    },
  }
}

export interface WorkerLimits {
  throttle?: Throttle
  rateLimits: RateLimitStore
  /** Hands over a message from the primary; false when it is not about limits. */
  receive(message: LimitsMessage): boolean
}

/** A worker's side: every count goes to the primary through `send`; `receive` takes its answers and broadcasts. */
export function createWorkerLimits(send: (message: LimitsMessage) => void, throttleOptions: { maxClients: number } | undefined): WorkerLimits {
  const waiting = new Map<number, (message: LimitsMessage & { type: 'keygate:limited' }) => void>()
  let nextId = 0
  const ask = <T>(message: LimitsMessage & { type: 'keygate:limit' }, pick: (reply: LimitsMessage & { type: 'keygate:limited' }) => T) =>
    new Promise<T>((resolve) => {
      const id = nextId++
      waiting.set(id, (reply) => resolve(pick(reply)))
      send({ ...message, id })
    })
  const throttle = throttleOptions === undefined
    ? undefined
    : createSharedThrottle(throttleOptions.maxClients, (client) =>
        ask({ type: 'keygate:limit', id: 0, op: 'fail', client }, (reply) => reply.verdict ?? { alreadyBlocked: false, blockedForMs: 0 }))
  const rateLimits: RateLimitStore = {
    size: 0, // the primary holds the state
    take: (_stateKey, limit) => ask({ type: 'keygate:limit', id: 0, op: 'take', limit }, (reply) => reply.decision),
    spend: (quota, nowMs) => ask({ type: 'keygate:limit', id: 0, op: 'spend', quota, nowMs }, (reply) => reply.quota),
  }
  return {
    throttle,
    rateLimits,
    receive(message) {
      if (message?.type === 'keygate:blocked') throttle?.block(message.client, message.ms, Date.now())
      else if (message?.type === 'keygate:limited') {
        const resolve = waiting.get(message.id)
        waiting.delete(message.id)
        resolve?.(message)
      } else return false
      return true
    },
  }
}
