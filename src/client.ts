/** The client's address: the socket peer, or an `X-Forwarded-For` entry set by a trusted proxy. */
import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'

/**
 * With `trustProxy` 0 the socket peer, ignoring `X-Forwarded-For`; with N, the N-th entry of
 * `X-Forwarded-For` from the right (each trusted proxy appends the address it saw).
 * A header with fewer entries, or an entry that is not an IP address, falls back to the peer.
 */
export function clientAddressOf(req: IncomingMessage, trustProxy: number): string {
  const peer = req.socket.remoteAddress ?? ''
  if (trustProxy === 0) return peer
  const header = req.headers['x-forwarded-for']
  if (typeof header !== 'string') return peer
  const entries = header.split(',')
  const candidate = entries[entries.length - trustProxy]?.trim()
  return candidate !== undefined && isIP(candidate) !== 0 ? candidate : peer
}
