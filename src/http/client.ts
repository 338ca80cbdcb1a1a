/** The client's address: the socket peer, or an `X-Forwarded-For` entry set by a trusted proxy. */
import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'

// The longest IPv6 text form (with an embedded IPv4) is 45 characters; anything longer is no address.
const MAX_ADDRESS_LENGTH = 45
const IPV4_MAPPED_HEX = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/

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

/**
 * The address as a new, short string (never a slice that keeps a 12 KB header alive): IPv4 as
 * dotted decimal, IPv4-mapped IPv6 in any spelling as IPv4, other IPv6 in its canonical lowercase
 * form, zone ids (`%eth0`) dropped. `undefined` when `text` is no IP address.
 */
export function normalizeAddress(text: string): string | undefined {
  const zone = text.indexOf('%')
  const address = zone === -1 ? text : text.slice(0, zone)
  if (address.length > MAX_ADDRESS_LENGTH) return undefined
  const family = isIP(address)
  if (family === 4) return address.split('.').map(Number).join('.')
  if (family !== 6) return undefined
  // The URL parser prints IPv6 canonically (RFC 5952), IPv4-mapped ones as hex groups.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1)
  const mapped = IPV4_MAPPED_HEX.exec(canonical)
  if (mapped === null) return canonical
  const high = parseInt(mapped[1] as string, 16)
  const low = parseInt(mapped[2] as string, 16)
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
}
