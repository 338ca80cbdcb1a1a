/**
 * A cluster worker's side of the primary (cluster.ts): connections come from the primary over IPC
 * instead of from a listening socket of its own, and it stops when the primary says so, after the
 * last connection handed to it. Metrics are summed over all workers through the primary.
 */
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Metrics, MetricsSnapshot } from '../observe/metrics.js'
import { createWorkerLimits, type LimitsMessage, type WorkerLimits } from '../limits/cluster-store.js'

export type WorkerMessage =
  | { type: 'keygate:ready' }
  | { type: 'keygate:connection' }
  | { type: 'keygate:stop'; signal: NodeJS.Signals }
  | { type: 'keygate:scrape'; id: number }
  | { type: 'keygate:collect'; id: number }
  | { type: 'keygate:snapshot'; id: number; snapshot: MetricsSnapshot }
  | { type: 'keygate:scraped'; id: number; snapshot: MetricsSnapshot }
  | LimitsMessage

// How long the primary waits for every worker's counters before answering a scrape with those it has.
export const SCRAPE_DEADLINE_MS = 1_000

/** What a worker's shutdown waits on: every connection the primary handed to it has closed. */
export interface WorkerIntake {
  whenDrained(done: () => void): void
}

/**
 * Serves the connections the primary hands over on `server` (which never listens itself), tells
 * the primary it is ready, and calls `onStop` when the primary asks it to stop or goes away.
 */
export function acceptFromPrimary(server: Server, onStop: (signal: NodeJS.Signals) => void): WorkerIntake {
  const open = new Set<Socket>()
  let drained: (() => void) | undefined
  const checkDrained = () => open.size === 0 && drained?.()
  // node:http starts its timeout checks (headers, request) and its connection list on 'listening'.
  server.emit('listening')
  process.on('message', (message: WorkerMessage, socket?: Socket) => {
    if (message?.type === 'keygate:stop') onStop(message.signal)
    if (message?.type !== 'keygate:connection' || socket === undefined) return
    open.add(socket)
    socket.once('close', () => {
      open.delete(socket)
      checkDrained()
    })
    server.emit('connection', socket)
  })
  process.once('disconnect', () => onStop('SIGTERM'))
  process.send?.({ type: 'keygate:ready' })
  return {
    whenDrained(done) {
      drained = done
      checkDrained()
    },
  }
}

/**
 * The worker's side: answers the primary's requests for this worker's counters, and returns the
 * `collectMetrics` that asks the primary for the whole server's (rejects after a deadline).
 */
export function connectWorkerMetrics(metrics: Metrics): () => Promise<MetricsSnapshot> {
  const waiting = new Map<number, (snapshot: MetricsSnapshot) => void>()
  let nextId = 0
  process.on('message', (message: WorkerMessage) => {
    if (message?.type === 'keygate:collect') process.send?.({ type: 'keygate:snapshot', id: message.id, snapshot: metrics.snapshot() })
    if (message?.type === 'keygate:scraped') waiting.get(message.id)?.(message.snapshot)
  })
  return () =>
    new Promise((resolve, reject) => {
      const id = nextId++
      const timer = setTimeout(() => {
        waiting.delete(id)
        reject(new Error('the primary did not answer the scrape'))
      }, SCRAPE_DEADLINE_MS * 2)
      waiting.set(id, (snapshot) => {
        clearTimeout(timer)
        waiting.delete(id)
        resolve(snapshot)
      })
      process.send?.({ type: 'keygate:scrape', id })
    })
}

/**
 * The worker's limit counters, held by the primary (without `REDIS_URL`): failed attempts and
 * rate-limited requests are counted there, blocks announced by the primary are refused here.
 */
export function connectWorkerLimits(throttle: { maxClients: number } | undefined): WorkerLimits {
  const limits = createWorkerLimits((message) => process.send?.(message), throttle)
  process.on('message', (message: WorkerMessage) => limits.receive(message as LimitsMessage))
  return limits
}
