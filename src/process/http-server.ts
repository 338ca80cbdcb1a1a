/** The HTTP(S) server of a serving process: its timeouts, listening, and the connections it took. */
import { createServer, type Server, type ServerOptions } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Config } from '../config.js'
import type { Handler } from '../http/handler.js'
import { normalizeAddress } from '../keys/address-set.js'
import type { Logger } from '../observe/log.js'
import { VERSION } from '../version.js'
import { exitOnListenError } from './exits.js'
import type { TlsPair } from './tls.js'

/** The TLS module, loaded only when TLS is configured. */
export type TlsModule = typeof import('./tls.js')

// How often node:http looks for connections past their headers or request timeout (its default
// is 30 s): a quarter of the headers timeout, so a slow client is closed within 1.25 times it.
const MAX_TIMEOUT_CHECK_INTERVAL_MS = 1000
const MIN_TIMEOUT_CHECK_INTERVAL_MS = 10
// Connections this process accepted: the 'stopped' line says how many, to show that none was dropped.
export const accepted = { connections: 0 }

export function listen(server: Server, config: Config, log: Logger, fields: Record<string, string | number>): void {
  server.on('connection', () => accepted.connections++)
  server.on('error', (error: NodeJS.ErrnoException) => exitOnListenError(error, config, log))
  server.listen(config.port, config.host, () => {
    const { port } = server.address() as AddressInfo
    log.info('listening', { url: urlOf(config, port), version: VERSION, node: process.version, ...fields, pid: process.pid })
  })
}

export function clientOfSocket(socket: Socket): string {
  const peer = socket.remoteAddress ?? ''
  return normalizeAddress(peer) ?? peer
}

/** An HTTP server, or HTTPS when the pair is given, with the configured timeouts; it does not listen yet. */
export function createHttpServer(config: Config, handler: Handler, tls: { module: TlsModule; pair: TlsPair } | undefined): Server {
  const options: ServerOptions = {
    // The handler answers a missing Host itself (400 with keygate's headers, logged and counted).
    requireHostHeader: false,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.max(
      MIN_TIMEOUT_CHECK_INTERVAL_MS,
      Math.min(MAX_TIMEOUT_CHECK_INTERVAL_MS, Math.floor(config.headersTimeoutMs / 4)),
    ),
  }
  return tls === undefined ? createServer(options, handler) : tls.module.createHttpsServer(options, handler, tls.pair)
}

export function urlOf(config: Config, port: number): string {
  const host = config.host.includes(':') ? `[${config.host}]` : config.host
  return `${config.tls ? 'https' : 'http'}://${host}:${port}`
}
