/**
 * Typed columns for a key set of any size: values in chunks of 65,536 rows, so that growing
 * never copies what is there, and a column nobody set costs nothing. Pure.
 */
const CHUNK_BITS = 16
const CHUNK_ROWS = 1 << CHUNK_BITS
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
    const offset = this.offsetOf(row)
    return this.chunkOf(row).toString('latin1', offset, offset + this.lengths.get(row))
  }

  /** Whether row `row` holds the bytes of row `otherRow` of `other`. */
  equalsRow(row: number, other: ByteStrings, otherRow: number): boolean {
    return this.equals(row, other.chunkOf(otherRow), other.offsetOf(otherRow), other.lengths.get(otherRow))
  }

  /** FNV-1a of row `row`'s bytes. */
  hash(row: number): number {
    return hashBytes(this.chunkOf(row), this.offsetOf(row), this.lengths.get(row))
  }

  /** Whether row `row` holds the `length` bytes of `from` at `start`. */
  equals(row: number, from: Buffer, start: number, length: number): boolean {
    if (this.lengths.get(row) !== length) return false
    const chunk = this.chunkOf(row)
    const offset = this.offsetOf(row)
    for (let k = 0; k < length; k++) if (chunk[offset + k] !== from[start + k]) return false
    return true
  }

  private chunkOf(row: number): Buffer {
    return this.chunks[Math.floor(this.at.get(row) / BYTES_PER_CHUNK)] as Buffer
  }

  private offsetOf(row: number): number {
    return this.at.get(row) % BYTES_PER_CHUNK
  }
}

/** FNV-1a of the bytes. */
function hashBytes(bytes: Buffer, start: number, length: number): number {
  let h = 0x811c9dc5 | 0
  for (let i = start; i < start + length; i++) h = Math.imul(h ^ (bytes[i] as number), 0x01000193)
  return h >>> 0
}

/**
 * Rows 0..count-1 in the order of `keys` (stable: equal keys keep the order of their rows), by a
 * radix sort of 11 bits a pass, as many passes as the largest key needs: a million rows in tens
 * of milliseconds with (nearly) sequential memory access, where a hash table of a million
 * entries is a million cache misses. Keys travel with their rows, so no pass reads at random.
 */
export function radixOrder(keys: Uint32Array, count: number): Uint32Array {
  return radixSort(keys, count).order
}

/** `radixOrder`, the keys in that order, and `payload` (a value per row) in that order too. */
export function radixSort(keys: Uint32Array, count: number, payload?: Uint32Array): { order: Uint32Array; sorted: Uint32Array; carried?: Uint32Array } {
  let order = new Uint32Array(count)
  let next = new Uint32Array(count)
  let sorted = keys.slice(0, count)
  let nextKeys = new Uint32Array(count)
  let carried = payload?.slice(0, count)
  let nextCarried = payload === undefined ? undefined : new Uint32Array(count)
  for (let row = 0; row < count; row++) order[row] = row
  let largest = 0
  for (let i = 0; i < count; i++) largest = Math.max(largest, sorted[i] as number)
  const counts = new Uint32Array(1 << RADIX_BITS)
  for (let shift = 0; shift < 32 && largest >>> shift !== 0; shift += RADIX_BITS) {
    counts.fill(0)
    for (let i = 0; i < count; i++) {
      const digit = ((sorted[i] as number) >>> shift) & RADIX_MASK
      counts[digit] = (counts[digit] as number) + 1
    }
    let sum = 0
    for (let digit = 0; digit < counts.length; digit++) {
      const n = counts[digit] as number
      counts[digit] = sum
      sum += n
    }
    for (let i = 0; i < count; i++) {
      const key = sorted[i] as number
      const digit = (key >>> shift) & RADIX_MASK
      const to = counts[digit] as number
      counts[digit] = to + 1
      next[to] = order[i] as number
      nextKeys[to] = key
      if (carried !== undefined) (nextCarried as Uint32Array)[to] = carried[i] as number
    }
    // Swapped one by one: a destructuring swap here made the whole sort four times slower (V8 11).
    const order_ = order
    order = next
    next = order_
    const sorted_ = sorted
    sorted = nextKeys
    nextKeys = sorted_
    const carried_ = carried
    carried = nextCarried
    nextCarried = carried_
  }
  return { order, sorted, carried }
}

const RADIX_BITS = 11
const RADIX_MASK = (1 << RADIX_BITS) - 1

/**
 * Calls `visit(rows)` for each group of two or more rows whose keys are equal (rows in ascending
 * order): what is left to compare after hashing. Rows are chained by their low bits (the keys are
 * hashes already); only chains of two or more are looked at. One pass over the rows: in a fresh
 * process, before V8 has optimized anything, that is about twice as fast as the radix sort it
 * replaced for 100,000 rows, and as fast for a million.
 */
export function forEachCollision(keys: Uint32Array, count: number, visit: (rows: number[]) => void): void {
  let size = 1
  while (size < count) size *= 2
  const mask = size - 1
  const heads = new Int32Array(size).fill(-1)
  const next = new Int32Array(count)
  // From the last row down, so that each chain lists its rows in ascending order.
  for (let row = count - 1; row >= 0; row--) {
    const bucket = (keys[row] as number) & mask
    next[row] = heads[bucket] as number
    heads[bucket] = row
  }
  for (let row = 0; row < count; row++) {
    if (next[row] === -1 || heads[(keys[row] as number) & mask] !== row) continue
    const chain: number[] = []
    for (let at = row; at !== -1; at = next[at] as number) chain.push(at)
    visitEqual(keys, chain, visit)
  }
}

/** Among `rows` (one chain, ascending, usually two), the groups whose whole keys are equal. */
function visitEqual(keys: Uint32Array, rows: readonly number[], visit: (rows: number[]) => void): void {
  const grouped = new Set<number>()
  for (let a = 0; a < rows.length; a++) {
    if (grouped.has(a)) continue
    const key = keys[rows[a] as number]
    let group: number[] | undefined
    for (let b = a + 1; b < rows.length; b++) {
      if (keys[rows[b] as number] !== key) continue
      ;(group ??= [rows[a] as number]).push(rows[b] as number)
      grouped.add(b)
    }
    if (group !== undefined) visit(group)
  }
}

/** Pairs of rows of `strings` holding the same bytes, as [earlier, later]. */
export function repeatedStrings(strings: ByteStrings, count: number): Array<[number, number]> {
  const hashes = new Uint32Array(count)
  for (let row = 0; row < count; row++) hashes[row] = strings.hash(row)
  const repeats: Array<[number, number]> = []
  forEachCollision(hashes, count, (rows) => {
    for (let a = 1; a < rows.length; a++) {
      const earlier = rows.slice(0, a).find((b) => strings.equalsRow(b, strings, rows[a] as number))
      if (earlier !== undefined) repeats.push([earlier, rows[a] as number])
    }
  })
  return repeats
}
