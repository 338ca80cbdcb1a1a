/** `WORKERS>1`: the primary that forks, restarts and signals workers; metrics summed over IPC. */
import cluster, { type Worker } from 'node:cluster'
import type { Config } from './config.js'
import type { Logger } from './log.js'
import { VERSION } from './version.js'
import { sumSnapshots, type Metrics, type MetricsSnapshot } from './metrics.js'

// More deaths than this within the window is a crash loop: restarting again would only spin.
const CRASH_LOOP_DEATHS = 5
const CRASH_LOOP_WINDOW_MS = 10_000
const FIRST_RESTART_DELAY_MS = 100
const MAX_RESTART_DELAY_MS = 5_000
// How long the primary waits for every worker's counters before answering a scrape with those it has.
export const SCRAPE_DEADLINE_MS = 1_000
// After the drain deadline, workers still alive are killed; this is the margin for their own exit.
const STOP_MARGIN_MS = 2_000

type Message =
  | { type: 'keygate:scrape'; id: number }
  | { type: 'keygate:collect'; id: number }
  | { type: 'keygate:snapshot'; id: number; snapshot: MetricsSnapshot }
  | { type: 'keygate:scraped'; id: number; snapshot: MetricsSnapshot }

/** Runs the primary: forks `config.workers` workers on one port and supervises them until a signal. */
export function runPrimary(config: Config, log: Logger, urlOf: (port: number) => string): void {
  let stopping = false
  const deaths: number[] = []
  const listening = new Set<number>()
  let announced = false

  const fork = () => {
    const worker = cluster.fork()
    log.info('worker started', { workerPid: worker.process.pid, worker: worker.id })
    worker.on('message', (message: Message) => answerWorker(worker, message, readyWorkers, log))
  }
  // Only workers that listen are asked for their counters: one still starting could not answer.
  const readyWorkers = () => liveWorkers().filter((worker) => listening.has(worker.id))
  // A worker installs its SIGHUP handler before it listens: one still starting would be killed by
  // the signal, so it gets the SIGHUP once it listens instead.
  const owedSighup = new Set<number>()
  cluster.on('listening', (worker, address) => {
    listening.add(worker.id)
    if (owedSighup.delete(worker.id)) worker.process.kill('SIGHUP')
    if (announced) log.info('worker ready', { workerPid: worker.process.pid, worker: worker.id })
    if (!announced && listening.size >= config.workers) {
      announced = true
      log.info('listening', { url: urlOf(address.port), version: VERSION, node: process.version, workers: config.workers, pid: process.pid })
    }
  })
  cluster.on('exit', (worker, code, signal) => {
    listening.delete(worker.id)
    owedSighup.delete(worker.id)
    if (stopping) return exitWhenAllGone(code)
    log.warn('worker died', { workerPid: worker.process.pid, code, signal: signal ?? undefined })
    const now = Date.now()
    deaths.push(now)
    while ((deaths[0] ?? now) <= now - CRASH_LOOP_WINDOW_MS) deaths.shift()
    if (deaths.length > CRASH_LOOP_DEATHS) return giveUp()
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** (deaths.length - 1))
    setTimeout(() => stopping || (log.info('restarting worker', { delayMs }), fork()), delayMs)
  })

  let cleanExits = true
  const exitWhenAllGone = (code: number) => {
    if (code !== 0) cleanExits = false
    if (Object.keys(cluster.workers ?? {}).length > 0) return
    log.info('stopped', { clean: cleanExits })
    process.exit(cleanExits ? 0 : 1)
  }
  const giveUp = () => {
    log.error('workers are crash-looping: giving up', { deaths: deaths.length, windowMs: CRASH_LOOP_WINDOW_MS })
    stopping = true
    for (const worker of liveWorkers()) worker.process.kill('SIGKILL')
    process.exit(1)
  }

  process.on('SIGHUP', () => {
    const workers = liveWorkers()
    log.info('forwarding SIGHUP to workers', { workers: workers.length })
    for (const worker of workers) {
      if (listening.has(worker.id)) worker.process.kill('SIGHUP')
      else owedSighup.add(worker.id)
    }
  })
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return
      stopping = true
      log.info('shutting down workers', { signal, workers: liveWorkers().length })
      for (const worker of liveWorkers()) worker.process.kill('SIGTERM')
      setTimeout(() => {
        log.error('workers did not stop in time: killing them', { timeoutMs: config.shutdownTimeoutMs })
        for (const worker of liveWorkers()) worker.process.kill('SIGKILL')
        process.exit(1)
      }, config.shutdownTimeoutMs + STOP_MARGIN_MS).unref()
    })
  }
  for (let i = 0; i < config.workers; i++) fork()
}

function liveWorkers(): Worker[] {
  return Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined && !worker.isDead())
}

let nextGatherId = 0
const gatherings = new Map<number, { snapshots: MetricsSnapshot[]; expected: number; done: () => void }>()

/** The primary's side of the IPC: a scrape asks every worker, a snapshot answers one gathering. */
function answerWorker(from: Worker, message: Message, readyWorkers: () => Worker[], log: Logger): void {
  if (message?.type === 'keygate:snapshot') {
    const gathering = gatherings.get(message.id)
    gathering?.snapshots.push(message.snapshot)
    if (gathering && gathering.snapshots.length >= gathering.expected) gathering.done()
    return
  }
  if (message?.type !== 'keygate:scrape') return
  const workers = readyWorkers()
  const id = nextGatherId++
  const snapshots: MetricsSnapshot[] = []
  const done = () => {
    if (!gatherings.delete(id)) return
    clearTimeout(timer)
    if (snapshots.length < workers.length) log.warn('scrape: some workers did not answer in time', { answered: snapshots.length, workers: workers.length })
    if (snapshots.length > 0 && from.isConnected()) from.send({ type: 'keygate:scraped', id: message.id, snapshot: sumSnapshots(snapshots) })
  }
  const timer = setTimeout(done, SCRAPE_DEADLINE_MS)
  gatherings.set(id, { snapshots, expected: workers.length, done })
  for (const worker of workers) if (worker.isConnected()) worker.send({ type: 'keygate:collect', id })
}

/**
 * The worker's side: answers the primary's requests for this worker's counters, and returns the
 * `collectMetrics` that asks the primary for the whole server's (rejects after a deadline).
 */
export function connectWorkerMetrics(metrics: Metrics): () => Promise<MetricsSnapshot> {
  const waiting = new Map<number, (snapshot: MetricsSnapshot) => void>()
  let nextId = 0
  process.on('message', (message: Message) => {
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
