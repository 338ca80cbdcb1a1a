/**
 * The bytes of a document, a window at a time, with the line and column of the read position: a
 * file of a million entries is never held whole. The JSON reader (json-reader.ts) parses over it.
 */
import { NEWLINE } from './json-bytes.js'

/** Where the bytes come from: `read` fills `into` from `at` on and says how many bytes it put there (0: the end). */
export type ByteSource = (into: Buffer, at: number) => number

export class JsonSyntaxError extends Error {
  override name = 'JsonSyntaxError'
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
    /** For a field given twice: its name, for the caller to quote or not. */
    readonly duplicate?: string,
  ) {
    super(message)
  }
}

const WINDOW_BYTES = 1 << 20

export class ByteWindow {
  protected buf = Buffer.allocUnsafe(WINDOW_BYTES)
  protected pos = 0
  protected end = 0
  /** Bytes of the document before `buf[0]`. */
  protected base = 0
  protected line = 1
  /** Offset in the document of the first byte of the current line. */
  protected lineStart = 0
  protected atEnd = false

  constructor(private readonly source: ByteSource) {}

  /** The byte at the read position, or -1 at the end of the document. */
  peek(): number {
    if (this.pos < this.end || this.fill()) return this.buf[this.pos] as number
    return -1
  }

  /** Line and column (both from 1) of the read position. */
  where(): [line: number, column: number] {
    return [this.line, this.base + this.pos - this.lineStart + 1]
  }

  fail(message: string, duplicate?: string, [line, column] = this.where()): never {
    throw new JsonSyntaxError(message, line, column, duplicate)
  }

  /** Moves past the byte at the read position (a bracket the caller has peeked at). */
  advance(): void {
    this.pos++
  }

  skipBom(): void {
    if (this.peek() === 0xef && this.ensure(3) && this.buf[this.pos + 1] === 0xbb && this.buf[this.pos + 2] === 0xbf) {
      this.pos += 3
      this.lineStart = this.base + this.pos
    }
  }

  skipSpace(): void {
    for (;;) {
      if (this.pos >= this.end && !this.fill()) return
      const c = this.buf[this.pos] as number
      if (c === NEWLINE) {
        this.line++
        this.lineStart = this.base + this.pos + 1
      } else if (c !== 0x20 && c !== 0x0d && c !== 0x09) return
      this.pos++
    }
  }

  /** Makes `count` bytes from the read position available; false when the document ends first. */
  protected ensure(count: number): boolean {
    while (this.end - this.pos < count) if (!this.fill(this.pos)) return false
    return true
  }

  /**
   * Reads more bytes: what is left from `keep` on (the start of a token being read) moves to the
   * front, and the window grows when that alone fills it. False at the end of the document.
   */
  protected fill(keep = this.pos): boolean {
    if (this.atEnd) return false
    if (keep > 0) {
      this.buf.copy(this.buf, 0, keep, this.end)
      this.base += keep
      this.pos -= keep
      this.end -= keep
    }
    if (this.end === this.buf.length) {
      const bigger = Buffer.allocUnsafe(this.buf.length * 2)
      this.buf.copy(bigger, 0, 0, this.end)
      this.buf = bigger
    }
    const read = this.source(this.buf, this.end)
    if (read === 0) this.atEnd = true
    this.end += read
    return read > 0
  }
}

/** A source over bytes already in memory (a string's UTF-8, say). */
export function bytesSource(bytes: Buffer): ByteSource {
  let offset = 0
  return (into, at) => {
    const count = bytes.copy(into, at, offset)
    offset += count
    return count
  }
}
