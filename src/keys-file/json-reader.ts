/**
 * A strict, streaming JSON reader for the keys file. It reads bytes a window at a time, so that a
 * file of a million entries is never held whole, and hands over the entries of the top-level
 * `keys` array one by one as they are parsed; every other top-level field is handed over whole.
 * It refuses what `JSON.parse` refuses, and an object with a field given twice (`JSON.parse`
 * silently keeps the last). A fault is a `JsonSyntaxError` with its line and column and a
 * description that never quotes the text (a keys file may hold secrets). Iterative, so deep
 * nesting cannot overflow the stack. Pure but for the source it is given.
 */
import { BACKSLASH, CLOSE_ARRAY, CLOSE_OBJECT, COLON, COMMA, FLAT_LOOKAHEAD, FlatObject, OPEN_ARRAY, OPEN_OBJECT, QUOTE } from './json-bytes.js'
import { ByteWindow, type ByteSource } from './byte-window.js'
import { ValueBuilder } from './json-values.js'

export interface DocumentHandlers {
  /** The top-level value was not an object (it is given whole). */
  onNotObject(value: unknown): void
  /** A top-level field other than an array of `keys`. */
  onField(name: string, value: unknown): void
  /** The next entry of the top-level `keys` array. */
  onEntry(value: unknown, index: number): void
  /**
   * The next entry, when it is a flat object of strings and arrays of strings (no field twice):
   * `members` holds, per field, the offsets in `bytes` of its name and its value (FlatObject),
   * valid only during the call. The strings are only delimited: the handler accepts the entry only
   * when it has checked every byte it uses. False: the reader builds it for `onEntry`.
   */
  onFlatEntry?(bytes: Buffer, members: Int32Array, count: number, index: number): boolean
  /** `keys` was an array (called at its end, with the number of entries). */
  onKeysEnd(count: number): void
}

const ESCAPES = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]) // " \ / b f n r t
const BAD_STRING = 'a string with a control character, an escape JSON does not have, or no closing quote'
const BAD_VALUE = 'expected a value (object, array, string, number, true, false or null)'

/** Reads a whole document from `source`, telling `handlers` what it holds; throws `JsonSyntaxError`. */
export function readDocument(source: ByteSource, handlers: DocumentHandlers): void {
  const reader = new Reader(source)
  reader.skipBom()
  reader.skipSpace()
  if (reader.peek() !== OPEN_OBJECT) handlers.onNotObject(reader.value())
  else reader.topLevelObject(handlers)
  reader.skipSpace()
  if (reader.peek() !== -1) reader.fail('more text after the end of the JSON document')
}

/** A parser over the bytes of the document (a window of them at a time: byte-window.ts). */
export class Reader extends ByteWindow {
  /** The flat entry last scanned (see `onFlatEntry`). */
  private readonly flat = new FlatObject()

  /** The top-level object: `keys` streamed entry by entry when it is an array, the rest whole. */
  topLevelObject(handlers: DocumentHandlers): void {
    this.advance() // {
    const seen: string[] = []
    this.skipSpace()
    if (this.peek() === CLOSE_OBJECT) return void this.pos++
    for (;;) {
      const name = this.fieldName(seen)
      this.skipSpace()
      if (name === 'keys' && this.peek() === OPEN_ARRAY) handlers.onKeysEnd(this.entries(handlers))
      else handlers.onField(name, this.value())
      if (this.afterMember(CLOSE_OBJECT)) return
    }
  }

  /** The elements of the `keys` array, each built and handed over; returns their number. */
  private entries(handlers: DocumentHandlers): number {
    this.pos++ // [
    this.skipSpace()
    if (this.peek() === CLOSE_ARRAY) {
      this.pos++
      return 0
    }
    let count = 0
    for (;;) {
      if (!this.flatEntry(handlers, count)) handlers.onEntry(this.value(), count)
      count++
      if (this.afterMember(CLOSE_ARRAY)) return count
    }
  }

  /**
   * The fast path for the usual entry, `{"id": "...", "sha256": "..."}` (and arrays of strings): its
   * bytes are handed over where they lie, with no string or object made. Anything else (another
   * kind of value, a field twice, more than FLAT_MEMBERS fields, what the handler refuses) is left unread.
   */
  private flatEntry(handlers: DocumentHandlers, index: number): boolean {
    if (handlers.onFlatEntry === undefined || this.peek() !== OPEN_OBJECT) return false
    this.ensure(FLAT_LOOKAHEAD) // near the end of the document there is less: the scan stops there
    const end = this.flat.scan(this.buf, this.pos, this.end)
    if (end === -1 || !handlers.onFlatEntry(this.buf, this.flat.members, this.flat.count, index)) return false
    this.passLines()
    this.pos = end
    return true
  }

  /** Counts the lines of a flat entry that the handler accepted (`JSON.stringify(file, null, 2)` writes them). */
  private passLines(): void {
    if (this.flat.newlines === 0) return
    this.line += this.flat.newlines
    this.lineStart = this.base + this.flat.lastNewline + 1
  }

  /**
   * After a member of an object or array: true at its closing bracket (consumed), false after a
   * comma followed by another member.
   */
  afterMember(close: number): boolean {
    this.skipSpace()
    const c = this.peek()
    if (c === close) {
      this.pos++
      return true
    }
    const bracket = close === CLOSE_OBJECT ? '}' : ']'
    if (c === COMMA) {
      const comma = this.where()
      this.pos++
      this.skipSpace()
      if (this.peek() === close) this.fail(`a trailing comma before "${bracket}"`, undefined, comma)
      return false
    }
    if (c === -1) this.fail(`the text ends inside an ${close === CLOSE_OBJECT ? 'object' : 'array'}`)
    return this.fail(`expected "," or "${bracket}"`)
  }

  /** A field name and its colon; refuses one already in `seen` (which it joins). */
  fieldName(seen: string[] | Set<string>): string {
    this.skipSpace()
    const c = this.peek()
    if (c !== QUOTE) this.fail(c === -1 ? 'the text ends inside an object' : 'expected a field name in double quotes')
    const at = this.where()
    const name = this.string()
    if (seen instanceof Set ? seen.has(name) : seen.includes(name)) this.fail('a field given twice in one object', name, at)
    if (seen instanceof Set) seen.add(name)
    else seen.push(name)
    this.skipSpace()
    if (this.peek() !== COLON) this.fail('expected ":" after the field name')
    this.pos++
    return name
  }

  /** Any value, built as `JSON.parse` would build it, without recursion. */
  value(): unknown {
    return new ValueBuilder(this).build()
  }

  /** The string at the read position (a quote), decoded. */
  string(): string {
    let i = this.pos + 1
    let plain = true
    for (;;) {
      if (i >= this.end) {
        const shift = this.pos
        if (!this.fill(shift)) this.fail(BAD_STRING)
        i -= shift
        continue
      }
      const c = this.buf[i] as number
      if (c === QUOTE) break
      if (c < 0x20) this.fail(BAD_STRING)
      if (c >= 0x80) plain = false
      if (c === BACKSLASH) {
        i = this.pos + this.checkEscape(i - this.pos)
        plain = false
      }
      i++
    }
    const start = this.pos + 1
    this.pos = i + 1
    if (plain) return this.buf.toString('latin1', start, i)
    const raw = this.buf.toString('utf8', start, i)
    return raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw
  }

  /** Checks the escape at `offset` from the read position; returns the offset of its last byte. */
  private checkEscape(offset: number): number {
    if (!this.ensure(offset + 2)) this.fail(BAD_STRING)
    const next = this.buf[this.pos + offset + 1] as number
    if (next !== 0x75 /* u */) {
      if (!ESCAPES.has(next)) this.fail(BAD_STRING)
      return offset + 1
    }
    if (!this.ensure(offset + 6)) this.fail(BAD_STRING)
    const at = this.pos + offset
    for (let k = at + 2; k < at + 6; k++) if (!isHexDigit(this.buf[k] as number)) this.fail(BAD_STRING)
    return offset + 5
  }

  /** A number, `true`, `false` or `null` at the read position. */
  scalar(): number | boolean | null {
    const c = this.peek()
    for (const [word, value] of LITERALS) if (c === word.charCodeAt(0) && this.matches(word)) return value
    const length = this.numberLength()
    if (length === 0) this.fail(BAD_VALUE)
    const text = this.buf.toString('latin1', this.pos, this.pos + length)
    this.pos += length
    return Number(text)
  }

  private matches(word: string): boolean {
    if (!this.ensure(word.length)) return false
    for (let k = 0; k < word.length; k++) if (this.buf[this.pos + k] !== word.charCodeAt(k)) return false
    this.pos += word.length
    return true
  }

  /**
   * The length of the JSON number at the read position, 0 when there is none:
   * -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?. Read to its last digit however long it is and
   * wherever the window ends: the position of a number in the file never changes the verdict.
   */
  private numberLength(): number {
    // Offsets from the read position: a refill moves the bytes, never their distance from it.
    const at = (k: number) => (this.pos + k < this.end || this.ensure(k + 1) ? (this.buf[this.pos + k] as number) : -1)
    let i = 0
    if (at(i) === 0x2d) i++
    if (at(i) === 0x30) i++
    else if (isDigit(at(i))) while (isDigit(at(i))) i++
    else return 0
    if (at(i) === 0x2e) {
      if (!isDigit(at(++i))) return 0
      while (isDigit(at(i))) i++
    }
    if (at(i) === 0x65 || at(i) === 0x45) {
      i++
      if (at(i) === 0x2b || at(i) === 0x2d) i++
      if (!isDigit(at(i))) return 0
      while (isDigit(at(i))) i++
    }
    return i
  }
}

const LITERALS: ReadonlyArray<[string, boolean | null]> = [['true', true], ['false', false], ['null', null]]
const isDigit = (c: number) => c >= 0x30 && c <= 0x39
const isHexDigit = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
