/**
 * Proxy mode: an allowed request goes to the one service of `UPSTREAM_URL`, its body streamed
 * with backpressure, and the service's answer comes back the same way. The checks (key, scope,
 * limits) happen before, in routes.ts; this module only forwards, and reports how it went.
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { takeContinue } from '../http/body.js'
import { endWith } from '../http/respond.js'
import { ambiguityOf, downstreamHeaders, upstreamHeaders, type ForwardFacts } from './proxy-headers.js'
import type { Proxy, ProxyReplies, UpstreamError, UpstreamResult } from '../http/forwarding.js'
import { PROXY_REPLIES } from '../http/replies.js'
import { tunnel, upgradeOf } from './tunnel.js'
import type { Call, RequestFraming } from './upstream-call.js'
import { createUpstreamClient } from './upstream-client.js'

export interface ProxyOptions {
  /** `UPSTREAM_URL`: http or https, host, port and an optional base path. */
  upstream: URL
  /** No answer head within this time: 504 (`UPSTREAM_TIMEOUT_MS`, default 60000). */
  timeoutMs?: number
  /** Request bodies above this get 413; 0: no limit (`MAX_BODY_BYTES`, default 1 MiB). */
  maxBodyBytes?: number
  /** `TRUST_PROXY`: how much of the client's `X-Forwarded-For` the service is told. */
  trustProxy?: number
}

const DEFAULT_TIMEOUT_MS = 60_000
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

export function createProxy(options: ProxyOptions, replies: ProxyReplies = PROXY_REPLIES): Proxy {
  const { upstream, timeoutMs = DEFAULT_TIMEOUT_MS, maxBodyBytes = DEFAULT_MAX_BODY_BYTES, trustProxy = 0 } = options
  const secure = upstream.protocol === 'https:'
  const send = secure ? httpsRequest : httpRequest
  const base = upstream.pathname.replace(/\/+$/, '')
  const host = upstream.hostname.replace(/^\[(.*)\]$/, '$1')
  const port = upstream.port === '' ? (secure ? 443 : 80) : Number(upstream.port)
  const tunnels = new Set<Duplex>()

  const client = createUpstreamClient({ host, port, tls: secure })
  // Upgrades (WebSocket) go through node:http's client, each on a connection of its own.
  const open = (req: IncomingMessage, facts: ForwardFacts): ClientRequest =>
    send({
      host,
      port,
      method: req.method,
      path: base + (req.url ?? '/'),
      headers: upstreamHeaders(req, facts),
      setHost: false, // Host goes as the client sent it
      servername: secure ? host : undefined,
      agent: false,
    })

  return {
    tunnels,
    ambiguityOf,
    close: () => client.close(),
    forward(req, res, decision, extraHeaders) {
      const upgrade = upgradeOf(req)
      const encrypted = (req.socket as Socket & { encrypted?: boolean }).encrypted === true
      const facts: ForwardFacts = {
        keyId: decision.keyId,
        requestId: decision.requestId,
        dropAuthorization: decision.dropAuthorization,
        trustProxy,
        proto: encrypted ? 'https' : 'http',
        tunnel: upgrade !== undefined,
      }
      if (upgrade !== undefined) return tunnel(req, res, upgrade, facts, open(req, facts), { tunnels, replies, timeoutMs })
      return exchange({ req, res, facts, extraHeaders, client, path: base + (req.url ?? '/'), timeoutMs, maxBodyBytes, replies })
    },
  }
}

interface Exchange {
  req: IncomingMessage
  res: ServerResponse
  facts: ForwardFacts
  extraHeaders: readonly string[] | undefined
  client: UpstreamClient
  path: string
  timeoutMs: number
  maxBodyBytes: number
  replies: ProxyReplies
}

type UpstreamClient = ReturnType<typeof createUpstreamClient>
const RETRYABLE = new Set(['GET', 'HEAD'])
// The service closed a kept-alive connection as it was reused: nothing reached it.
const CLOSED_UNDER_US = new Set(['ECONNRESET', 'EPIPE'])
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])

/** What a failure before the answer's head was: a refused connection, a certificate, a reset, a broken answer. */
function errorKind(code: string, tlsFailure: boolean): UpstreamError {
  if (CONNECT_ERRORS.has(code)) return 'connect'
  if (tlsFailure) return 'tls'
  return code.startsWith('HPE_') ? 'bad_answer' : 'reset_before_head'
}

/**
 * The framing keygate writes for the body it streams: Node's parser read the client's framing
 * (and refused a request with both or a bad one); the client's own header text never goes on.
 */
function requestFraming(req: IncomingMessage): RequestFraming {
  if (req.headers['transfer-encoding'] !== undefined) return 'chunked'
  const length = req.headers['content-length']
  return length === undefined ? undefined : Number(length)
}

/** One request and its answer, retried once on a new connection when a reused one was closed under a bodiless GET or HEAD. */
function exchange(x: Exchange): Promise<UpstreamResult | undefined> {
  const { req, res } = x
  const started = performance.now()
  if (x.maxBodyBytes > 0 && Number(req.headers['content-length']) > x.maxBodyBytes) {
    // The client's refusal, decided before any connection: no exchange with the service to report.
    x.replies.tooLarge(req, res, x.facts.requestId)
    return Promise.resolve(undefined)
  }
  const framing = requestFraming(req)
  const hasBody = framing === 'chunked' || (framing ?? 0) > 0
  const headers = upstreamHeaders(req, x.facts)
  return new Promise((resolve) => {
    let settled = false
    let upstream: Call
    let timer: NodeJS.Timeout | undefined
    const done = (status: number | undefined, error: UpstreamError | undefined, code?: string) => {
      clearTimeout(timer)
      if (settled) return
      settled = true
      resolve({ status, ms: performance.now() - started, error, code })
    }
    const fail = (kind: UpstreamError, code?: string) => {
      if (settled) return
      upstream.abort()
      if (res.headersSent) res.destroy() // never pass a cut answer off as whole
      else if (kind === 'timeout') x.replies.gatewayTimeout(req, res, x.facts.requestId)
      else if (kind === 'body_too_large') x.replies.tooLarge(req, res, x.facts.requestId)
      else if (kind !== 'client_aborted') x.replies.badGateway(req, res, x.facts.requestId)
      done(undefined, kind, code)
    }
    const attempt = (fresh: boolean) => {
      let status = 0
      upstream = x.client.call(req.method ?? 'GET', x.path, headers, framing, {
        onHead(head) {
          clearTimeout(timer) // the deadline is for the head: a long download is fine
          status = head.status
          try {
            res.writeHead(head.status, downstreamHeaders(head.rawHeaders, x.extraHeaders, x.facts.requestId))
          } catch {
            // A header Node will not send on (a control character, a bad name). writeHead kept the
            // service's status text; the 502 must not go out as "502 OK".
            res.statusMessage = ''
            fail('bad_answer')
          }
        },
        onBody(chunk) {
          if (res.write(chunk)) return true
          res.once('drain', () => upstream.resume())
          return false
        },
        onEnd(last) {
          const ended = () => done(status, undefined)
          if (last === undefined) res.end(ended)
          else endWith(res, last, ended)
        },
        onError(error, afterHead) {
          if (afterHead || res.headersSent) return fail('reset_after_head', error.code)
          if (!fresh && upstream.reused && !hasBody && RETRYABLE.has(req.method ?? '') && CLOSED_UNDER_US.has(error.code ?? '')) {
            clearTimeout(timer)
            return attempt(true)
          }
          fail(errorKind(error.code ?? '', upstream.tlsFailed), error.code)
        },
      }, fresh)
      timer = setTimeout(() => fail('timeout'), x.timeoutMs)
    }
    // A client that leaves takes its upstream request with it.
    res.once('close', () => res.writableFinished || fail('client_aborted'))
    // A client that waits for 100 Continue sends its body only now that the checks have passed.
    if (takeContinue(req)) res.writeContinue()
    attempt(false)
    if (hasBody) sendBody(req, () => upstream, x.maxBodyBytes, () => settled, () => fail('body_too_large'))
  })
}

/**
 * Streams the request body to the service with backpressure, counting it against the limit to
 * its last byte: after an early answer the rest is read and dropped (the connection's next
 * request starts behind it), and a body past the limit then cuts the client's connection.
 */
function sendBody(req: IncomingMessage, upstream: () => Call, maxBodyBytes: number, over: () => boolean, tooLarge: () => void): void {
  let received = 0
  const onData = (chunk: Buffer) => {
    received += chunk.length
    if (maxBodyBytes > 0 && received > maxBodyBytes) {
      req.off('data', onData)
      if (over()) req.socket.destroy()
      else tooLarge()
      return
    }
    if (over() || upstream().write(chunk)) return
    req.pause()
    upstream().onDrain(() => req.resume())
  }
  req.on('data', onData)
  req.on('end', () => over() || upstream().end())
}
