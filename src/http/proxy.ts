/**
 * Proxy mode: an allowed request goes to the one service of `UPSTREAM_URL`, its body streamed
 * with backpressure, and the service's answer comes back the same way. The checks (key, scope,
 * limits) happen before, in routes.ts; this module only forwards, and reports how it went.
 */
import { Agent as HttpAgent, request as httpRequest, ServerResponse, type ClientRequest, type IncomingMessage, type Server } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { oweContinue, takeContinue } from './body.js'
import { downstreamHeaders, upstreamHeaders, type ForwardFacts } from './proxy-headers.js'
import { PROXY_REPLIES } from './routes.js'

/** Why an exchange with the service failed; each is a label of `keygate_upstream_errors_total`. */
export type UpstreamError = 'connect' | 'timeout' | 'reset_before_head' | 'reset_after_head' | 'client_aborted' | 'body_too_large'

/** How an exchange went, for the access line and the metrics. */
export interface UpstreamResult {
  /** The service's status; undefined when it never answered. */
  status?: number
  ms: number
  error?: UpstreamError
}

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

/** What the route decided about a request it lets through. */
export type ForwardDecision = Pick<ForwardFacts, 'keyId' | 'requestId' | 'dropAuthorization'>

/** What the proxy writes itself: 413, 502, 504 (the routes give it their prepared replies). */
export interface ProxyReplies {
  tooLarge(req: IncomingMessage, res: ServerResponse, requestId: string): void
  badGateway(req: IncomingMessage, res: ServerResponse, requestId: string): void
  gatewayTimeout(req: IncomingMessage, res: ServerResponse, requestId: string): void
}

export interface Proxy {
  /** Forwards an allowed request; resolves once the exchange is over (answered, failed or cut). */
  forward(req: IncomingMessage, res: ServerResponse, decision: ForwardDecision, extraHeaders: readonly string[] | undefined): Promise<UpstreamResult>
  /** The tunnels (WebSocket) open now: shutdown closes them once requests have drained. */
  readonly tunnels: Set<Duplex>
  close(): void
}

interface Upgrade {
  socket: Duplex
  head: Buffer
}
// The socket and first bytes of an `upgrade` request, set by `acceptUpgrade` for `forward` to tunnel.
const upgrades = new WeakMap<IncomingMessage, Upgrade>()

/**
 * Sends two kinds of request Node keeps from the 'request' event through `handler` too: those that
 * wait for `100 Continue` (sent once they are allowed) and upgrades (tunnelled once allowed; a
 * refusal is an ordinary answer, after which the connection closes).
 */
export function takeProxyTraffic(server: Server, handler: (req: IncomingMessage, res: ServerResponse) => void): void {
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    oweContinue(req)
    handler(req, res)
  })
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const res = new ServerResponse(req)
    res.assignSocket(socket)
    res.shouldKeepAlive = false
    res.once('finish', () => socket.destroySoon())
    upgrades.set(req, { socket, head })
    handler(req, res)
  })
}

const DEFAULT_TIMEOUT_MS = 60_000
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

export function createProxy(options: ProxyOptions, replies: ProxyReplies = PROXY_REPLIES): Proxy {
  const { upstream, timeoutMs = DEFAULT_TIMEOUT_MS, maxBodyBytes = DEFAULT_MAX_BODY_BYTES, trustProxy = 0 } = options
  const secure = upstream.protocol === 'https:'
  const agent = secure ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true })
  const send = secure ? httpsRequest : httpRequest
  const base = upstream.pathname.replace(/\/+$/, '')
  const host = upstream.hostname.replace(/^\[(.*)\]$/, '$1')
  const port = upstream.port === '' ? (secure ? 443 : 80) : Number(upstream.port)
  const tunnels = new Set<Duplex>()

  const open = (req: IncomingMessage, facts: ForwardFacts, fresh: boolean): ClientRequest =>
    send({
      host,
      port,
      method: req.method,
      path: base + (req.url ?? '/'),
      headers: upstreamHeaders(req, facts),
      setHost: false, // Host goes as the client sent it
      servername: secure ? host : undefined,
      agent: facts.tunnel || fresh ? false : agent,
    })

  return {
    tunnels,
    close: () => agent.destroy(),
    forward(req, res, decision, extraHeaders) {
      const upgrade = upgrades.get(req)
      const encrypted = (req.socket as Socket & { encrypted?: boolean }).encrypted === true
      const facts: ForwardFacts = { ...decision, trustProxy, proto: encrypted ? 'https' : 'http', tunnel: upgrade !== undefined }
      if (upgrade !== undefined) return tunnel(req, res, upgrade, facts, open(req, facts, true), { tunnels, replies })
      return exchange({ req, res, facts, extraHeaders, open, timeoutMs, maxBodyBytes, replies })
    },
  }
}

interface Exchange {
  req: IncomingMessage
  res: ServerResponse
  facts: ForwardFacts
  extraHeaders: readonly string[] | undefined
  open: (req: IncomingMessage, facts: ForwardFacts, fresh: boolean) => ClientRequest
  timeoutMs: number
  maxBodyBytes: number
  replies: ProxyReplies
}

const RETRYABLE = new Set(['GET', 'HEAD'])

/** One request and its answer, retried once on a new connection when a reused one was closed under a bodiless GET or HEAD. */
function exchange(x: Exchange): Promise<UpstreamResult> {
  const { req, res } = x
  const started = performance.now()
  if (x.maxBodyBytes > 0 && Number(req.headers['content-length']) > x.maxBodyBytes) {
    x.replies.tooLarge(req, res, x.facts.requestId)
    return Promise.resolve({ ms: 0, error: 'body_too_large' })
  }
  const bodiless = req.headers['transfer-encoding'] === undefined && (req.headers['content-length'] ?? '0') === '0'
  return new Promise((resolve) => {
    let settled = false
    let upstream: ClientRequest
    let timer: NodeJS.Timeout | undefined
    const done = (result: Omit<UpstreamResult, 'ms'>) => {
      clearTimeout(timer)
      if (settled) return
      settled = true
      resolve({ ...result, ms: performance.now() - started })
    }
    const fail = (kind: UpstreamError) => {
      if (settled) return
      upstream.destroy()
      if (res.headersSent) res.destroy() // never pass a cut answer off as whole
      else if (kind === 'timeout') x.replies.gatewayTimeout(req, res, x.facts.requestId)
      else if (kind === 'body_too_large') x.replies.tooLarge(req, res, x.facts.requestId)
      else if (kind !== 'client_aborted') x.replies.badGateway(req, res, x.facts.requestId)
      done({ error: kind })
    }
    const attempt = (fresh: boolean) => {
      upstream = x.open(req, x.facts, fresh)
      timer = setTimeout(() => fail('timeout'), x.timeoutMs)
      upstream.on('error', (error: NodeJS.ErrnoException) => {
        if (res.headersSent) return fail('reset_after_head')
        // A kept-alive connection the service closed as it was reused: nothing reached the service.
        if (!fresh && upstream.reusedSocket && bodiless && RETRYABLE.has(req.method ?? '') && error.code === 'ECONNRESET') {
          clearTimeout(timer)
          return attempt(true)
        }
        fail(CONNECT_ERRORS.has(error.code ?? '') ? 'connect' : 'reset_before_head')
      })
      upstream.on('response', (answer) => {
        clearTimeout(timer) // the deadline is for the head: a long download is fine
        relay(answer, x, fail, done)
      })
      sendBody(req, upstream, x.maxBodyBytes, () => fail('body_too_large'))
    }
    // A client that leaves takes its upstream request with it.
    res.once('close', () => res.writableFinished || fail('client_aborted'))
    // A client that waits for 100 Continue sends its body only now that the checks have passed.
    if (takeContinue(req)) res.writeContinue()
    attempt(false)
  })
}

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])

/** The service's answer back to the client, streamed; a failure after its head cuts the client's connection. */
function relay(answer: IncomingMessage, x: Exchange, fail: (kind: UpstreamError) => void, done: (result: Omit<UpstreamResult, 'ms'>) => void): void {
  x.res.writeHead(answer.statusCode ?? 502, downstreamHeaders(answer.rawHeaders, x.extraHeaders, x.facts.requestId))
  answer.on('aborted', () => fail('reset_after_head'))
  answer.on('error', () => fail('reset_after_head'))
  x.res.once('finish', () => done({ status: answer.statusCode }))
  answer.pipe(x.res)
}

/** Streams the request body to the service (`pipe` keeps backpressure), counting it against the limit. */
function sendBody(req: IncomingMessage, upstream: ClientRequest, maxBodyBytes: number, tooLarge: () => void): void {
  if (req.readableEnded) return void upstream.end()
  if (maxBodyBytes > 0) {
    let received = 0
    const count = (chunk: Buffer) => {
      received += chunk.length
      if (received <= maxBodyBytes) return
      req.off('data', count)
      req.unpipe(upstream)
      tooLarge()
    }
    req.on('data', count)
  }
  req.pipe(upstream)
}

/** An allowed upgrade: the service's 101 goes back on the raw socket, then bytes flow both ways until either side closes. */
function tunnel(
  req: IncomingMessage,
  res: ServerResponse,
  { socket, head }: Upgrade,
  facts: ForwardFacts,
  upstream: ClientRequest,
  { tunnels, replies }: { tunnels: Set<Duplex>; replies: ProxyReplies },
): Promise<UpstreamResult> {
  const started = performance.now()
  return new Promise((resolve) => {
    const finish = (result: Omit<UpstreamResult, 'ms'>) => resolve({ ...result, ms: performance.now() - started })
    upstream.on('upgrade', (answer: IncomingMessage, service: Socket, serviceHead: Buffer) => {
      const headers = downstreamHeaders(answer.rawHeaders, undefined, facts.requestId, true)
      let block = `HTTP/1.1 101 ${answer.statusMessage || 'Switching Protocols'}\r\n`
      for (let i = 0; i < headers.length; i += 2) block += `${headers[i]}: ${headers[i + 1]}\r\n`
      res.detachSocket(socket as Socket)
      socket.write(`${block}\r\n`)
      // Bytes either side sent right behind its head belong to the tunnel.
      if (serviceHead.length > 0) socket.write(serviceHead)
      if (head.length > 0) service.write(head)
      tunnels.add(socket)
      socket.pipe(service).pipe(socket)
      const close = () => {
        tunnels.delete(socket)
        socket.destroy()
        service.destroy()
      }
      socket.on('close', close).on('error', close)
      service.on('close', close).on('error', close)
      finish({ status: 101 })
    })
    upstream.on('response', (answer) => {
      // The service said no to the upgrade: its answer goes back as an ordinary one.
      res.writeHead(answer.statusCode ?? 502, downstreamHeaders(answer.rawHeaders, undefined, facts.requestId))
      answer.pipe(res)
      res.once('finish', () => finish({ status: answer.statusCode }))
    })
    upstream.on('error', () => {
      if (!res.headersSent) replies.badGateway(req, res, facts.requestId)
      finish({ error: 'connect' })
    })
    upstream.end()
  })
}
