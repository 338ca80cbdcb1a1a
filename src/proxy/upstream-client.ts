/**
 * keygate's HTTP/1.1 client towards the one service of proxy mode, over `node:net`/`node:tls`:
 * `node:http`'s client costs about twice the CPU of the rest of a proxied request (measured), so
 * the request head is written by hand and the answer parsed here, as keygate's replies are. Kept-alive
 * sockets are reused (last in, first out). Bodies stream with backpressure both ways; answers may
 * be framed by Content-Length, chunked, or the close of the connection; 1xx interim answers are
 * skipped; HEAD, 204 and 304 have none. Upgrades (WebSocket) are not for this client.
 */
import { connect as connectTcp, isIP, type Socket } from 'node:net'
import { connect as connectTls } from 'node:tls'
import type { AnswerHead } from './answer-head.js'
import { UpstreamCall, type Call, type CallConnection, type CallHandlers, type RequestFraming } from './upstream-call.js'

export interface UpstreamTarget {
  host: string
  port: number
  tls: boolean
}

export type { AnswerHead }

export function createUpstreamClient(target: UpstreamTarget) {
  const idle: Connection[] = []
  const open = (): Connection => {
    const socket = target.tls
      ? connectTls({ host: target.host, port: target.port, servername: isIP(target.host) === 0 ? target.host : undefined })
      : connectTcp({ host: target.host, port: target.port })
    socket.setNoDelay(true)
    const connection = new Connection(socket, idle, target.tls)
    if (target.tls) socket.once('secureConnect', () => (connection.handshaking = false))
    return connection
  }
  return {
    /** Sends the head at once; the body (if `bodyFraming` announces one) follows through `write` and `end`. */
    call(method: string, path: string, headers: readonly string[], bodyFraming: RequestFraming, handlers: CallHandlers, fresh = false): Call {
      const reused = fresh ? undefined : idle.pop()
      const connection = reused ?? open()
      const call = new UpstreamCall(connection, reused !== undefined, method, handlers, bodyFraming)
      connection.call = call
      return call.start(method, path, headers)
    },
    close() {
      for (const connection of idle.splice(0)) connection.socket.destroy()
    },
  }
}

/**
 * One socket to the service and the call it serves, if any. Its listeners stay for the socket's
 * life (adding and removing them per request cost more than the parse): while idle, anything the
 * socket reports (bytes, a close, an error) means the service closed it or broke the protocol.
 */
class Connection implements CallConnection {
  call: UpstreamCall | undefined

  constructor(
    readonly socket: Socket,
    private readonly idle: Connection[],
    /** A TLS connection whose handshake has not finished yet. */
    public handshaking: boolean,
  ) {
    socket.on('data', (chunk: Buffer) => (this.call === undefined ? this.drop() : this.call.onData(chunk)))
    socket.on('error', (error: NodeJS.ErrnoException) => (this.call === undefined ? this.drop() : this.call.fail(error)))
    socket.on('close', () => (this.call === undefined ? this.drop() : this.call.onClose()))
  }

  /** The call is over and the socket can carry another. */
  park(): void {
    this.call = undefined
    this.idle.push(this)
  }

  private drop(): void {
    const at = this.idle.indexOf(this)
    if (at !== -1) this.idle.splice(at, 1)
    this.socket.destroy()
  }
}

