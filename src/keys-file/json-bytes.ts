/**
 * JSON at the level of bytes: the structural characters, and the scan of a flat object (the keys
 * file's usual entry) where it lies in a window of the file. Pure.
 */
export const QUOTE = 0x22
export const BACKSLASH = 0x5c
export const COMMA = 0x2c
export const COLON = 0x3a
export const OPEN_OBJECT = 0x7b
export const CLOSE_OBJECT = 0x7d
export const OPEN_ARRAY = 0x5b
export const CLOSE_ARRAY = 0x5d
export const NEWLINE = 0x0a

// A flat entry is read from the window when it fits in this many bytes and has at most FLAT_MEMBERS fields.
export const FLAT_LOOKAHEAD = 4096
const FLAT_MEMBERS = 8

/**
 * A flat object of string fields and arrays of strings: per field, the offsets of its name and of
 * its value (start, end, start, end). A string's range is its content, between the quotes; an
 * array's runs from its `[` to just past its `]` (see isArrayValue).
 */
export class FlatObject {
  readonly members = new Int32Array(FLAT_MEMBERS * 4)
  count = 0
  /** Newlines in the object's white space (only there can one be), and the offset of the last (read only when there is one). */
  newlines = 0
  lastNewline = 0

  /**
   * Scans the flat object at `buf[from]` (an opening brace) up to `end`; the offset after it, or -1
   * for anything else (another kind of value, an array of anything but strings, a field twice, more
   * than FLAT_MEMBERS fields, the window's end). Strings are only delimited here: the caller
   * accepts an entry only when it has checked every byte of it (a hex digest, an id's characters),
   * so no escape or control byte passes; any other entry goes the general way, which checks
   * everything. Every byte is read through byteAt, the one place that knows where the window ends.
   */
  scan(buf: Buffer, from: number, end: number): number {
    const { members } = this
    let count = 0
    this.newlines = 0
    for (let i = this.skipSpaces(buf, from + 1, end); count < FLAT_MEMBERS; count++) {
      if (byteAt(buf, i, end) !== QUOTE) return -1
      const nameEnd = quoteAfter(buf, i + 1, end)
      members[count * 4] = i + 1
      members[count * 4 + 1] = nameEnd
      i = this.skipSpaces(buf, nameEnd + 1, end)
      if (byteAt(buf, i, end) !== COLON) return -1
      i = this.skipSpaces(buf, i + 1, end)
      const first = byteAt(buf, i, end)
      if ((first !== QUOTE && first !== OPEN_ARRAY) || repeatsName(buf, members, count)) return -1
      const after = first === QUOTE ? quoteAfter(buf, i + 1, end) + 1 : this.stringsArray(buf, i, end)
      // A string's range is its content; an array's runs to just past its `]`.
      members[count * 4 + 2] = first === QUOTE ? i + 1 : i
      members[count * 4 + 3] = first === QUOTE ? after - 1 : after
      i = this.skipSpaces(buf, after, end)
      const next = byteAt(buf, i, end)
      if (next === CLOSE_OBJECT) {
        this.count = count + 1
        return i + 1
      }
      if (next !== COMMA) return -1
      i = this.skipSpaces(buf, i + 1, end)
    }
    return -1
  }

  /**
   * The offset past the array of strings at `buf[from]` (a `[`); for anything else, `end`, where
   * the scan gives up as at the window's end.
   */
  private stringsArray(buf: Buffer, from: number, end: number): number {
    let i = this.skipSpaces(buf, from + 1, end)
    if (byteAt(buf, i, end) === CLOSE_ARRAY) return i + 1
    for (;;) {
      if (byteAt(buf, i, end) !== QUOTE) return end
      i = this.skipSpaces(buf, quoteAfter(buf, i + 1, end) + 1, end)
      const next = byteAt(buf, i, end)
      if (next === CLOSE_ARRAY) return i + 1
      if (next !== COMMA) return end
      i = this.skipSpaces(buf, i + 1, end)
    }
  }

  private skipSpaces(buf: Buffer, from: number, end: number): number {
    let i = from
    for (let c = byteAt(buf, i, end); c === 0x20 || c === NEWLINE || c === 0x0d || c === 0x09; c = byteAt(buf, ++i, end)) {
      if (c === NEWLINE) {
        this.newlines++
        this.lastNewline = i
      }
    }
    return i
  }
}

/** The byte at `i`, or -1 at and past the window's end (bytes there may be the next read's). */
function byteAt(buf: Buffer, i: number, end: number): number {
  return i < end ? (buf[i] as number) : -1
}

/**
 * The offset of the next quote from `from` on, or `end` when the window ends first: past that, every
 * byteAt is -1, so the scan gives up at its next check.
 */
function quoteAfter(buf: Buffer, from: number, end: number): number {
  let i = from
  for (let c = byteAt(buf, i, end); c !== QUOTE && c !== -1; c = byteAt(buf, ++i, end));
  return i
}

/** Whether the name of member `last` is the name of an earlier one. */
function repeatsName(buf: Buffer, members: Int32Array, last: number): boolean {
  const start = members[last * 4] as number
  const length = (members[last * 4 + 1] as number) - start
  for (let m = 0; m < last; m++) {
    const other = members[m * 4] as number
    if ((members[m * 4 + 1] as number) - other === length && buf.compare(buf, other, other + length, start, start + length) === 0) return true
  }
  return false
}
