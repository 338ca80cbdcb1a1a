/** Counters and gauges, and their sum over cluster workers (metrics-text.ts writes them out). */
import { eventLoopDelay, maxFds, openFds } from './process-stats.js'

/** Route labels, indexed by the handler: anything else counts as `other`. */
// `app`: a route of the host app behind createGuard(); `other`: a path nobody owns (404).
export const ROUTE_NAMES = ['data', 'healthz', 'readyz', 'auth', 'metrics', 'proxy', 'app', 'other'] as const
export type RouteName = (typeof ROUTE_NAMES)[number]
export const FAILURE_REASONS = ['missing', 'invalid', 'expired', 'throttled', 'forbidden', 'rate_limited', 'limits_unavailable', 'ip_not_allowed', 'quota_exceeded'] as const
/** Upper bounds in seconds: keygate answers in tens of microseconds, a slow scrape in milliseconds. */
export const DURATION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1]

const STATUS_SLOTS = 600 // status codes 0-599, one counter each

/** A plain, JSON-safe copy of every value: what workers send to the primary. */
export interface MetricsSnapshot {
  requests: Partial<Record<RouteName, Record<string, number>>>
  authFailures: Record<string, number>
  clientErrors: Record<string, number>
  /** Time to answer by route (only routes that answered something). */
  durations: Partial<Record<RouteName, DurationHistogram>>
  keyReloads: { success: number; failure: number }
  /** Requests made with an entry's earlier key (a rotation's `previous`), allowed or not. */
  previousKeyRequests: number
  /** Proxy mode: the service's answers by status class (`2xx`...), and failed exchanges by kind. */
  upstreamResponses: Record<string, number>
  upstreamErrors: Record<string, number>
  keysLoaded: number
  throttleClients: number
  logLinesDropped: number
  /** 1 while the store of limit counters answers (always, but for a Redis that is away); the least over workers. */
  limitsStoreUp: number
  limitsStoreErrors: number
  /** Seconds from the snapshot to the TLS certificate's expiry (the soonest over workers); null without TLS. */
  certificateExpirySeconds: number | null
  residentMemoryBytes: number
  heapUsedBytes: number
  /** User and system CPU time of the process, in seconds (summed over workers). */
  cpuSeconds: number
  /** Open file descriptors (summed over workers) and the limit of one process; NaN where /proc is not. */
  openFds: number
  maxFds: number
  /** Event-loop delay since the last scrape, mean and 99th percentile, in seconds (the worst worker's). */
  eventLoopLagSeconds: number
  eventLoopLagP99Seconds: number
  startTimeSeconds: number
  /** Processes whose values are in this snapshot. */
  workers: number
}

/** One histogram: per-bucket (not cumulative) counts, the last slot above every bound (+Inf). */
export interface DurationHistogram {
  buckets: number[]
  sum: number
  count: number
}

/** Values read when a snapshot is taken rather than counted. */
export interface MetricsGauges {
  keysLoaded(): number
  throttleClients(): number
  logLinesDropped(): number
  limitsStoreUp(): number
  limitsStoreErrors(): number
  /** When the TLS certificate in service expires, in ms since the epoch; NaN without TLS. */
  certificateNotAfterMs(): number
}

export interface Metrics {
  /** Counts one answered request: a few array increments, no allocation. */
  recordRequest(route: number, status: number, seconds: number, failure: number): void
  /** Counts a 400/408/431 written on the raw socket (`clientError`). */
  recordClientError(status: number): void
  recordKeyReload(ok: boolean): void
  /** Counts a request made with an entry's earlier key: who has not switched to the new one yet. */
  recordPreviousKey(): void
  /** Proxy mode: one exchange with the service, its status (undefined: no answer) or what went wrong. */
  recordUpstream(status: number | undefined, error: string | undefined): void
  snapshot(): MetricsSnapshot
}

const NO_GAUGES: MetricsGauges = { keysLoaded: () => 0, throttleClients: () => 0, logLinesDropped: () => 0, limitsStoreUp: () => 1, limitsStoreErrors: () => 0, certificateNotAfterMs: () => NaN }

/** Creates the counters; `gauges` are read at each snapshot (each defaults to 0). */
export function createMetrics(gauges: Partial<MetricsGauges> = {}): Metrics {
  const read: MetricsGauges = { ...NO_GAUGES, ...gauges }
  const requests = new Float64Array(ROUTE_NAMES.length * STATUS_SLOTS)
  const failures = new Float64Array(FAILURE_REASONS.length)
  const clientErrors = new Float64Array(STATUS_SLOTS)
  const slots = DURATION_BUCKETS.length + 1
  const buckets = new Float64Array(ROUTE_NAMES.length * slots)
  const reloads = { success: 0, failure: 0 }
  const previousKeys = new Float64Array(1)
  const upstreamResponses: Record<string, number> = {}
  const upstreamErrors: Record<string, number> = {}
  // In a typed array, not a `let`: a double kept in a closure is a new heap number at every update.
  const durationSums = new Float64Array(ROUTE_NAMES.length)
  const startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime())
  return {
    recordRequest(route, status, seconds, failure) {
      increment(requests, route * STATUS_SLOTS + (status % STATUS_SLOTS))
      if (failure >= 0) increment(failures, failure)
      let bucket = 0
      while (bucket < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[bucket] as number)) bucket++
      increment(buckets, route * slots + bucket)
      durationSums[route] = (durationSums[route] as number) + seconds
    },
    recordClientError(status) {
      increment(clientErrors, status % STATUS_SLOTS)
    },
    recordKeyReload(ok) {
      if (ok) reloads.success++
      else reloads.failure++
    },
    recordPreviousKey() {
      increment(previousKeys, 0)
    },
    recordUpstream(status, error) {
      if (status !== undefined) {
        const statusClass = `${Math.floor(status / 100)}xx`
        upstreamResponses[statusClass] = (upstreamResponses[statusClass] ?? 0) + 1
      }
      if (error !== undefined) upstreamErrors[error] = (upstreamErrors[error] ?? 0) + 1
    },
    snapshot() {
      const memory = process.memoryUsage()
      const cpu = process.cpuUsage()
      const lag = eventLoopDelay()
      return {
        requests: Object.fromEntries(ROUTE_NAMES.map((name, route) => [name, nonZero(requests.subarray(route * STATUS_SLOTS, (route + 1) * STATUS_SLOTS))])),
        authFailures: Object.fromEntries(FAILURE_REASONS.map((reason, i) => [reason, failures[i] as number])),
        clientErrors: nonZero(clientErrors),
        durations: durationsByRoute(buckets, durationSums, slots),
        keyReloads: { ...reloads },
        previousKeyRequests: previousKeys[0] as number,
        upstreamResponses: { ...upstreamResponses },
        upstreamErrors: { ...upstreamErrors },
        keysLoaded: read.keysLoaded(),
        throttleClients: read.throttleClients(),
        logLinesDropped: read.logLinesDropped(),
        limitsStoreUp: read.limitsStoreUp(),
        limitsStoreErrors: read.limitsStoreErrors(),
        certificateExpirySeconds: secondsUntil(read.certificateNotAfterMs()),
        residentMemoryBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        openFds: openFds(),
        maxFds: maxFds(),
        eventLoopLagSeconds: lag.mean,
        eventLoopLagP99Seconds: lag.p99,
        startTimeSeconds,
        workers: 1,
      }
    },
  }
}

function increment(counts: Float64Array, index: number): void {
  counts[index] = (counts[index] as number) + 1
}

// null rather than NaN: snapshots cross the cluster's IPC as JSON, which has no NaN.
function secondsUntil(ms: number): number | null {
  return Number.isNaN(ms) ? null : (ms - Date.now()) / 1000
}

function soonest(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.min(a, b)
}

function durationsByRoute(buckets: Float64Array, sums: Float64Array, slots: number): MetricsSnapshot['durations'] {
  const out: MetricsSnapshot['durations'] = {}
  ROUTE_NAMES.forEach((name, route) => {
    const counts = [...buckets.subarray(route * slots, (route + 1) * slots)]
    const count = counts.reduce((sum, n) => sum + n, 0)
    if (count > 0) out[name] = { buckets: counts, sum: sums[route] as number, count }
  })
  return out
}

function nonZero(counts: Float64Array): Record<string, number> {
  const out: Record<string, number> = {}
  counts.forEach((count, status) => {
    if (count > 0) out[status] = count
  })
  return out
}

/** One snapshot for the whole server: counters and memory added up, the key count and start time shared. */
export function sumSnapshots(snapshots: readonly MetricsSnapshot[]): MetricsSnapshot {
  const [first, ...rest] = snapshots
  if (first === undefined) throw new RangeError('sumSnapshots: no snapshots')
  const total: MetricsSnapshot = structuredClone(first)
  for (const s of rest) {
    for (const [route, byStatus] of Object.entries(s.requests)) {
      const into = (total.requests[route as RouteName] ??= {})
      for (const [status, n] of Object.entries(byStatus ?? {})) into[status] = (into[status] ?? 0) + n
    }
    addInto(total.authFailures, s.authFailures)
    addInto(total.clientErrors, s.clientErrors)
    addInto(total.upstreamResponses, s.upstreamResponses ?? {})
    addInto(total.upstreamErrors, s.upstreamErrors ?? {})
    for (const [route, histogram] of Object.entries(s.durations)) addHistogram(total.durations, route as RouteName, histogram)
    total.keyReloads.success += s.keyReloads.success
    total.keyReloads.failure += s.keyReloads.failure
    total.previousKeyRequests += s.previousKeyRequests
    total.keysLoaded = Math.max(total.keysLoaded, s.keysLoaded) // every worker loads the same keys
    total.throttleClients += s.throttleClients
    total.logLinesDropped += s.logLinesDropped
    total.limitsStoreUp = Math.min(total.limitsStoreUp, s.limitsStoreUp) // one worker without Redis is a store not answering
    total.limitsStoreErrors += s.limitsStoreErrors
    total.certificateExpirySeconds = soonest(total.certificateExpirySeconds, s.certificateExpirySeconds)
    total.residentMemoryBytes += s.residentMemoryBytes
    total.heapUsedBytes += s.heapUsedBytes
    total.cpuSeconds += s.cpuSeconds
    total.openFds += s.openFds
    total.maxFds = Math.max(total.maxFds, s.maxFds)
    total.eventLoopLagSeconds = Math.max(total.eventLoopLagSeconds, s.eventLoopLagSeconds)
    total.eventLoopLagP99Seconds = Math.max(total.eventLoopLagP99Seconds, s.eventLoopLagP99Seconds)
    total.startTimeSeconds = Math.min(total.startTimeSeconds, s.startTimeSeconds)
    total.workers += s.workers
  }
  return total
}

function addHistogram(into: MetricsSnapshot['durations'], route: RouteName, from: DurationHistogram): void {
  const total = (into[route] ??= { buckets: from.buckets.map(() => 0), sum: 0, count: 0 })
  from.buckets.forEach((n, i) => (total.buckets[i] = (total.buckets[i] ?? 0) + n))
  total.sum += from.sum
  total.count += from.count
}

function addInto(into: Record<string, number>, from: Record<string, number>): void {
  for (const [key, n] of Object.entries(from)) into[key] = (into[key] ?? 0) + n
}
