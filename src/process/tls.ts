/** HTTPS: loading and checking the certificate pair, and swapping it in on reload. */
import { readFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import type { RequestListener, ServerOptions } from 'node:http'
import { createServer, type Server as HttpsServer } from 'node:https'
import type { Socket } from 'node:net'
import { createSecureContext as createTlsContext, type TLSSocket } from 'node:tls'
import { ConfigError } from '../config.js'
import type { Logger } from '../observe/log.js'

export interface TlsFiles {
  certFile: string
  keyFile: string
}

export interface TlsPair {
  cert: Buffer
  key: Buffer
  /** When the leaf certificate expires, as ISO-8601. */
  validTo: string
}

/** TLS 1.0 and 1.1 are deprecated (RFC 8996). */
export const MIN_TLS_VERSION = 'TLSv1.2'

/** Reads and checks the pair; throws `ConfigError` naming the variable at fault. */
export function loadTlsPair({ certFile, keyFile }: TlsFiles): TlsPair {
  const cert = readPem('TLS_CERT_FILE', certFile)
  const key = readPem('TLS_KEY_FILE', keyFile)
  let validTo: string
  try {
    validTo = new Date(new X509Certificate(cert).validTo).toISOString()
  } catch {
    throw new ConfigError(`TLS_CERT_FILE ${certFile}: not a PEM certificate`)
  }
  try {
    createTlsContext({ key })
  } catch {
    throw new ConfigError(`TLS_KEY_FILE ${keyFile}: not a PEM private key (an encrypted key is not supported)`)
  }
  try {
    createTlsContext({ cert, key })
  } catch {
    throw new ConfigError(`TLS_KEY_FILE ${keyFile}: does not match the certificate in TLS_CERT_FILE ${certFile}`)
  }
  return { cert, key, validTo }
}

/** An HTTPS server with the pair, TLS 1.2 or newer, and the given HTTP options; it does not listen yet. */
export function createHttpsServer(options: ServerOptions, handler: RequestListener, pair: TlsPair): HttpsServer {
  return createServer({ ...options, handshakeTimeout: options.headersTimeout, cert: pair.cert, key: pair.key, minVersion: MIN_TLS_VERSION }, handler)
}

/**
 * Tracks connections whose TLS handshake has not finished; the returned function destroys them.
 * On shutdown they are never going to carry a request, and would hold the drain open until their
 * handshake times out.
 */
export function trackHandshakes(server: HttpsServer): () => void {
  const pending = new Set<Socket>()
  const done = (tls: TLSSocket) => pending.delete((tls as TLSSocket & { _parent?: Socket })._parent as Socket)
  server.on('connection', (raw: Socket) => {
    pending.add(raw)
    raw.once('close', () => pending.delete(raw))
  })
  server.on('secureConnection', done)
  server.on('tlsClientError', (_error, tls) => done(tls))
  return () => {
    for (const raw of pending) raw.destroy()
  }
}

/** As for keys: a certificate this close to expiry gets a warning at startup and at each reload. */
export const CERTIFICATE_WARNING_DAYS = 30
const DAY_MS = 86_400_000

/** The warning a certificate deserves at `nowMs`: expired, or expiring within 30 days; else undefined. */
export function certificateWarning(pair: TlsPair, certFile: string, nowMs = Date.now()): string | undefined {
  const leftMs = Date.parse(pair.validTo) - nowMs
  if (leftMs <= 0) return `TLS_CERT_FILE ${certFile}: the certificate expired at ${pair.validTo}`
  if (leftMs > CERTIFICATE_WARNING_DAYS * DAY_MS) return undefined
  return `TLS_CERT_FILE ${certFile}: the certificate expires within ${CERTIFICATE_WARNING_DAYS} days, at ${pair.validTo}`
}

/**
 * Re-reads the pair and swaps it into `server`, returning it; an invalid pair keeps the old one,
 * logs an error and returns undefined.
 */
export function reloadTls(server: HttpsServer, files: TlsFiles, log: Logger): TlsPair | undefined {
  try {
    const pair = loadTlsPair(files)
    server.setSecureContext({ cert: pair.cert, key: pair.key, minVersion: MIN_TLS_VERSION })
    log.info('tls reloaded', { certFile: files.certFile, validTo: pair.validTo })
    const warning = certificateWarning(pair, files.certFile)
    if (warning !== undefined) log.warn(warning)
    return pair
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    log.error('tls reload failed: the previous certificate stays in service', { error: error.message })
    return undefined
  }
}

function readPem(variable: string, file: string): Buffer {
  try {
    return readFileSync(file)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : `cannot be read (${code})`
    throw new ConfigError(`${variable} ${file}: ${reason}`)
  }
}

