/** The client's address: the socket peer, or an `X-Forwarded-For` entry set by a trusted proxy. */
import type { IncomingMessage } from 'node:http'
import { normalizeAddress } from '../keys/address-set.js'

/**
 * With `trustProxy` 0 the socket peer, ignoring `X-Forwarded-For`; with N, the N-th entry of
 * `X-Forwarded-For` from the right (each trusted proxy appends the address it saw).
 * A header with fewer entries, or an entry that is not an IP address, falls back to the peer.
 * Either way the address is normalised (see `normalizeAddress`).
 */
export function clientAddressOf(req: IncomingMessage, trustProxy: number): string {
  const peer = req.socket.remoteAddress ?? ''
  // The usual case, an IPv4 peer, is already in normal form.
  const normalPeer = peer.includes(':') ? (normalizeAddress(peer) ?? peer) : peer
  if (trustProxy === 0) return normalPeer
  const header = req.headers['x-forwarded-for']
  if (typeof header !== 'string') return normalPeer
  const entries = header.split(',')
  const candidate = entries[entries.length - trustProxy]
  return (candidate !== undefined && normalizeAddress(candidate.trim())) || normalPeer
}
