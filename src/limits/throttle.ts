/** Failed-attempt limiter: per-client fixed windows in a Map bounded by least-recent eviction. */

export interface ThrottleOptions {
  /** Failures within one window that block the client (default 20, as `AUTH_FAIL_LIMIT`). */
  limit?: number
  /** Length of a client's window (default 60,000 ms, as `AUTH_FAIL_WINDOW_S=60`). */
  windowMs?: number
  /** Clients tracked at most; past it the stalest is dropped in O(1) (default 100,000, as `THROTTLE_MAX_CLIENTS`). */
  maxClients?: number
}

/** The server's defaults, also the library's. */
export const THROTTLE_DEFAULTS = { limit: 20, windowMs: 60_000, maxClients: 100_000 } as const

/** What `retryAfterS` and `recordFailure` answer while a shared store is away and configured to fail closed (503). */
export const THROTTLE_UNAVAILABLE = -1

export interface Throttle {
  /** Clients tracked now (never more than `maxClients`). */
  readonly size: number
  /**
   * False while no client can be refused, so the request path skips working out who the client is.
   * Default when absent: `size > 0`.
   */
  readonly mayRefuse?: boolean
  /** Whole seconds (at least 1) until `client` may try again, 0 when it is not blocked, or `THROTTLE_UNAVAILABLE`. */
  retryAfterS(client: string, nowMs: number): number
  /**
   * Counts one failed attempt by `client`. Answers 0 when it was counted (the answer is 401), or the
   * seconds to wait when the client was already blocked (429: a shared store may know it before this
   * process does), or `THROTTLE_UNAVAILABLE`. A store in another process answers with a promise.
   */
  recordFailure(client: string, nowMs: number): number | Promise<number>
}

/** A throttle that answers at once: this process's memory. */
export interface MemoryThrottle extends Throttle {
  recordFailure(client: string, nowMs: number): number
  /** Milliseconds until `client`'s block ends, 0 when it is not blocked (what a cluster primary tells its workers). */
  blockedForMs(client: string, nowMs: number): number
}

interface Window {
  failures: number
  endsMs: number
}

/** Creates a throttle with the server's defaults for what `options` leaves out; throws a `TypeError` naming a bad option. */
export function createThrottle(options: ThrottleOptions = {}): MemoryThrottle {
  const { limit, windowMs, maxClients } = { ...THROTTLE_DEFAULTS, ...definedOnly(options) }
  for (const [name, value] of [['limit', limit], ['windowMs', windowMs], ['maxClients', maxClients]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`createThrottle: ${name} must be a positive integer, got ${String(value)}`)
  }
  // A Map iterates in insertion order: re-inserting on every failure keeps the stalest first.
  const windows = new Map<string, Window>()
  const blockedForMs = (client: string, nowMs: number): number => {
    const window = windows.get(client)
    if (window === undefined || window.failures < limit) return 0
    if (nowMs >= window.endsMs) {
      windows.delete(client)
      return 0
    }
    return window.endsMs - nowMs
  }
  return {
    get size() {
      return windows.size
    },
    retryAfterS(client, nowMs) {
      const waitMs = blockedForMs(client, nowMs)
      return waitMs === 0 ? 0 : Math.max(1, Math.ceil(waitMs / 1000))
    },
    blockedForMs,
    recordFailure(client, nowMs) {
      let window = windows.get(client)
      if (window === undefined || nowMs >= window.endsMs) window = { failures: 0, endsMs: nowMs + windowMs }
      const blocked = window.failures >= limit
      if (!blocked) window.failures++
      windows.delete(client) // the most active client is the freshest: a blocked attacker stays tracked
      windows.set(client, window)
      if (blocked) return Math.max(1, Math.ceil((window.endsMs - nowMs) / 1000))
      if (windows.size > maxClients) windows.delete(windows.keys().next().value as string)
      return 0
    },
  }
}

function definedOnly(options: ThrottleOptions): ThrottleOptions {
  if (options === null || typeof options !== 'object') throw new TypeError('createThrottle: options must be an object')
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined))
}

/**
 * The address a client is counted under: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by
 * its /64 prefix (one subscriber usually holds a whole /64, so counting single addresses is futile).
 */
export function throttleKeyOf(address: string): string {
  if (!address.includes(':')) return address
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  const groups = expandIPv6(address.split('%')[0] ?? '')
  return groups === undefined ? address : `${groups.slice(0, 4).join(':')}::/64`
}

/** The eight groups of an IPv6 address, each without leading zeros; undefined if it is not one. */
function expandIPv6(address: string): string[] | undefined {
  const halves = address.split('::')
  if (halves.length > 2) return undefined
  const parse = (half: string | undefined) =>
    half ? half.split(':').flatMap((part) => (part.includes('.') ? ['0', '0'] : [part])) : []
  const head = parse(halves[0])
  const tail = parse(halves[1])
  const missing = 8 - head.length - tail.length
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return undefined
  const groups = [...head, ...Array<string>(missing).fill('0'), ...tail]
  if (!groups.every((group) => /^[0-9a-fA-F]{1,4}$/.test(group))) return undefined
  return groups.map((group) => parseInt(group, 16).toString(16))
}
