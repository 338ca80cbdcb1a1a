/** Clean shutdown of a serving process, and SIGHUP held until there is something to reload. */
import { Server as NetServer } from 'node:net'
import type { Server } from 'node:http'
import type { Logger } from '../observe/log.js'
import { accepted } from './http-server.js'

// On shutdown, keep-alive connections get this long to send their next request (answered with
// `Connection: close`) before idle ones are closed: closing at once could reset a request in transit.
const MAX_DRAIN_GRACE_MS = 1000
const CLOSE_IDLE_EVERY_MS = 50

/** Until the real handler is installed, a SIGHUP (whose default action is exit) is remembered, then handled. */
export function holdSighup(): (handler: () => void) => void {
  let pending = false
  const hold = () => {
    pending = true
  }
  process.on('SIGHUP', hold)
  return (handler) => {
    process.off('SIGHUP', hold)
    process.on('SIGHUP', handler)
    if (pending) handler()
  }
}

/**
 * Stops accepting, answers every request already received (with `Connection: close`), gives
 * keep-alive connections a short grace to send their next request, closes idle ones, then exits 0;
 * exit 1 when `timeoutMs` passes first.
 */
export function shutdown(
  server: Server,
  log: Logger,
  timeoutMs: number,
  signal: NodeJS.Signals,
  { dropHandshakes, whenDrained, dropIdle }: { dropHandshakes?: () => void; whenDrained?: (done: () => void) => void; dropIdle?: () => void },
): void {
  log.info('shutting down', { signal, timeoutMs })
  // A TLS connection still in its handshake has sent no request: nothing is lost by closing it.
  dropHandshakes?.()
  server.prependListener('request', (_req, res) => res.setHeader('connection', 'close'))
  const exit = (code: number): never => {
    log.flush()
    process.exit(code)
  }
  const stopped = () => {
    log.info('stopped', { signal, ...(whenDrained === undefined && { acceptedConnections: accepted.connections }) })
    exit(0)
  }
  // net.Server's close stops accepting without http.Server's closeIdleConnections(), which would
  // cut a connection whose next request is already on its way. A cluster worker has no listening
  // socket to close: the primary has stopped accepting, and it waits for its connections instead.
  if (whenDrained === undefined) NetServer.prototype.close.call(server, stopped)
  else whenDrained(stopped)
  const graceMs = Math.min(MAX_DRAIN_GRACE_MS, Math.floor(timeoutMs / 4))
  setTimeout(() => {
    server.closeIdleConnections()
    dropIdle?.()
    setInterval(() => server.closeIdleConnections(), CLOSE_IDLE_EVERY_MS).unref()
  }, graceMs).unref()
  setTimeout(() => {
    log.error('shutdown timed out: requests still in flight were cut off', { timeoutMs })
    exit(1)
  }, timeoutMs).unref()
}
