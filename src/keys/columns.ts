/**
 * Typed columns for a key set of any size: values in chunks of 65,536 rows, so that growing
 * never copies what is there, and a column nobody set costs nothing. Pure.
 */
export const CHUNK_BITS = 16
export const CHUNK_ROWS = 1 << CHUNK_BITS
const ROW_MASK = CHUNK_ROWS - 1

type Typed = Float64Array | Uint32Array | Uint8Array

export class Column<T extends Typed> {
  private readonly chunks: T[] = []

  constructor(
    private readonly make: (length: number) => T,
    /** What a row holds until it is set. */
    private readonly initial: number,
  ) {}

  get(row: number): number {
    const chunk = this.chunks[row >>> CHUNK_BITS]
    return chunk === undefined ? this.initial : (chunk[row & ROW_MASK] as number)
  }

  set(row: number, value: number): void {
    while (this.chunks.length <= row >>> CHUNK_BITS) {
      const chunk = this.make(CHUNK_ROWS)
      if (this.initial !== 0) chunk.fill(this.initial)
      this.chunks.push(chunk)
    }
    ;(this.chunks[row >>> CHUNK_BITS] as T)[row & ROW_MASK] = value
  }
}

const BYTES_PER_CHUNK = 1 << 20

/** Short byte strings (ids: at most 128 bytes) packed into 1 MiB buffers, each addressed by one number. */
export class ByteStrings {
  private readonly chunks: Buffer[] = []
  private used = BYTES_PER_CHUNK
  private readonly at = new Column((n) => new Uint32Array(n), 0)
  private readonly lengths = new Column((n) => new Uint8Array(n), 0)

  /** Stores `length` bytes (<= 255) of `from` starting at `start` as row `row`. */
  set(row: number, from: Buffer, start: number, length: number): void {
    if (this.used + length > BYTES_PER_CHUNK) {
      this.chunks.push(Buffer.allocUnsafe(BYTES_PER_CHUNK))
      this.used = 0
    }
    const chunk = this.chunks[this.chunks.length - 1] as Buffer
    // A loop, not Buffer.copy: for a few bytes the call costs more than the copy.
    for (let k = 0; k < length; k++) chunk[this.used + k] = from[start + k] as number
    this.at.set(row, (this.chunks.length - 1) * BYTES_PER_CHUNK + this.used)
    this.lengths.set(row, length)
    this.used += length
  }

  /** Row `row` as a latin1 string. */
  get(row: number): string {
    const at = this.at.get(row)
    const offset = at % BYTES_PER_CHUNK
    return (this.chunks[Math.floor(at / BYTES_PER_CHUNK)] as Buffer).toString('latin1', offset, offset + this.lengths.get(row))
  }

  /** Whether row `row` holds the bytes of row `otherRow` of `other`. */
  equalsRow(row: number, other: ByteStrings, otherRow: number): boolean {
    const at = other.at.get(otherRow)
    const offset = at % BYTES_PER_CHUNK
    return this.equals(row, other.chunks[Math.floor(at / BYTES_PER_CHUNK)] as Buffer, offset, other.lengths.get(otherRow))
  }

  /** FNV-1a of row `row`'s bytes. */
  hash(row: number): number {
    const at = this.at.get(row)
    const offset = at % BYTES_PER_CHUNK
    return hashBytes(this.chunks[Math.floor(at / BYTES_PER_CHUNK)] as Buffer, offset, this.lengths.get(row))
  }

  /** Whether row `row` holds the `length` bytes of `from` at `start`. */
  equals(row: number, from: Buffer, start: number, length: number): boolean {
    if (this.lengths.get(row) !== length) return false
    const at = this.at.get(row)
    const offset = at % BYTES_PER_CHUNK
    const chunk = this.chunks[Math.floor(at / BYTES_PER_CHUNK)] as Buffer
    for (let k = 0; k < length; k++) if (chunk[offset + k] !== from[start + k]) return false
    return true
  }
}

/** FNV-1a of the bytes, as an int32. */
export function hashBytes(bytes: Buffer, start: number, length: number): number {
  let h = 0x811c9dc5 | 0
  for (let i = start; i < start + length; i++) h = Math.imul(h ^ (bytes[i] as number), 0x01000193)
  return h
}

/** Rows a `ByteStringSet` can tell apart: a slot packs 24 bits of row and 8 of hash. */
export const MAX_ROWS = (1 << 24) - 2

/**
 * Which rows hold which byte strings, to find a repeated id among a million without a million
 * JS strings: an open-addressing table, grown at half full, whose slot packs row + 1 (0: empty)
 * with the top 8 bits of the hash, so that most probes of a full slot compare no bytes. 8 MB
 * for a million rows, and only while a key set is being built.
 */
export class ByteStringSet {
  private slots = new Int32Array(1 << 12)
  private count = 0

  constructor(private readonly strings: ByteStrings) {}

  /** The row that holds these bytes already, or -1. */
  find(from: Buffer, start: number, length: number): number {
    const hash = hashBytes(from, start, length)
    const mask = this.slots.length - 1
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const packed = this.slots[slot] as number
      if (packed === 0) return -1
      if (packed >>> 24 === hash >>> 24 && this.strings.equals((packed & 0xffffff) - 1, from, start, length)) return (packed & 0xffffff) - 1
    }
  }

  /** The row that holds the bytes of row `row` of `other`, or -1. */
  findRowOf(other: ByteStrings, row: number): number {
    const hash = other.hash(row)
    const mask = this.slots.length - 1
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const packed = this.slots[slot] as number
      if (packed === 0) return -1
      if (packed >>> 24 === hash >>> 24 && this.strings.equalsRow((packed & 0xffffff) - 1, other, row)) return (packed & 0xffffff) - 1
    }
  }

  /** Records `row` (< MAX_ROWS) for these bytes, which it must hold before the next `find`; false when a row holds them already. */
  insertIfNew(from: Buffer, start: number, length: number, row: number): boolean {
    if ((this.count + 1) * 2 > this.slots.length) this.grow()
    const hash = hashBytes(from, start, length)
    const mask = this.slots.length - 1
    let slot = hash & mask
    for (let packed = this.slots[slot] as number; packed !== 0; slot = (slot + 1) & mask, packed = this.slots[slot] as number) {
      if (packed >>> 24 === hash >>> 24 && this.strings.equals((packed & 0xffffff) - 1, from, start, length)) return false
    }
    this.slots[slot] = ((hash >>> 24) << 24) | (row + 1)
    this.count++
    return true
  }

  private grow(): void {
    const old = this.slots
    this.slots = new Int32Array(old.length * 2)
    const mask = this.slots.length - 1
    for (const packed of old) {
      if (packed === 0) continue
      const row = (packed & 0xffffff) - 1
      let slot = this.strings.hash(row) & mask
      while (this.slots[slot] !== 0) slot = (slot + 1) & mask
      this.slots[slot] = packed
    }
  }
}
