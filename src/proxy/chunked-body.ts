/**
 * The chunked transfer coding of an answer (RFC 9112 section 7.1): size lines, data, CRLF, a last
 * chunk, trailers; as strict as llhttp (no `0x`, no junk or space after the size, a CRLF after
 * each chunk's data). The call reading the answer is the sink of what it finds.
 */
import { isChunkSizeLine, isTrailerLine } from './answer-head.js'

/** Where the decoder's findings go: the answer's call. */
export interface ChunkSink {
  /** A piece of the body's data. */
  deliver(piece: Buffer): void
  /** The last chunk and the trailers are read: the body is whole. */
  complete(): void
  /** Holds an incomplete line until more bytes come; returns what is left to read now (nothing). */
  keep(data: Buffer): Buffer
  /** The body breaks the coding: the call fails; returns nothing left to read. */
  refuse(message: string): Buffer
}

// A chunk-size or trailer line longer than this is no honest service's (llhttp bounds them too).
const MAX_LINE_BYTES = 8 * 1024
const CRLF = '\r\n'
const CR = 13
const LF = 10
// States besides "bytes of chunk data still to come" (a positive count).
const SIZE_LINE = -1
const AFTER_DATA = -2 // the CRLF that must end each chunk's data

export class ChunkedBody {
  private left = SIZE_LINE
  private trailers = false

  constructor(private readonly sink: ChunkSink) {}

  /** Takes what of `data` belongs to the body and returns the rest. */
  take(data: Buffer): Buffer {
    if (this.left === AFTER_DATA) {
      if (data.length < 2) return this.sink.keep(data)
      if (data[0] !== CR || data[1] !== LF) return this.sink.refuse('chunk data not followed by CRLF')
      this.left = SIZE_LINE
      return data.subarray(2)
    }
    if (this.left === SIZE_LINE) return this.line(data)
    const take = Math.min(this.left, data.length)
    this.sink.deliver(data.subarray(0, take))
    this.left -= take
    if (this.left === 0) this.left = AFTER_DATA
    return data.subarray(take)
  }

  /** A chunk-size line, or a trailer line after the last chunk. */
  private line(data: Buffer): Buffer {
    const end = data.indexOf(CRLF)
    if (end === -1) {
      if (data.length > MAX_LINE_BYTES || data.includes(LF)) return this.sink.refuse('bad chunk line')
      return this.sink.keep(data)
    }
    const line = data.toString('latin1', 0, end)
    if (this.trailers) {
      if (line === '') this.sink.complete()
      else if (!isTrailerLine(line)) return this.sink.refuse('bad trailer line')
      return data.subarray(end + 2)
    }
    const size = isChunkSizeLine(line) ? parseInt(line, 16) : NaN
    if (!Number.isSafeInteger(size)) return this.sink.refuse('bad chunk size')
    if (size === 0) this.trailers = true
    else this.left = size
    return data.subarray(end + 2)
  }
}
