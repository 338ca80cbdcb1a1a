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
import { hasBareLineFeed, isChunkSizeLine, isTrailerLine, parseAnswerHead, type AnswerHead, type Framing } from './answer-head.js'

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

/**
 * How the request body is framed on the way to the service: chunked, or its length in bytes
 * (the `Content-Length` keygate writes), or `undefined` for no body and no `Content-Length`.
 */
export type RequestFraming = number | 'chunked' | undefined

export interface Call {
  /** The socket had served an earlier request: a failure before any answer may mean the service closed it. */
  readonly reused: boolean
  /** The connection failed in its TLS handshake (an untrusted certificate, a name mismatch). */
  readonly tlsFailed: boolean
  write(chunk: Buffer): boolean
  end(): void
  resume(): void
  /** Drops the call; its socket is destroyed, never reused. */
  abort(): void
  onDrain(listener: () => void): void
}

const MAX_HEAD_BYTES = 64 * 1024
// A chunk-size or trailer line longer than this is no honest service's (llhttp bounds them too).
const MAX_LINE_BYTES = 8 * 1024
const CRLF = '\r\n'
const CR = 13
const LF = 10
const EMPTY = Buffer.alloc(0)
// Chunked body states besides "bytes of chunk data still to come" (a positive count).
const SIZE_LINE = -1
const AFTER_DATA = -2 // the CRLF that must end each chunk's data

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
class Connection {
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

class UpstreamCall implements Call {
  private buffer: Buffer | undefined
  private head: AnswerHead | undefined
  private framing: Framing = { kind: 'none' }
  private reusable = true
  private requestDone = false
  private answerDone = false
  private finished = false
  private chunkLeft = SIZE_LINE // chunked: bytes of the current chunk's data still to come, or a state
  private trailers = false
  private drainListener: (() => void) | undefined

  private readonly socket: Socket

  constructor(
    private readonly connection: Connection,
    readonly reused: boolean,
    private readonly method: string,
    private readonly handlers: CallHandlers,
    private readonly bodyFraming: RequestFraming,
  ) {
    this.socket = connection.socket
  }

  /** Writes the head, with the framing this call will use (whatever `headers` hold, they hold no framing). */
  get tlsFailed(): boolean {
    return this.connection.handshaking
  }

  start(method: string, path: string, headers: readonly string[]): this {
    let head = `${method} ${path} HTTP/1.1${CRLF}`
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}${CRLF}`
    if (this.bodyFraming === 'chunked') head += `Transfer-Encoding: chunked${CRLF}`
    else if (this.bodyFraming !== undefined) head += `Content-Length: ${this.bodyFraming}${CRLF}`
    this.socket.write(head + CRLF, 'latin1')
    if (this.bodyFraming === undefined || this.bodyFraming === 0) this.requestDone = true
    return this
  }

  /** A piece of the request body; once the call is over (an early answer), pieces are dropped. */
  write(chunk: Buffer): boolean {
    if (this.finished) return true
    if (this.bodyFraming !== 'chunked') return this.socket.write(chunk)
    if (chunk.length === 0) return true
    // All three pieces, always: a `false` from write only asks the caller to wait before the next chunk.
    this.socket.write(`${chunk.length.toString(16)}${CRLF}`)
    this.socket.write(chunk)
    return this.socket.write(CRLF)
  }

  end(): void {
    if (this.finished) return
    if (this.bodyFraming === 'chunked') this.socket.write(`0${CRLF}${CRLF}`)
    this.requestDone = true
    if (this.answerDone) this.release()
  }

  resume(): void {
    this.socket.resume()
  }

  onDrain(listener: () => void): void {
    if (this.finished) return listener()
    this.drainListener = listener
    this.socket.once('drain', () => this.drained())
  }

  private drained(): void {
    const listener = this.drainListener
    this.drainListener = undefined
    listener?.()
  }

  abort(): void {
    this.finished = true
    this.socket.destroy()
  }

  /** The socket closed: the end of an answer framed by the close, otherwise a failure. */
  onClose(): void {
    if (this.finished) return
    if (this.framing.kind === 'close' && this.head !== undefined) {
      this.complete()
      this.release()
    } else this.fail(new UpstreamProtocolError('socket hang up', 'ECONNRESET'))
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
          // A bare LF can never become part of a valid head: refuse now instead of waiting for more.
          if (hasBareLineFeed(data)) return this.fail(new UpstreamProtocolError('bare LF in the answer head', 'HPE_CR_EXPECTED'))
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
    if (!this.answerDone || this.finished) return
    // Bytes after a whole answer: the service broke the protocol, and they must never be read as the next answer.
    if (data.length > 0 || this.buffer !== undefined) this.reusable = false
    if (this.requestDone) this.release()
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

  /**
   * Chunked transfer coding (RFC 9112 section 7.1): size lines, data, CRLF, a last chunk, trailers;
   * as strict as llhttp (no `0x`, no junk or space after the size, a CRLF after each chunk's data).
   */
  private chunk(data: Buffer): Buffer {
    if (this.chunkLeft === AFTER_DATA) {
      if (data.length < 2) return this.keep(data)
      if (data[0] !== CR || data[1] !== LF) return this.refuseChunk('chunk data not followed by CRLF')
      this.chunkLeft = SIZE_LINE
      return data.subarray(2)
    }
    if (this.chunkLeft === SIZE_LINE) return this.chunkLine(data)
    const take = Math.min(this.chunkLeft, data.length)
    this.deliver(data.subarray(0, take))
    this.chunkLeft -= take
    if (this.chunkLeft === 0) this.chunkLeft = AFTER_DATA
    return data.subarray(take)
  }

  /** A chunk-size line, or a trailer line after the last chunk. */
  private chunkLine(data: Buffer): Buffer {
    const end = data.indexOf(CRLF)
    if (end === -1) {
      if (data.length > MAX_LINE_BYTES || data.includes(LF)) return this.refuseChunk('bad chunk line')
      return this.keep(data)
    }
    const line = data.toString('latin1', 0, end)
    if (this.trailers) {
      if (line === '') this.complete()
      else if (!isTrailerLine(line)) return this.refuseChunk('bad trailer line')
      return data.subarray(end + 2)
    }
    const size = isChunkSizeLine(line) ? parseInt(line, 16) : NaN
    if (!Number.isSafeInteger(size)) return this.refuseChunk('bad chunk size')
    if (size === 0) this.trailers = true
    else this.chunkLeft = size
    return data.subarray(end + 2)
  }

  /** Holds an incomplete line until more bytes come. */
  private keep(data: Buffer): Buffer {
    this.buffer = data
    return EMPTY
  }

  private refuseChunk(message: string): Buffer {
    this.fail(new UpstreamProtocolError(message, 'HPE_INVALID_CHUNK_SIZE'))
    return EMPTY
  }

  private deliver(piece: Buffer): void {
    if (piece.length > 0 && !this.finished && !this.handlers.onBody(piece)) this.socket.pause()
  }

  /** The answer is whole. The socket is released by the caller, once it has seen what bytes follow. */
  private complete(last?: Buffer): void {
    if (this.answerDone) return
    this.answerDone = true
    this.handlers.onEnd(last !== undefined && last.length > 0 ? last : undefined)
    // An answer before the whole request body: the rest of the body goes nowhere, the socket is closed.
    if (!this.requestDone) this.release()
  }

  /** The call is over: the socket goes back to the pool when both messages ended exactly, or is closed. */
  private release(): void {
    if (this.finished) return
    this.finished = true
    this.socket.removeAllListeners('drain')
    if (this.requestDone && this.reusable && !this.socket.destroyed && this.buffer === undefined) {
      this.socket.resume()
      this.connection.park()
    } else this.socket.destroy()
    this.drained() // a request body waiting for room goes on (and is dropped)
  }

  fail(error: NodeJS.ErrnoException): void {
    if (this.finished) return
    this.finished = true
    this.socket.destroy()
    this.handlers.onError(error, this.head !== undefined)
    this.drained()
  }
}
