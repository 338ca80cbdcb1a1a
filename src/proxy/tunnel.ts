/**
 * Proxy mode's requests that Node keeps from the 'request' event: those that wait for `100
 * Continue`, and upgrades (WebSocket), which are checked like any other request, then tunnelled:
 * the service's 101 goes back on the raw socket and bytes flow both ways until either side closes.
 */
import { ServerResponse, type ClientRequest, type IncomingMessage, type Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { oweContinue } from '../http/body.js'
import { downstreamHeaders, type ForwardFacts } from './proxy-headers.js'

export interface Upgrade {
  socket: Duplex
  head: Buffer
}
// The socket and first bytes of an `upgrade` request, set by `takeProxyTraffic` for the proxy to tunnel.
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

/** The upgrade `req` asked for, when it came through Node's 'upgrade' event. */
export function upgradeOf(req: IncomingMessage): Upgrade | undefined {
  return upgrades.get(req)
}

/** How a tunnel went (the proxy's `UpstreamResult` has this shape). */
export interface TunnelResult {
  status?: number
  ms: number
  error?: 'timeout' | 'client_aborted' | 'connect'
  code?: string
}

/** The answers a tunnel writes itself (the proxy's prepared replies). */
export interface TunnelReplies {
  badGateway(req: IncomingMessage, res: ServerResponse, requestId: string): void
  gatewayTimeout(req: IncomingMessage, res: ServerResponse, requestId: string): void
}

// A client may send frames before the 101 comes; more than this before it is no client's need.
const MAX_EARLY_TUNNEL_BYTES = 64 * 1024

/** An allowed upgrade: the service's 101 goes back on the raw socket, then bytes flow both ways until either side closes. */
export function tunnel(
  req: IncomingMessage,
  res: ServerResponse,
  { socket, head }: Upgrade,
  facts: ForwardFacts,
  upstream: ClientRequest,
  { tunnels, replies, timeoutMs }: { tunnels: Set<Duplex>; replies: TunnelReplies; timeoutMs: number },
): Promise<TunnelResult> {
  const started = performance.now()
  return new Promise((resolve) => {
    let settled = false
    const finish = (result: Omit<TunnelResult, 'ms'>) => {
      clearTimeout(timer)
      socket.off('end', clientLeft).off('close', clientLeft).off('data', hold)
      if (settled) return
      settled = true
      resolve({ ...result, ms: performance.now() - started })
    }
    // No 101 (or other answer head) in time: 504, and the service's socket is freed.
    const timer = setTimeout(() => {
      upstream.destroy()
      if (!res.headersSent) replies.gatewayTimeout(req, res, facts.requestId)
      finish({ error: 'timeout' })
    }, timeoutMs)
    // A client that leaves before the answer takes its upstream request with it. The socket must
    // be read to see it leave: bytes it sends before the 101 are held for the tunnel, up to a bound.
    const clientLeft = () => {
      upstream.destroy()
      finish({ error: 'client_aborted' })
    }
    const early: Buffer[] = []
    let earlyBytes = 0
    const hold = (chunk: Buffer) => {
      early.push(chunk)
      if ((earlyBytes += chunk.length) > MAX_EARLY_TUNNEL_BYTES) socket.destroy()
    }
    socket.on('data', hold).once('end', clientLeft).once('close', clientLeft)
    upstream.on('upgrade', (answer: IncomingMessage, service: Socket, serviceHead: Buffer) => {
      if (settled) return service.destroy()
      finish({ status: 101 })
      const headers = downstreamHeaders(answer.rawHeaders, undefined, facts.requestId, true)
      let block = `HTTP/1.1 101 ${answer.statusMessage || 'Switching Protocols'}\r\n`
      for (let i = 0; i < headers.length; i += 2) block += `${headers[i]}: ${headers[i + 1]}\r\n`
      res.detachSocket(socket as Socket)
      socket.write(`${block}\r\n`)
      // Bytes either side sent right behind its head belong to the tunnel.
      if (serviceHead.length > 0) socket.write(serviceHead)
      if (head.length > 0) service.write(head)
      for (const chunk of early) service.write(chunk)
      tunnels.add(socket)
      socket.pipe(service).pipe(socket)
      const close = () => {
        tunnels.delete(socket)
        socket.destroy()
        service.destroy()
      }
      socket.on('close', close).on('error', close)
      service.on('close', close).on('error', close)
    })
    upstream.on('response', (answer) => {
      if (settled) return answer.destroy()
      clearTimeout(timer)
      // The service said no to the upgrade: its answer goes back as an ordinary one.
      res.writeHead(answer.statusCode ?? 502, downstreamHeaders(answer.rawHeaders, undefined, facts.requestId))
      answer.pipe(res)
      res.once('finish', () => finish({ status: answer.statusCode }))
    })
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (settled) return
      if (!res.headersSent) replies.badGateway(req, res, facts.requestId)
      finish({ error: 'connect', code: error.code })
    })
    upstream.end()
  })
}
