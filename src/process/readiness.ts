/**
 * What a serving process answers on `/readyz`: what is not ready now. The keys are loaded before
 * the server listens, so they never are the problem here; these are: shutting down, the limits
 * store away while `LIMITS_ON_REDIS_FAILURE=closed` (every keyed request gets 503), and in proxy
 * mode a service that does not accept a connection (a TCP connect, at most PROBE_MS).
 */
import { connect } from 'node:net'
import type { Config } from '../config.js'

const PROBE_MS = 1000

export interface Readiness {
  problems(): Promise<string[]>
  /** From now on, not ready: the process is draining. */
  shuttingDown(): void
}

export function createReadiness(config: Config, store: { up(): number } | undefined): Readiness {
  let stopping = false
  const upstream = config.upstream?.url
  return {
    async problems() {
      const found: string[] = []
      if (stopping) found.push('shutting down')
      if (config.redis?.onFailure === 'closed' && store !== undefined && store.up() === 0) found.push('limits store unreachable (LIMITS_ON_REDIS_FAILURE=closed)')
      if (upstream !== undefined) {
        const problem = await probe(upstream, Math.min(PROBE_MS, config.upstream?.timeoutMs ?? PROBE_MS))
        if (problem !== undefined) found.push(`service unreachable (${problem})`)
      }
      return found
    },
    shuttingDown: () => void (stopping = true),
  }
}

/** Whether the service accepts a TCP connection: undefined, or why not (an error code, `timeout`). */
function probe(url: URL, timeoutMs: number): Promise<string | undefined> {
  const secure = url.protocol === 'https:'
  const port = url.port === '' ? (secure ? 443 : 80) : Number(url.port)
  return new Promise((resolve) => {
    const socket = connect({ host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port })
    const done = (problem: string | undefined) => {
      socket.destroy()
      resolve(problem)
    }
    socket.setTimeout(timeoutMs, () => done('timeout'))
    socket.once('connect', () => done(undefined))
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code ?? 'error'))
  })
}
