/**
 * The headers a proxy passes on. Hop-by-hop fields (RFC 9110 section 7.6.1: `Connection`, the
 * fields it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
 * `Upgrade`) belong to one connection and are dropped in both directions; towards the service,
 * keygate also drops the credential and any `X-Keygate-*` a client sent, and adds its own.
 */
import type { IncomingMessage } from 'node:http'

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'])
// keygate sets these itself; a client's own would lie to the service.
const REPLACED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'expect'])

/** What keygate knows of the request when it forwards it. */
export interface ForwardFacts {
  /** The key's id; `undefined` for a request a public rule let through. */
  keyId: string | undefined
  requestId: string
  /** The credential was read from `Authorization`: it is the key, not the service's. */
  dropAuthorization: boolean
  trustProxy: number
  /** `https` when the client reached keygate over TLS. */
  proto: 'http' | 'https'
  /** A WebSocket (or other) upgrade: `Connection: upgrade` and `Upgrade` pass. */
  tunnel: boolean
}

/** The names a `Connection` header lists, lower case (`close`, `upgrade` and the fields to drop). */
function connectionOptions(raw: readonly string[]): Set<string> {
  const named = new Set<string>()
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== 'connection') continue
    for (const option of (raw[i + 1] as string).split(',')) named.add(option.trim().toLowerCase())
  }
  return named
}

function droppedBetweenHops(name: string, named: Set<string>): boolean {
  return HOP_BY_HOP.has(name) || named.has(name)
}

/** The request's headers for the service, as a flat `[name, value, ...]` list in the client's order and case. */
export function upstreamHeaders(req: IncomingMessage, facts: ForwardFacts): string[] {
  const raw = req.rawHeaders
  const named = connectionOptions(raw)
  const out: string[] = []
  let forwardedFor: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const lower = name.toLowerCase()
    if (lower === 'x-forwarded-for') forwardedFor = forwardedFor === undefined ? (raw[i + 1] as string) : `${forwardedFor}, ${raw[i + 1] as string}`
    if (droppedBetweenHops(lower, named) || REPLACED.has(lower) || lower.startsWith('x-keygate-') || lower === 'x-api-key') continue
    if (lower === 'authorization' && facts.dropAuthorization) continue
    out.push(name, raw[i + 1] as string)
  }
  if (facts.tunnel) out.push('Connection', 'upgrade', 'Upgrade', String(req.headers.upgrade))
  if (facts.keyId !== undefined) out.push('X-Keygate-Key-Id', facts.keyId)
  out.push('X-Request-Id', facts.requestId, 'X-Forwarded-For', forwardedChain(forwardedFor, facts.trustProxy, req.socket.remoteAddress ?? ''))
  out.push('X-Forwarded-Proto', facts.proto)
  if (req.headers.host !== undefined) out.push('X-Forwarded-Host', req.headers.host)
  return out
}

/** The entries the `TRUST_PROXY` hops added (the last N), then the peer: what the service may believe. */
function forwardedChain(header: string | undefined, trustProxy: number, peer: string): string {
  const address = peer.startsWith('::ffff:') && peer.includes('.') ? peer.slice(7) : peer
  if (trustProxy === 0 || header === undefined) return address
  const trusted = header.split(',').map((entry) => entry.trim()).filter(Boolean).slice(-trustProxy)
  return [...trusted, address].join(', ')
}

/** The service's response headers for the client, less hop-by-hop, plus `extra` (the RateLimit headers) and `X-Request-Id` when missing. */
export function downstreamHeaders(raw: readonly string[], extra: readonly string[] | undefined, requestId: string, tunnel = false): string[] {
  const named = connectionOptions(raw)
  const out: string[] = []
  let hasRequestId = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const lower = name.toLowerCase()
    if (droppedBetweenHops(lower, named) && !(tunnel && (lower === 'connection' || lower === 'upgrade'))) continue
    if (lower === 'x-request-id') hasRequestId = true
    out.push(name, raw[i + 1] as string)
  }
  if (extra !== undefined) out.push(...extra)
  if (!hasRequestId) out.push('X-Request-Id', requestId)
  return out
}
