/**
 * Quotas: a key may make `limit` allowed requests per calendar period (hour, day, ISO week from
 * Monday, month), periods aligned to UTC. A period's count is kept under the key's id, its period
 * kind and the period's start: a new period starts from zero without anyone resetting anything,
 * and a reload that keeps the id and the period keeps the count (a new limit applies to it).
 * Pure but for the memory store.
 */

export type QuotaPeriod = 'hour' | 'day' | 'week' | 'month'
const PERIODS: readonly QuotaPeriod[] = ['hour', 'day', 'week', 'month']

/** A key's quota as the keys file gives it. */
export interface QuotaSpec {
  limit: number
  period: QuotaPeriod
}

/** A quota ready to use; `stateKey` is empty in a quota compiled for many keys (see `quotaFor`). */
export interface Quota {
  readonly limit: number
  readonly period: QuotaPeriod
  readonly stateKey: string
}

export interface QuotaDecision {
  allowed: boolean
  /** Requests left in this period (after this one, when allowed). */
  remaining: number
  /** Whole seconds until the period ends (the count starts again). */
  resetS: number
  /** A shared store is away and configured to fail closed: the answer is 503, not a decision. */
  unavailable?: boolean
}

/** The decision of a store that is away and fails closed. */
export const QUOTA_UNAVAILABLE: QuotaDecision = Object.freeze({ allowed: false, remaining: 0, resetS: 0, unavailable: true })

const MAX_LIMIT = 1_000_000_000_000

/** Checks a spec and prepares it; throws a `TypeError` naming the field. */
export function compileQuota(spec: QuotaSpec): Quota {
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw new TypeError('quota must be an object { "limit": N, "period": "hour" | "day" | "week" | "month" } or null')
  for (const field of Object.keys(spec)) {
    if (field !== 'limit' && field !== 'period') throw new TypeError('quota: unknown field (allowed: limit, period)')
  }
  if (!Number.isSafeInteger(spec.limit) || spec.limit < 1 || spec.limit > MAX_LIMIT) throw new TypeError('quota.limit must be a positive integer')
  if (!PERIODS.includes(spec.period)) throw new TypeError('quota.period must be "hour", "day", "week" or "month"')
  return { limit: spec.limit, period: spec.period, stateKey: '' }
}

/** `quota`, compiled once for many keys, as the quota of the key `id`. */
export function quotaFor(quota: Quota, id: string): Quota {
  return { limit: quota.limit, period: quota.period, stateKey: `${id}\n${quota.period}` }
}

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

// The last period found of each kind: nearly every request falls in it (no Date made per request).
const lastPeriods = new Map<QuotaPeriod, { startMs: number; endMs: number }>()

/** The UTC calendar period holding `nowMs`: [startMs, endMs). Weeks start on Monday (ISO 8601). */
export function periodAt(period: QuotaPeriod, nowMs: number): { startMs: number; endMs: number } {
  const last = lastPeriods.get(period)
  if (last !== undefined && nowMs >= last.startMs && nowMs < last.endMs) return last
  const found = calendarPeriod(period, nowMs)
  lastPeriods.set(period, found)
  return found
}

function calendarPeriod(period: QuotaPeriod, nowMs: number): { startMs: number; endMs: number } {
  if (period === 'hour') {
    const startMs = Math.floor(nowMs / HOUR_MS) * HOUR_MS
    return { startMs, endMs: startMs + HOUR_MS }
  }
  const dayMs = Math.floor(nowMs / DAY_MS) * DAY_MS
  if (period === 'day') return { startMs: dayMs, endMs: dayMs + DAY_MS }
  if (period === 'week') {
    const startMs = dayMs - ((new Date(dayMs).getUTCDay() + 6) % 7) * DAY_MS
    return { startMs, endMs: startMs + 7 * DAY_MS }
  }
  const day = new Date(dayMs)
  return { startMs: Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), 1), endMs: Date.UTC(day.getUTCFullYear(), day.getUTCMonth() + 1, 1) }
}

/** The decision for a period whose count was `used` before this request. */
export function quotaDecision(quota: Quota, used: number, endMs: number, nowMs: number): QuotaDecision {
  const allowed = used < quota.limit
  return { allowed, remaining: Math.max(0, quota.limit - used - (allowed ? 1 : 0)), resetS: Math.max(1, Math.ceil((endMs - nowMs) / 1000)) }
}

/** `RateLimit-Policy`'s item for the quota: `w` is the current period's length (a month's varies). */
export function quotaPolicyItem(quota: Quota, nowMs: number): string {
  const { startMs, endMs } = periodAt(quota.period, nowMs)
  return `"quota";q=${quota.limit};w=${(endMs - startMs) / 1000}`
}

/** Where quota counts live: count one allowed request of a key, or refuse it. */
export interface QuotaStore {
  /**
   * Counts a request of `quota.stateKey` at `nowMs` when the period has room, else refuses it
   * (counting nothing). A store across processes answers with a promise; `undefined`: no decision
   * (a shared store away and configured to fail open): the request passes.
   */
  spend(quota: Quota, nowMs: number): QuotaDecision | undefined | Promise<QuotaDecision | undefined>
}

export interface MemoryQuotaStore extends QuotaStore {
  spend(quota: Quota, nowMs: number): QuotaDecision
  readonly size: number
}

/** Counts in this process's memory: they start again at a restart. */
export function createMemoryQuotaStore(): MemoryQuotaStore {
  const counts = new Map<string, { startMs: number; used: number }>()
  return {
    get size() {
      return counts.size
    },
    spend(quota, nowMs) {
      const { startMs, endMs } = periodAt(quota.period, nowMs)
      let count = counts.get(quota.stateKey)
      if (count === undefined || count.startMs !== startMs) counts.set(quota.stateKey, (count = { startMs, used: 0 }))
      const decision = quotaDecision(quota, count.used, endMs, nowMs)
      if (decision.allowed) count.used++
      return decision
    },
  }
}
