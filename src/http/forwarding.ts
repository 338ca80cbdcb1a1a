/**
 * What the request path asks of a forwarder in proxy mode, and what it hears back. The request
 * path decides (key, scope, limits) and hands an allowed request over; the forwarder (proxy/)
 * implements this and reports how the exchange went. Types only.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

/** Why an exchange with the service failed; each is a label of `keygate_upstream_errors_total`. */
export type UpstreamError = 'connect' | 'tls' | 'timeout' | 'reset_before_head' | 'reset_after_head' | 'bad_answer' | 'client_aborted' | 'body_too_large'

/** How an exchange went, for the access line and the metrics. */
export interface UpstreamResult {
  /** The service's status; undefined when it never answered. */
  status?: number
  ms: number
  error?: UpstreamError
  /** Node's code of the failure (`ECONNREFUSED`, `DEPTH_ZERO_SELF_SIGNED_CERT`...), for the access line. */
  code?: string
}

/** What the route decided about a request it lets through. */
export interface ForwardDecision {
  /** The key's id; `undefined` for a request a public rule let through. */
  keyId: string | undefined
  requestId: string
  /** The credential was read from `Authorization`: it is the key, not the service's. */
  dropAuthorization: boolean
}

/** What the proxy writes itself: 413, 502, 504 (the routes give it their prepared replies). */
export interface ProxyReplies {
  tooLarge(req: IncomingMessage, res: ServerResponse, requestId: string): void
  badGateway(req: IncomingMessage, res: ServerResponse, requestId: string): void
  gatewayTimeout(req: IncomingMessage, res: ServerResponse, requestId: string): void
}

export interface Proxy {
  /**
   * Why the service might read this request otherwise than keygate checks it (two `Host`
   * headers, a method override naming another method), or undefined. Such a request gets 400
   * before any check.
   */
  ambiguityOf(req: IncomingMessage): 'two hosts' | 'method override' | undefined
  /** Forwards an allowed request; resolves once the exchange is over (answered, failed or cut), `undefined` when refused before any was tried (413). */
  forward(req: IncomingMessage, res: ServerResponse, decision: ForwardDecision, extraHeaders: readonly string[] | undefined): Promise<UpstreamResult | undefined>
  /** The tunnels (WebSocket) open now: shutdown closes them once requests have drained. */
  readonly tunnels: Set<Duplex>
  close(): void
}
