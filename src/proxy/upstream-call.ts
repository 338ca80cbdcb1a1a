/**
 * One exchange with the service on one connection: the request head written by hand, its body
 * framed by keygate (chunked or the length it announced), and the answer parsed as strictly as
 * llhttp (answer-head.ts, chunked-body.ts) and delivered with backpressure.
 */
import type { Socket } from 'node:net'
import { hasBareLineFeed, parseAnswerHead, type AnswerHead, type Framing } from './answer-head.js'
import { ChunkedBody, type ChunkSink } from './chunked-body.js'

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

/** The connection a call runs on (upstream-client.ts): its socket, and the pool it goes back to. */
export interface CallConnection {
  readonly socket: Socket
  /** A TLS connection whose handshake has not finished yet. */
  readonly handshaking: boolean
  /** The call is over and the socket can carry another. */
  park(): void
}

const MAX_HEAD_BYTES = 64 * 1024
const CRLF = '\r\n'
const EMPTY = Buffer.alloc(0)

/** The service broke HTTP/1.1, or the connection ended under a call; `code` as Node's own errors have. */
export class UpstreamProtocolError extends Error {
  constructor(message: string, readonly code: string) {
    super(message)
  }
}

export class UpstreamCall implements Call, ChunkSink {
  private buffer: Buffer | undefined
  private head: AnswerHead | undefined
  private framing: Framing = { kind: 'none' }
  private reusable = true
  private requestDone = false
  private answerDone = false
  private finished = false
  private chunked: ChunkedBody | undefined
  private drainListener: (() => void) | undefined

  private readonly socket: Socket

  constructor(
    private readonly connection: CallConnection,
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
    this.chunked ??= new ChunkedBody(this)
    return this.chunked.take(data)
  }

  /** Holds an incomplete line until more bytes come. */
  keep(data: Buffer): Buffer {
    this.buffer = data
    return EMPTY
  }

  refuse(message: string): Buffer {
    this.fail(new UpstreamProtocolError(message, 'HPE_INVALID_CHUNK_SIZE'))
    return EMPTY
  }

  deliver(piece: Buffer): void {
    if (piece.length > 0 && !this.finished && !this.handlers.onBody(piece)) this.socket.pause()
  }

  /** The answer is whole. The socket is released by the caller, once it has seen what bytes follow. */
  complete(last?: Buffer): void {
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
