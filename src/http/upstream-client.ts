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
import { parseAnswerHead, type AnswerHead, type Framing } from './answer-head.js'

export interface UpstreamTarget {
  host: string
  port: number
  tls: boolean
}

export type { AnswerHead }

export interface CallHandlers {
  onHead(head: AnswerHead): void
  /** A piece of the body; false asks the client to pause until `resume()`. */
  onBody(chunk: Buffer): boolean
  /** The answer is whole; `last` is its final piece of body when that came with the end (not given to `onBody`). */
  onEnd(last?: Buffer): void
  /** The connection failed; `afterHead` once the head was delivered. */
  onError(error: NodeJS.ErrnoException, afterHead: boolean): void
}

export interface Call {
  /** The socket had served an earlier request: a failure before any answer may mean the service closed it. */
  readonly reused: boolean
  write(chunk: Buffer): boolean
  end(): void
  resume(): void
  /** Drops the call; its socket is destroyed, never reused. */
  abort(): void
  onDrain(listener: () => void): void
}

const MAX_HEAD_BYTES = 64 * 1024
const CRLF = '\r\n'

/** The service broke HTTP/1.1, or the connection ended under a call; `code` as Node's own errors have. */
export class UpstreamProtocolError extends Error {
  constructor(message: string, readonly code: string) {
    super(message)
  }
}

export function createUpstreamClient(target: UpstreamTarget) {
  const idle: Connection[] = []
  const open = (): Connection => {
    const socket = target.tls
      ? connectTls({ host: target.host, port: target.port, servername: isIP(target.host) === 0 ? target.host : undefined })
      : connectTcp({ host: target.host, port: target.port })
    socket.setNoDelay(true)
    return new Connection(socket, idle)
  }
  return {
    /** Sends the head at once; the body (if `bodyFraming` is not 'none') follows through `write` and `end`. */
    call(method: string, path: string, headers: readonly string[], bodyFraming: 'none' | 'length' | 'chunked', handlers: CallHandlers, fresh = false): Call {
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
class Connection {
  call: UpstreamCall | undefined

  constructor(
    readonly socket: Socket,
    private readonly idle: Connection[],
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

class UpstreamCall implements Call {
  private buffer: Buffer | undefined
  private head: AnswerHead | undefined
  private framing: Framing = { kind: 'none' }
  private reusable = true
  private requestDone = false
  private answerDone = false
  private finished = false
  private chunkLeft = -1 // chunked: bytes of the current chunk still to come; -1 while reading a size line
  private trailers = false

  private readonly socket: Socket

  constructor(
    private readonly connection: Connection,
    readonly reused: boolean,
    private readonly method: string,
    private readonly handlers: CallHandlers,
    private readonly bodyFraming: 'none' | 'length' | 'chunked',
  ) {
    this.socket = connection.socket
  }

  start(method: string, path: string, headers: readonly string[]): this {
    let head = `${method} ${path} HTTP/1.1${CRLF}`
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}${CRLF}`
    if (this.bodyFraming === 'chunked') head += `Transfer-Encoding: chunked${CRLF}`
    this.socket.write(head + CRLF, 'latin1')
    if (this.bodyFraming === 'none') this.requestDone = true
    return this
  }

  write(chunk: Buffer): boolean {
    if (this.bodyFraming !== 'chunked') return this.socket.write(chunk)
    if (chunk.length === 0) return true
    // All three pieces, always: a `false` from write only asks the caller to wait before the next chunk.
    this.socket.write(`${chunk.length.toString(16)}${CRLF}`)
    this.socket.write(chunk)
    return this.socket.write(CRLF)
  }

  end(): void {
    if (this.bodyFraming === 'chunked') this.socket.write(`0${CRLF}${CRLF}`)
    this.requestDone = true
    if (this.answerDone) this.release()
  }

  resume(): void {
    this.socket.resume()
  }

  onDrain(listener: () => void): void {
    this.socket.once('drain', listener)
  }

  abort(): void {
    this.finished = true
    this.socket.destroy()
  }

  /** The socket closed: the end of an answer framed by the close, otherwise a failure. */
  onClose(): void {
    if (this.framing.kind === 'close' && this.head !== undefined) this.complete()
    else this.fail(new UpstreamProtocolError('socket hang up', 'ECONNRESET'))
  }

  onData(chunk: Buffer): void {
    if (this.finished) return
    let data = this.buffer === undefined ? chunk : Buffer.concat([this.buffer, chunk])
    this.buffer = undefined
    while (data.length > 0 && !this.answerDone && !this.finished) {
      if (this.head === undefined) {
        const end = data.indexOf('\r\n\r\n')
        if (end > MAX_HEAD_BYTES || (end === -1 && data.length > MAX_HEAD_BYTES)) return this.fail(new UpstreamProtocolError('answer head too large', 'HPE_HEADER_OVERFLOW'))
        if (end === -1) {
          this.buffer = data
          return
        }
        const parsed = this.parseHead(data.toString('latin1', 0, end))
        data = data.subarray(end + 4)
        if (parsed === 'interim') continue
        if (parsed === 'bad') return this.fail(new UpstreamProtocolError('malformed answer head', 'HPE_INVALID'))
        if (this.framing.kind === 'none' || (this.framing.kind === 'length' && this.framing.left === 0)) this.complete()
        continue
      }
      data = this.body(data)
    }
    // Bytes after a whole answer: the service broke the protocol; the socket is not reused.
    if (data.length > 0 && this.answerDone) this.reusable = false
  }

  /** The status line and headers; decides how the body is framed. */
  private parseHead(text: string): 'interim' | 'bad' | 'ok' {
    const parsed = parseAnswerHead(text, this.method)
    if (typeof parsed === 'string') return parsed
    this.framing = parsed.framing
    this.reusable = parsed.reusable
    this.head = { status: parsed.status, rawHeaders: parsed.rawHeaders }
    this.handlers.onHead(this.head)
    return 'ok'
  }

  /** Delivers what of `data` belongs to the body; returns the rest. */
  private body(data: Buffer): Buffer {
    const framing = this.framing
    if (framing.kind === 'close') {
      this.deliver(data)
      return data.subarray(data.length)
    }
    if (framing.kind === 'length') {
      const piece = data.subarray(0, framing.left)
      framing.left -= piece.length
      // The last piece goes with the end, so that the proxy can send it with the head in one write.
      if (framing.left === 0) this.complete(piece)
      else this.deliver(piece)
      return data.subarray(piece.length)
    }
    return this.chunk(data)
  }

  /** Chunked transfer coding (RFC 9112 section 7.1): size lines, data, CRLF, a last chunk, trailers. */
  private chunk(data: Buffer): Buffer {
    if (this.chunkLeft === -1) {
      const end = data.indexOf(CRLF)
      if (end === -1) {
        this.buffer = data
        return data.subarray(data.length)
      }
      const line = data.toString('latin1', 0, end)
      if (this.trailers) {
        if (line === '') this.complete()
        return data.subarray(end + 2)
      }
      const size = parseInt(line.split(';', 1)[0] ?? '', 16)
      if (!/^[0-9a-fA-F]+/.test(line) || !Number.isSafeInteger(size)) {
        this.fail(new UpstreamProtocolError('malformed chunk', 'HPE_INVALID_CHUNK_SIZE'))
        return data.subarray(data.length)
      }
      if (size === 0) this.trailers = true
      else this.chunkLeft = size + 2 // the data and its CRLF
      return data.subarray(end + 2)
    }
    const take = Math.min(this.chunkLeft, data.length)
    const dataBytes = Math.max(0, Math.min(take, this.chunkLeft - 2))
    if (dataBytes > 0) this.deliver(data.subarray(0, dataBytes))
    this.chunkLeft -= take
    if (this.chunkLeft === 0) this.chunkLeft = -1
    return data.subarray(take)
  }

  private deliver(piece: Buffer): void {
    if (piece.length > 0 && !this.finished && !this.handlers.onBody(piece)) this.socket.pause()
  }

  private complete(last?: Buffer): void {
    if (this.answerDone) return
    this.answerDone = true
    // An answer before the whole request body: the rest of it must not reach the service as a next request.
    if (!this.requestDone) this.reusable = false
    this.handlers.onEnd(last !== undefined && last.length > 0 ? last : undefined)
    if (this.requestDone) this.release()
  }

  /** Both messages are whole: the socket goes back to the pool, or is closed. */
  private release(): void {
    if (this.finished) return
    this.finished = true
    this.socket.removeAllListeners('drain')
    if (this.reusable && !this.socket.destroyed && this.buffer === undefined) {
      this.socket.resume()
      this.connection.park()
    } else this.socket.destroy()
  }

  fail(error: NodeJS.ErrnoException): void {
    if (this.finished) return
    this.finished = true
    this.socket.destroy()
    this.handlers.onError(error, this.head !== undefined)
  }
}
