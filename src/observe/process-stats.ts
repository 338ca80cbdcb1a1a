/**
 * What the process series report, read when a snapshot is taken: open and maximum file
 * descriptors (from /proc, Linux; NaN elsewhere) and the event loop's delay, sampled all along by
 * perf_hooks and reset at each read.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'

let delays: IntervalHistogram | undefined

/** Mean and 99th percentile of the event loop's delay since the last call, in seconds. */
export function eventLoopDelay(): { mean: number; p99: number } {
  if (delays === undefined) {
    delays = monitorEventLoopDelay({ resolution: 20 })
    delays.enable()
  }
  // Until a first sample the histogram's mean is NaN: no delay seen yet.
  const read = { mean: Number.isFinite(delays.mean) ? delays.mean / 1e9 : 0, p99: delays.percentile(99) / 1e9 }
  delays.reset()
  return read
}

export function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length - 1 // the directory being read is one of them
  } catch {
    return Number.NaN
  }
}

export function maxFds(): number {
  try {
    const line = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return line === null ? Number.NaN : Number(line[1])
  } catch {
    return Number.NaN
  }
}
