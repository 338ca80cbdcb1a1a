/** A metrics snapshot in the Prometheus text exposition format, version 0.0.4. */
import { DURATION_BUCKETS, type DurationHistogram, type MetricsSnapshot } from './metrics.js'

// Labels known in advance are written at zero from the start, so that rate() and alerts see them.
const UPSTREAM_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx']
const UPSTREAM_ERRORS = ['connect', 'tls', 'timeout', 'reset_before_head', 'reset_after_head', 'bad_answer', 'client_aborted', 'body_too_large']
const CLIENT_ERRORS = ['400', '408', '431']

/** `counts` with a zero for each known label it lacks. */
function withZeros(counts: Record<string, number> | undefined, known: readonly string[]): Record<string, number> {
  return { ...Object.fromEntries(known.map((label) => [label, 0])), ...counts }
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
  family('keygate_auth_failures_total', 'counter', 'Requests refused for their credential, address, scope, rate limit or quota, by reason.',
    Object.entries(s.authFailures).map(([reason, n]) => [{ reason }, n]))
  family('keygate_client_errors_total', 'counter', 'Malformed, oversized or timed-out requests closed before routing, by status.',
    Object.entries(withZeros(s.clientErrors, CLIENT_ERRORS)).map(([status, n]) => [{ status }, n]))
  out.push('# HELP keygate_request_duration_seconds Time from the request reaching keygate to its answer being written, by route.')
  out.push('# TYPE keygate_request_duration_seconds histogram')
  for (const [route, histogram] of Object.entries(s.durations)) out.push(...histogramLines(route, histogram as DurationHistogram))
  family('keygate_upstream_responses_total', 'counter', 'Proxy mode: answers of the service, by status class.',
    Object.entries(withZeros(s.upstreamResponses, UPSTREAM_CLASSES)).map(([statusClass, n]) => [{ class: statusClass }, n]))
  family('keygate_upstream_errors_total', 'counter', 'Proxy mode: exchanges with the service that failed, by kind.',
    Object.entries(withZeros(s.upstreamErrors, UPSTREAM_ERRORS)).map(([kind, n]) => [{ kind }, n]))
  family('keygate_keys_loaded', 'gauge', 'Keys in service.', [[{}, s.keysLoaded]])
  family('keygate_key_reloads_total', 'counter', 'Reloads of the keys file, by result.',
    [[{ result: 'success' }, s.keyReloads.success], [{ result: 'failure' }, s.keyReloads.failure]])
  family('keygate_previous_key_requests_total', 'counter', 'Requests made with an earlier key of an entry (rotation grace period).', [[{}, s.previousKeyRequests]])
  family('keygate_throttle_clients', 'gauge', 'Client addresses tracked by the failed-attempt throttle.', [[{}, s.throttleClients]])
  family('keygate_log_lines_dropped_total', 'counter', 'Log lines dropped because stdout could not keep up.', [[{}, s.logLinesDropped]])
  family('keygate_limits_store_up', 'gauge', 'Whether the store of limit counters answers: 0 while Redis is away (in any worker).', [[{}, s.limitsStoreUp]])
  family('keygate_limits_store_errors_total', 'counter', 'Redis commands and connections that failed or timed out.', [[{}, s.limitsStoreErrors]])
  if (s.certificateExpirySeconds !== null) {
    family('keygate_tls_certificate_expiry_seconds', 'gauge', 'Seconds until the TLS certificate in service expires (negative once it has).',
      [[{}, Math.round(s.certificateExpirySeconds)]])
  }
  family('keygate_workers', 'gauge', 'Processes whose values this scrape includes.', [[{}, s.workers]])
  family('process_resident_memory_bytes', 'gauge', 'Resident memory, summed over workers.', [[{}, s.residentMemoryBytes]])
  family('nodejs_heap_size_used_bytes', 'gauge', 'V8 heap in use, summed over workers.', [[{}, s.heapUsedBytes]])
  family('process_start_time_seconds', 'gauge', 'Start time since the Unix epoch, in seconds.', [[{}, s.startTimeSeconds]])
  family('process_cpu_seconds_total', 'counter', 'User and system CPU time spent, in seconds, summed over workers.', [[{}, s.cpuSeconds]])
  if (Number.isFinite(s.openFds)) family('process_open_fds', 'gauge', 'Open file descriptors, summed over workers.', [[{}, s.openFds]])
  if (Number.isFinite(s.maxFds)) family('process_max_fds', 'gauge', 'Maximum open file descriptors of one process.', [[{}, s.maxFds]])
  family('nodejs_eventloop_lag_seconds', 'gauge', 'Mean event-loop delay since the last scrape, in seconds (the worst worker).', [[{}, s.eventLoopLagSeconds]])
  family('nodejs_eventloop_lag_p99_seconds', 'gauge', '99th percentile of the event-loop delay since the last scrape, in seconds (the worst worker).', [[{}, s.eventLoopLagP99Seconds]])
  family('keygate_uptime_seconds', 'gauge', 'Seconds since the process started.', [[{}, Math.max(0, Math.round(nowSeconds - s.startTimeSeconds))]])
  return `${out.join('\n')}\n`
}

function histogramLines(route: string, { buckets, sum, count }: DurationHistogram): string[] {
  const name = 'keygate_request_duration_seconds'
  const label = `route="${escapeLabelValue(route)}"`
  let cumulative = 0
  const lines = DURATION_BUCKETS.map((bound, i) => {
    cumulative += buckets[i] ?? 0
    return `${name}_bucket{${label},le="${bound}"} ${cumulative}`
  })
  lines.push(`${name}_bucket{${label},le="+Inf"} ${count}`, `${name}_sum{${label}} ${formatValue(sum)}`, `${name}_count{${label}} ${count}`)
  return lines
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
