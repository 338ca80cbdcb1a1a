/**
 * The headers a proxy passes on. Hop-by-hop fields (RFC 9110 section 7.6.1: `Connection`, the
 * fields it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
 * `Upgrade`) belong to one connection and are dropped in both directions; towards the service,
 * keygate also drops the credential, any `X-Keygate-*` a client sent and any name with `_`, and
 * adds its own. The request's framing (`Content-Length`, `Transfer-Encoding`) is never the
 * client's text: the upstream client writes the framing it uses.
 */
import type { IncomingMessage } from 'node:http'
import { METHOD_OVERRIDE_HEADERS } from '../http/original-request.js'

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'])
// keygate sets these itself; a client's own would lie to the service.
const REPLACED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'expect', 'content-length'])
// Headers that name another request than the one keygate checked: path overrides some frameworks
// honour (Symfony and IIS read X-Original-URL, X-Rewrite-URL) and the forward-auth families.
const OTHER_REQUEST = new Set(['x-original-url', 'x-rewrite-url', 'x-original-uri', 'x-original-method', 'x-forwarded-uri', 'x-forwarded-method'])
// A `Connection` header may not make these hop-by-hop: the framing and the target are not the
// client's to drop (Transfer-Encoding is hop-by-hop anyway, and keygate writes its own).
const NEVER_NAMED = new Set(['content-length', 'host'])
const METHOD_OVERRIDES = new Set<string>(METHOD_OVERRIDE_HEADERS)

// What a header name is to the proxy, by bits: a name is classified once, not lower-cased per request.
const HOP = 1 // hop-by-hop (RFC 9110 section 7.6.1)
const NOT_TO_SERVICE = 2 // replaced by keygate's own, or a credential other than Authorization
const AUTHORIZATION = 4
const FORWARDED_FOR = 8
const REQUEST_ID = 16
const CONNECTION = 32
const UPGRADE = 64
const HOST = 128
const METHOD_OVERRIDE = 256

// Header names come back in the same few spellings: their classes are kept, up to a bound (a
// client making up names fills it once, then pays the lower-casing as before).
const classes = new Map<string, number>()
const MAX_CLASSIFIED = 4096
const MAX_CLASSIFIED_LENGTH = 64

function classOf(name: string): number {
  let found = classes.get(name)
  if (found !== undefined) return found
  const lower = name.toLowerCase()
  found =
    (HOP_BY_HOP.has(lower) ? HOP : 0) |
    // A name with `_` reaches CGI-style services as its `-` spelling (`X_Keygate_Key_Id`): nginx drops them too.
    (REPLACED.has(lower) || OTHER_REQUEST.has(lower) || lower.startsWith('x-keygate-') || lower === 'x-api-key' || lower.includes('_') ? NOT_TO_SERVICE : 0) |
    (lower === 'authorization' ? AUTHORIZATION : 0) |
    (lower === 'x-forwarded-for' ? FORWARDED_FOR : 0) |
    (lower === 'x-request-id' ? REQUEST_ID : 0) |
    (lower === 'connection' ? CONNECTION : 0) |
    (lower === 'upgrade' ? UPGRADE : 0) |
    (lower === 'host' ? HOST : 0) |
    (METHOD_OVERRIDES.has(lower) ? METHOD_OVERRIDE : 0)
  if (classes.size < MAX_CLASSIFIED && name.length <= MAX_CLASSIFIED_LENGTH) classes.set(name, found)
  return found
}

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

/** The names a `Connection` header lists, lower case (`close`, `upgrade` and the fields to drop); undefined without one. */
function connectionOptions(raw: readonly string[]): Set<string> | undefined {
  let named: Set<string> | undefined
  for (let i = 0; i < raw.length; i += 2) {
    if ((classOf(raw[i] as string) & CONNECTION) === 0) continue
    named ??= new Set()
    for (const option of (raw[i + 1] as string).split(',')) {
      const lower = option.trim().toLowerCase()
      if (!NEVER_NAMED.has(lower)) named.add(lower)
    }
  }
  return named
}

/**
 * Why the service might read this request otherwise than keygate checked it, or `undefined`:
 * two `Host` headers (keygate and the service could each take another), or a method-override
 * header naming another method (scopes are matched on the method keygate sees).
 */
export function ambiguityOf(req: IncomingMessage): 'two hosts' | 'method override' | undefined {
  const raw = req.rawHeaders
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const kind = classOf(raw[i] as string)
    if ((kind & HOST) !== 0 && ++hosts > 1) return 'two hosts'
    if ((kind & METHOD_OVERRIDE) !== 0 && (raw[i + 1] as string).toUpperCase() !== req.method) return 'method override'
  }
  return undefined
}

/** Hop-by-hop: by RFC 9110's list, or named in `Connection`. */
function droppedBetweenHops(name: string, kind: number, named: Set<string> | undefined): boolean {
  return (kind & HOP) !== 0 || (named !== undefined && named.has(name.toLowerCase()))
}

/** The request's headers for the service, as a flat `[name, value, ...]` list in the client's order and case. */
export function upstreamHeaders(req: IncomingMessage, facts: ForwardFacts): string[] {
  const raw = req.rawHeaders
  const named = connectionOptions(raw)
  const out: string[] = []
  let forwardedFor: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const kind = classOf(name)
    if ((kind & FORWARDED_FOR) !== 0) forwardedFor = forwardedFor === undefined ? (raw[i + 1] as string) : `${forwardedFor}, ${raw[i + 1] as string}`
    if ((kind & NOT_TO_SERVICE) !== 0 || droppedBetweenHops(name, kind, named)) continue
    if ((kind & AUTHORIZATION) !== 0 && facts.dropAuthorization) continue
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
    const kind = classOf(name)
    if (droppedBetweenHops(name, kind, named) && !(tunnel && (kind & (CONNECTION | UPGRADE)) !== 0)) continue
    if ((kind & REQUEST_ID) !== 0) hasRequestId = true
    out.push(name, raw[i + 1] as string)
  }
  if (extra !== undefined) out.push(...extra)
  if (!hasRequestId) out.push('X-Request-Id', requestId)
  return out
}
