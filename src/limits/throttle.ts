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

export interface Throttle {
  /** Clients tracked now (never more than `maxClients`). */
  readonly size: number
  /** Whole seconds (at least 1) until `client` may try again, or 0 when it is not blocked. */
  retryAfterS(client: string, nowMs: number): number
  /** Counts one failed attempt by `client`. */
  recordFailure(client: string, nowMs: number): void
}

interface Window {
  failures: number
  endsMs: number
}

/** Creates a throttle with the server's defaults for what `options` leaves out; throws a `TypeError` naming a bad option. */
export function createThrottle(options: ThrottleOptions = {}): Throttle {
  const { limit, windowMs, maxClients } = { ...THROTTLE_DEFAULTS, ...definedOnly(options) }
  for (const [name, value] of [['limit', limit], ['windowMs', windowMs], ['maxClients', maxClients]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`createThrottle: ${name} must be a positive integer, got ${String(value)}`)
  }
  // A Map iterates in insertion order: re-inserting on every failure keeps the stalest first.
  const windows = new Map<string, Window>()
  return {
    get size() {
      return windows.size
    },
    retryAfterS(client, nowMs) {
      const window = windows.get(client)
      if (window === undefined || window.failures < limit) return 0
      if (nowMs >= window.endsMs) {
        windows.delete(client)
        return 0
      }
      return Math.max(1, Math.ceil((window.endsMs - nowMs) / 1000))
    },
    recordFailure(client, nowMs) {
      let window = windows.get(client)
      if (window === undefined || nowMs >= window.endsMs) window = { failures: 0, endsMs: nowMs + windowMs }
      window.failures++
      windows.delete(client)
      windows.set(client, window)
      if (windows.size > maxClients) windows.delete(windows.keys().next().value as string)
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
