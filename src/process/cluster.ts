/**
 * `WORKERS>1`: the primary. It listens itself and hands each accepted connection to a worker, so
 * that on shutdown it can stop accepting first and every connection it accepted is served; it
 * forks, restarts and stops the workers, and sums their metrics over IPC. The worker's side is
 * cluster-worker.ts.
 */
import cluster, { type Worker } from 'node:cluster'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { throttleOptionsOf, type Config } from '../config.js'
import { SCRAPE_DEADLINE_MS, type WorkerMessage as Message } from './cluster-worker.js'
import type { Logger } from '../observe/log.js'
import { sumSnapshots, type MetricsSnapshot } from '../observe/metrics.js'
import { createPrimaryLimits, type LimitsMessage } from '../limits/cluster-store.js'
import { VERSION } from '../version.js'

// More deaths than this within the window is a crash loop: restarting again would only spin.
const CRASH_LOOP_DEATHS = 5
const CRASH_LOOP_WINDOW_MS = 10_000
const FIRST_RESTART_DELAY_MS = 100
const MAX_RESTART_DELAY_MS = 5_000
// After the drain deadline, workers still alive are killed; this is the margin for their own exit.
const STOP_MARGIN_MS = 2_000

// Connections accepted while no worker is ready (all restarting) wait, up to this many.
const MAX_WAITING_CONNECTIONS = 1024

/** Runs the primary: listens on the port, forks `config.workers` workers and supervises them until a signal. */
export function runPrimary(config: Config, log: Logger, urlOf: (port: number) => string, onListenError: (error: Error) => void): void {
  let stopping = false
  const deaths: number[] = []
  const ready = new Set<number>()
  // A worker installs its SIGHUP handler before it is ready: one still starting would be killed by
  // the signal, so it gets the SIGHUP once it is ready instead.
  const owedSighup = new Set<number>()
  const waiting: Socket[] = []
  let turn = 0
  let announced = false
  const readyWorkers = () => liveWorkers().filter((worker) => ready.has(worker.id) && worker.isConnected())
  // Without Redis, the limit counters of every worker live here: they survive a worker's restart.
  const limits = config.redis !== undefined ? undefined : createPrimaryLimits(throttleOptionsOf(config), (message) => {
    for (const worker of liveWorkers()) if (worker.isConnected()) worker.send(message)
  })

  let acceptedConnections = 0
  const handOff = (socket: Socket) => {
    const workers = readyWorkers()
    if (workers.length === 0) return waiting.length < MAX_WAITING_CONNECTIONS ? void waiting.push(socket) : void socket.destroy()
    const worker = workers[turn++ % workers.length] as Worker
    worker.send({ type: 'keygate:connection' }, socket, (error: Error | null) => error && socket.destroy())
  }
  // Paused: the worker that gets the connection reads its first byte, not the primary.
  const listener = createNetServer({ pauseOnConnect: true }, (socket) => {
    acceptedConnections++
    handOff(socket)
  })
  listener.on('error', onListenError)
  const announce = () => {
    if (announced || ready.size < config.workers || !listener.listening) return
    announced = true
    const { port } = listener.address() as AddressInfo
    log.info('listening', { url: urlOf(port), version: VERSION, node: process.version, workers: config.workers, pid: process.pid })
  }

  const onReady = (worker: Worker) => {
    ready.add(worker.id)
    if (owedSighup.delete(worker.id)) worker.process.kill('SIGHUP')
    if (announced) log.info('worker ready', { workerPid: worker.process.pid, worker: worker.id })
    for (const socket of waiting.splice(0)) handOff(socket)
    announce()
  }
  const fork = () => {
    const worker = cluster.fork()
    log.info('worker started', { workerPid: worker.process.pid, worker: worker.id })
    worker.on('message', (message: Message) => {
      if (message?.type === 'keygate:ready') return onReady(worker)
      const answer = limits?.answer(message as LimitsMessage)
      if (answer !== undefined) return void (worker.isConnected() && worker.send(answer))
      answerWorker(worker, message, readyWorkers, log)
    })
  }
  cluster.on('exit', (worker, code, signal) => {
    ready.delete(worker.id)
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
  const exitWhenAllGone = (code: number | null) => {
    if (code !== 0 && code !== null) cleanExits = false
    if (liveWorkers().length > 0) return
    log.info('stopped', { clean: cleanExits, acceptedConnections })
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
      if (ready.has(worker.id)) worker.process.kill('SIGHUP')
      else owedSighup.add(worker.id)
    }
  })
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return
    stopping = true
    log.info('shutting down workers', { signal, workers: liveWorkers().length })
    // Accepting stops first: from now on a new connection is refused, never accepted and dropped.
    listener.close()
    for (const socket of waiting.splice(0)) socket.destroy() // no worker was ever ready for them
    // IPC keeps order: each worker receives every connection handed to it before this message.
    for (const worker of liveWorkers()) {
      if (ready.has(worker.id) && worker.isConnected()) worker.send({ type: 'keygate:stop', signal })
      else worker.process.kill('SIGKILL') // still starting: it holds no connection
    }
    if (liveWorkers().length === 0) exitWhenAllGone(0)
    setTimeout(() => {
      log.error('workers did not stop in time: killing them', { timeoutMs: config.shutdownTimeoutMs })
      for (const worker of liveWorkers()) worker.process.kill('SIGKILL')
      process.exit(1)
    }, config.shutdownTimeoutMs + STOP_MARGIN_MS).unref()
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  // Workers only once the port is the primary's: a port in use is then one line and exit 1, not
  // that and a stack trace from each worker starting as the primary leaves (EPIPE on its IPC).
  listener.listen(config.port, config.host, () => {
    for (let i = 0; i < config.workers; i++) fork()
  })
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
