/** Counters and gauges, their sum over cluster workers, and the Prometheus text format 0.0.4. */

/** Route labels, indexed by the handler: anything else counts as `other`. */
// `app`: a route of the host app behind createGuard(); `other`: a path nobody owns (404).
export const ROUTE_NAMES = ['data', 'healthz', 'readyz', 'auth', 'metrics', 'proxy', 'app', 'other'] as const
export type RouteName = (typeof ROUTE_NAMES)[number]
export const FAILURE_REASONS = ['missing', 'invalid', 'expired', 'throttled', 'forbidden', 'rate_limited', 'limits_unavailable'] as const
/** Upper bounds in seconds: keygate answers in tens of microseconds, a slow scrape in milliseconds. */
export const DURATION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1]

const STATUS_SLOTS = 600 // status codes 0-599, one counter each

/** A plain, JSON-safe copy of every value: what workers send to the primary. */
export interface MetricsSnapshot {
  requests: Partial<Record<RouteName, Record<string, number>>>
  authFailures: Record<string, number>
  clientErrors: Record<string, number>
  /** Per-bucket (not cumulative) counts; the last slot is above every bound (+Inf). */
  durationBuckets: number[]
  durationSum: number
  durationCount: number
  keyReloads: { success: number; failure: number }
  /** Proxy mode: the service's answers by status class (`2xx`...), and failed exchanges by kind. */
  upstreamResponses: Record<string, number>
  upstreamErrors: Record<string, number>
  keysLoaded: number
  throttleClients: number
  logLinesDropped: number
  /** 1 while the store of limit counters answers (always, but for a Redis that is away); the least over workers. */
  limitsStoreUp: number
  limitsStoreErrors: number
  residentMemoryBytes: number
  heapUsedBytes: number
  startTimeSeconds: number
  /** Processes whose values are in this snapshot. */
  workers: number
}

/** Values read when a snapshot is taken rather than counted. */
export interface MetricsGauges {
  keysLoaded(): number
  throttleClients(): number
  logLinesDropped(): number
  limitsStoreUp(): number
  limitsStoreErrors(): number
}

export interface Metrics {
  /** Counts one answered request: a few array increments, no allocation. */
  recordRequest(route: number, status: number, seconds: number, failure: number): void
  /** Counts a 400/408/431 written on the raw socket (`clientError`). */
  recordClientError(status: number): void
  recordKeyReload(ok: boolean): void
  /** Proxy mode: one exchange with the service, its status (undefined: no answer) or what went wrong. */
  recordUpstream(status: number | undefined, error: string | undefined): void
  snapshot(): MetricsSnapshot
}

const NO_GAUGES: MetricsGauges = { keysLoaded: () => 0, throttleClients: () => 0, logLinesDropped: () => 0, limitsStoreUp: () => 1, limitsStoreErrors: () => 0 }

/** Creates the counters; `gauges` are read at each snapshot (each defaults to 0). */
export function createMetrics(gauges: Partial<MetricsGauges> = {}): Metrics {
  const read: MetricsGauges = { ...NO_GAUGES, ...gauges }
  const requests = new Float64Array(ROUTE_NAMES.length * STATUS_SLOTS)
  const failures = new Float64Array(FAILURE_REASONS.length)
  const clientErrors = new Float64Array(STATUS_SLOTS)
  const buckets = new Float64Array(DURATION_BUCKETS.length + 1)
  const reloads = { success: 0, failure: 0 }
  const upstreamResponses: Record<string, number> = {}
  const upstreamErrors: Record<string, number> = {}
  // In a typed array, not a `let`: a double kept in a closure is a new heap number at every update.
  const durationSum = new Float64Array(1)
  const startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime())
  return {
    recordRequest(route, status, seconds, failure) {
      increment(requests, route * STATUS_SLOTS + (status % STATUS_SLOTS))
      if (failure >= 0) increment(failures, failure)
      let bucket = 0
      while (bucket < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[bucket] as number)) bucket++
      increment(buckets, bucket)
      durationSum[0] = (durationSum[0] as number) + seconds
    },
    recordClientError(status) {
      increment(clientErrors, status % STATUS_SLOTS)
    },
    recordKeyReload(ok) {
      if (ok) reloads.success++
      else reloads.failure++
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
      return {
        requests: Object.fromEntries(ROUTE_NAMES.map((name, route) => [name, nonZero(requests.subarray(route * STATUS_SLOTS, (route + 1) * STATUS_SLOTS))])),
        authFailures: Object.fromEntries(FAILURE_REASONS.map((reason, i) => [reason, failures[i] as number])),
        clientErrors: nonZero(clientErrors),
        durationBuckets: [...buckets],
        durationSum: durationSum[0] as number,
        durationCount: buckets.reduce((sum, n) => sum + n, 0),
        keyReloads: { ...reloads },
        upstreamResponses: { ...upstreamResponses },
        upstreamErrors: { ...upstreamErrors },
        keysLoaded: read.keysLoaded(),
        throttleClients: read.throttleClients(),
        logLinesDropped: read.logLinesDropped(),
        limitsStoreUp: read.limitsStoreUp(),
        limitsStoreErrors: read.limitsStoreErrors(),
        residentMemoryBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        startTimeSeconds,
        workers: 1,
      }
    },
  }
}

function increment(counts: Float64Array, index: number): void {
  counts[index] = (counts[index] as number) + 1
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
    s.durationBuckets.forEach((n, i) => (total.durationBuckets[i] = (total.durationBuckets[i] ?? 0) + n))
    total.durationSum += s.durationSum
    total.durationCount += s.durationCount
    total.keyReloads.success += s.keyReloads.success
    total.keyReloads.failure += s.keyReloads.failure
    total.keysLoaded = Math.max(total.keysLoaded, s.keysLoaded) // every worker loads the same keys
    total.throttleClients += s.throttleClients
    total.logLinesDropped += s.logLinesDropped
    total.limitsStoreUp = Math.min(total.limitsStoreUp, s.limitsStoreUp) // one worker without Redis is a store not answering
    total.limitsStoreErrors += s.limitsStoreErrors
    total.residentMemoryBytes += s.residentMemoryBytes
    total.heapUsedBytes += s.heapUsedBytes
    total.startTimeSeconds = Math.min(total.startTimeSeconds, s.startTimeSeconds)
    total.workers += s.workers
  }
  return total
}

function addInto(into: Record<string, number>, from: Record<string, number>): void {
  for (const [key, n] of Object.entries(from)) into[key] = (into[key] ?? 0) + n
}

/** The snapshot in the Prometheus text exposition format, version 0.0.4. */
export function renderMetrics(s: MetricsSnapshot, nowSeconds = Date.now() / 1000): string {
  const out: string[] = []
  const family = (name: string, type: string, help: string, samples: Array<[Record<string, string>, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) out.push(`${name}${labelsOf(labels)} ${formatValue(value)}`)
  }
  family('keygate_requests_total', 'counter', 'Requests answered, by route and status.',
    Object.entries(s.requests).flatMap(([route, byStatus]) =>
      Object.entries(byStatus ?? {}).map(([status, n]): [Record<string, string>, number] => [{ route, status }, n])))
  family('keygate_auth_failures_total', 'counter', 'Requests refused for their credential or its scope, by reason.',
    Object.entries(s.authFailures).map(([reason, n]) => [{ reason }, n]))
  family('keygate_client_errors_total', 'counter', 'Malformed, oversized or timed-out requests closed before routing, by status.',
    Object.entries(s.clientErrors).map(([status, n]) => [{ status }, n]))
  out.push('# HELP keygate_request_duration_seconds Time from the request reaching keygate to its answer being written.')
  out.push('# TYPE keygate_request_duration_seconds histogram')
  let cumulative = 0
  DURATION_BUCKETS.forEach((bound, i) => {
    cumulative += s.durationBuckets[i] ?? 0
    out.push(`keygate_request_duration_seconds_bucket{le="${bound}"} ${cumulative}`)
  })
  out.push(`keygate_request_duration_seconds_bucket{le="+Inf"} ${s.durationCount}`)
  out.push(`keygate_request_duration_seconds_sum ${formatValue(s.durationSum)}`, `keygate_request_duration_seconds_count ${s.durationCount}`)
  family('keygate_upstream_responses_total', 'counter', 'Proxy mode: answers of the service, by status class.',
    Object.entries(s.upstreamResponses ?? {}).map(([statusClass, n]) => [{ class: statusClass }, n]))
  family('keygate_upstream_errors_total', 'counter', 'Proxy mode: exchanges with the service that failed, by kind.',
    Object.entries(s.upstreamErrors ?? {}).map(([kind, n]) => [{ kind }, n]))
  family('keygate_keys_loaded', 'gauge', 'Keys in service.', [[{}, s.keysLoaded]])
  family('keygate_key_reloads_total', 'counter', 'Reloads of the keys file, by result.',
    [[{ result: 'success' }, s.keyReloads.success], [{ result: 'failure' }, s.keyReloads.failure]])
  family('keygate_throttle_clients', 'gauge', 'Client addresses tracked by the failed-attempt throttle.', [[{}, s.throttleClients]])
  family('keygate_log_lines_dropped_total', 'counter', 'Log lines dropped because stdout could not keep up.', [[{}, s.logLinesDropped]])
  family('keygate_limits_store_up', 'gauge', 'Whether the store of limit counters answers: 0 while Redis is away (in any worker).', [[{}, s.limitsStoreUp]])
  family('keygate_limits_store_errors_total', 'counter', 'Redis commands and connections that failed or timed out.', [[{}, s.limitsStoreErrors]])
  family('keygate_workers', 'gauge', 'Processes whose values this scrape includes.', [[{}, s.workers]])
  family('process_resident_memory_bytes', 'gauge', 'Resident memory, summed over workers.', [[{}, s.residentMemoryBytes]])
  family('nodejs_heap_size_used_bytes', 'gauge', 'V8 heap in use, summed over workers.', [[{}, s.heapUsedBytes]])
  family('process_start_time_seconds', 'gauge', 'Start time since the Unix epoch, in seconds.', [[{}, s.startTimeSeconds]])
  family('keygate_uptime_seconds', 'gauge', 'Seconds since the process started.', [[{}, Math.max(0, Math.round(nowSeconds - s.startTimeSeconds))]])
  return `${out.join('\n')}\n`
}

function labelsOf(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`)
  return pairs.length === 0 ? '' : `{${pairs.join(',')}}`
}

/** Label values escape backslash, double quote and line feed (text format 0.0.4). */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN'
  if (!Number.isFinite(value)) return value > 0 ? '+Inf' : '-Inf'
  return String(value)
}
