/**
 * A throttle whose counts live in another process (the cluster primary, Redis). A request path
 * must not ask that store on every request, so this process keeps what it knows: the clients that
 * are blocked, learnt from the answers to its own failures and from the blocks the store announces
 * (a broadcast of the primary, a Redis message). A client that is not blocked costs nothing.
 */
import type { Throttle } from './throttle.js'

/** The store's answer to one failure: was the client blocked before it, and for how long is it blocked now. */
export interface FailureVerdict {
  alreadyBlocked: boolean
  /** Milliseconds until the client's window ends, when this failure reached the limit or was past it; else 0. */
  blockedForMs: number
}

export interface SharedThrottle extends Throttle {
  recordFailure(client: string, nowMs: number): Promise<number>
  /** The store announced that `client` is blocked for `ms` from now. */
  block(client: string, ms: number, nowMs: number): void
}

/** `count` records one failure in the store; it rejects when the store cannot answer (the caller decides what then). */
export function createSharedThrottle(maxClients: number, count: (client: string) => Promise<FailureVerdict>): SharedThrottle {
  // Insertion order is block order: past `maxClients` the oldest block is forgotten first.
  const blockedUntil = new Map<string, number>()
  const block = (client: string, ms: number, nowMs: number) => {
    if (!(ms > 0)) return
    blockedUntil.delete(client)
    blockedUntil.set(client, nowMs + ms)
    if (blockedUntil.size > maxClients) blockedUntil.delete(blockedUntil.keys().next().value as string)
  }
  const retryAfterS = (client: string, nowMs: number) => {
    const until = blockedUntil.get(client)
    if (until === undefined) return 0
    if (nowMs >= until) {
      blockedUntil.delete(client)
      return 0
    }
    return Math.max(1, Math.ceil((until - nowMs) / 1000))
  }
  return {
    get size() {
      return blockedUntil.size
    },
    get mayRefuse() {
      return blockedUntil.size > 0
    },
    retryAfterS,
    block,
    async recordFailure(client) {
      const verdict = await count(client)
      const nowMs = Date.now()
      block(client, verdict.blockedForMs, nowMs)
      return verdict.alreadyBlocked ? Math.max(1, Math.ceil(verdict.blockedForMs / 1000)) : 0
    },
  }
}
