/**
 * A digest index whose lookups touch the same memory whatever the number of keys: two buckets of a
 * table of at least 2 MiB, then one 32-byte row of at least 4 MiB of digests. A `Map` of 100,000
 * digests misses the CPU caches where one of a single digest hits them, which made lookup time
 * tell (roughly) how many keys are loaded. Pure: no I/O.
 */
import { forEachCollision, radixSort } from './columns.js'
import { DigestRows, MIN_ROWS, word, WORDS_PER_DIGEST } from './digest-rows.js'

const SLOTS_PER_BUCKET = 8 // (tag, row + 1) pairs of int32: a bucket is one 64-byte cache line
const INTS_PER_BUCKET = SLOTS_PER_BUCKET * 2
const MIN_BUCKETS = 1 << 15 // 2 MiB of table: room for about 150,000 keys before it grows
// Up to 8 MiB of table (about 600,000 keys), digests are placed in file order, not bucket order.
const SORTED_FILL_ABOVE = 1 << 17
const NOT_FOUND = -1
const WORDS_PER_PAGE = 4096 / 4
// See FixedFootprintIndex.touchPages: 1,536 pages for the smallest index, done in 48 lookups.
const PAGES_PER_LOOKUP = 32

export interface DigestIndex {
  /** The position of `digest` (32 latin1 characters) in the list given, or -1; always the same work. */
  find(digest: string): number
  /** `find` for a digest as eight words (`DigestRows`' layout), for the keys file's own entries: not constant-time. */
  findWords(words: Int32Array): number
}

/** Indexes distinct SHA-256 digests (32-character latin1 strings); throws a `RangeError` on a repeated one. */
export function createDigestIndex(digests: readonly string[]): DigestIndex {
  const rows = new DigestRows()
  for (const digest of digests) rows.addLatin1(digest)
  const built = indexDigestRows(rows)
  if ('duplicate' in built) throw new RangeError(`digest ${built.duplicate[1]} repeats digest ${built.duplicate[0]}`)
  return built.index
}

/** A digest given twice, as its two rows, found without building an index (what a check of the file needs). */
export function repeatedDigest(rows: DigestRows): [number, number] | undefined {
  const firstWords = new Uint32Array(rows.count)
  for (let row = 0; row < rows.count; row++) firstWords[row] = rows.word(row, 0)
  let repeat: [number, number] | undefined
  forEachCollision(firstWords, rows.count, (group) => {
    for (let a = 0; a < group.length; a++) {
      for (let b = a + 1; b < group.length; b++) if (repeat === undefined && rows.sameAs(group[a] as number, group[b] as number)) repeat = [group[a] as number, group[b] as number]
    }
  })
  return repeat
}

/** An index for a set that is only checked, never asked: it finds nothing. */
export const NO_INDEX: DigestIndex = { find: () => NOT_FOUND, findWords: () => NOT_FOUND }

/** Indexes the rows; a digest given twice is reported as the rows of its two places instead. */
export function indexDigestRows(rows: DigestRows): { index: DigestIndex } | { duplicate: [first: number, second: number] } {
  let bucketCount = MIN_BUCKETS
  while (bucketCount * SLOTS_PER_BUCKET < rows.count * 2) bucketCount *= 2
  for (;;) {
    const table = fillTable(rows, bucketCount)
    // Rows past the last digest, up to MIN_ROWS, are read by misses: a miss reads one like a hit reads its own.
    if (table instanceof Int32Array) return { index: new FixedFootprintIndex(table, bucketCount - 1, rows.words, Math.max(MIN_ROWS, rows.count)) }
    if (table !== undefined) return table
    // A full pair of buckets or two tags alike (both about as likely as a lottery win): grow and retry.
    bucketCount *= 2
  }
}

// A class, not a closure per index: every index shares one `find`, so a call site that sees two
// indexes stays monomorphic and neither is faster for having been seen first.
class FixedFootprintIndex implements DigestIndex {
  /** Pages of the table, then of the rows, that lookups have written to so far. */
  private pagesTouched = 0
  private readonly tablePages: number
  private readonly pageCount: number

  constructor(
    private readonly buckets: Int32Array,
    private readonly mask: number,
    /** Every row a lookup can read comes before `rowCount`; the array may go on, unwritten. */
    private readonly rows: Int32Array,
    private readonly rowCount: number,
  ) {
    this.tablePages = Math.ceil(buckets.length / WORDS_PER_PAGE)
    this.pageCount = this.tablePages + Math.ceil((rowCount * WORDS_PER_DIGEST) / WORDS_PER_PAGE)
  }

  // Read straight from the string, and the rows only once the buckets are done: a copy of the words
  // into an array, or the rows loaded up front, made a lookup among 100,000 keys measurably (about
  // 0.5-1 ns) slower than among one, which the timing check sees.
  find(digest: string): number {
    if (this.pagesTouched < this.pageCount) this.touchPages()
    const { buckets, mask } = this
    const one = (word(digest, 0) & mask) * INTS_PER_BUCKET
    const other = (word(digest, 4) & mask) * INTS_PER_BUCKET
    const tag = word(digest, 8) | 0
    let found = NOT_FOUND
    // Every slot of both buckets is read, match or not: the work does not depend on the contents.
    for (let slot = 0; slot < INTS_PER_BUCKET; slot += 2) {
      if (buckets[one + slot] === tag && (buckets[one + slot + 1] as number) > 0) found = (buckets[one + slot + 1] as number) - 1
      if (buckets[other + slot] === tag && (buckets[other + slot + 1] as number) > 0) found = (buckets[other + slot + 1] as number) - 1
    }
    // A miss reads a row as well, one the digest picks: the same kind of memory access as a hit.
    const at = (found === NOT_FOUND ? word(digest, 12) % this.rowCount : found) * WORDS_PER_DIGEST
    const rows = this.rows
    // All eight words compared and the differences ORed, whatever differs: the time does not say
    // where they differ (timingSafeEqual's way, without copying both sides into buffers).
    let difference = 0
    for (let i = 0; i < WORDS_PER_DIGEST; i++) difference |= (rows[at + i] as number) ^ word(digest, i * 4)
    return difference === 0 && found !== NOT_FOUND ? found : NOT_FOUND
  }

  /** Not constant-time: for the keys file's own entries (a reload), never for a credential. */
  findWords(words: Int32Array): number {
    const tag = words[2] as number
    for (const bucket of [(words[0] as number) & this.mask, (words[1] as number) & this.mask]) {
      for (let slot = bucket * INTS_PER_BUCKET; slot < (bucket + 1) * INTS_PER_BUCKET; slot += 2) {
        const row = (this.buckets[slot + 1] as number) - 1
        if (row >= 0 && this.buckets[slot] === tag && this.sameRow(row, words)) return row
      }
    }
    return NOT_FOUND
  }

  private sameRow(row: number, words: Int32Array): boolean {
    for (let w = 0; w < WORDS_PER_DIGEST; w++) if (this.rows[row * WORDS_PER_DIGEST + w] !== words[w]) return false
    return true
  }

  /**
   * A page never written since it was allocated maps to the kernel's one zero page, which stays in
   * the CPU caches: lookups landing there would be faster than lookups in real data, so a store of
   * one key would answer faster than one of 100,000. Every page must become the index's own, which
   * takes a write to each: 3 ms of page faults for the smallest index. Rather than before the
   * first answer, that is done a few pages per lookup over the first few dozen lookups. Each
   * write adds zero to a word in place (Atomics, so no compiler can drop it as doing nothing).
   */
  private touchPages(): void {
    const end = Math.min(this.pageCount, this.pagesTouched + PAGES_PER_LOOKUP)
    for (let page = this.pagesTouched; page < end; page++) {
      if (page < this.tablePages) Atomics.add(this.buckets, page * WORDS_PER_PAGE, 0)
      else Atomics.add(this.rows, (page - this.tablePages) * WORDS_PER_PAGE, 0)
    }
    this.pagesTouched = end
  }
}

/**
 * The bucket table: a slot holds a digest's tag and its row plus one; 0 there means empty.
 * Undefined: the table is too small (grow it); a pair of rows: the same digest twice.
 *
 * Digests are placed in the order of their first bucket, so that the table is written from one
 * end to the other instead of at a million random places (a cache miss each). Then two digests
 * with one tag, found by sorting the tags, must not be where a lookup of the other reads: it
 * could take one for the other. Both are as unlikely as they sound; either means a bigger table.
 */
function fillTable(rows: DigestRows, bucketCount: number): Int32Array | { duplicate: [number, number] } | undefined {
  const count = rows.count
  const mask = bucketCount - 1
  const firsts = new Uint32Array(count)
  const tags = new Uint32Array(count)
  for (let row = 0; row < count; row++) {
    firsts[row] = rows.word(row, 0) & mask
    tags[row] = rows.word(row, 2)
  }
  const table = new Int32Array(bucketCount * INTS_PER_BUCKET)
  // A table that fits in the CPU's caches is written in row order: the sort would cost more than the misses.
  if (bucketCount <= SORTED_FILL_ABOVE) {
    for (let row = 0; row < count; row++) if (!place(table, row, firsts[row] as number, tags[row] as number, rows, mask)) return undefined
    return tagsApart(rows, tags, table, mask) ?? table
  }
  // The tags travel with the sort: the loop below then reads nothing at random but the rare second bucket.
  const { order, sorted, carried } = radixSort(firsts, count, tags)
  for (let i = 0; i < count; i++) {
    if (!place(table, order[i] as number, sorted[i] as number, (carried as Uint32Array)[i] as number, rows, mask)) return undefined
  }
  return tagsApart(rows, tags, table, mask) ?? table
}

/** A duplicate digest, or undefined for two digests of one tag that a lookup could confuse; the table itself when neither. */
function tagsApart(rows: DigestRows, tags: Uint32Array, table: Int32Array, mask: number): { duplicate: [number, number] } | undefined | null {
  let outcome: { duplicate: [number, number] } | undefined | null = null
  const bucketOf = (row: number) => {
    const first = (rows.word(row, 0) & mask) * INTS_PER_BUCKET
    for (let slot = 1; slot < INTS_PER_BUCKET; slot += 2) if (table[first + slot] === row + 1) return first
    return (rows.word(row, 1) & mask) * INTS_PER_BUCKET
  }
  const reads = (row: number, bucket: number) => bucket === (rows.word(row, 0) & mask) * INTS_PER_BUCKET || bucket === (rows.word(row, 1) & mask) * INTS_PER_BUCKET
  forEachCollision(tags, rows.count, (group) => {
    for (let a = 0; a < group.length && outcome === null; a++) {
      for (let b = a + 1; b < group.length && outcome === null; b++) {
        const [x, y] = [group[a] as number, group[b] as number]
        if (rows.sameAs(x, y)) outcome = { duplicate: [x, y] }
        else if (reads(x, bucketOf(y)) || reads(y, bucketOf(x))) outcome = undefined
      }
    }
  })
  return outcome
}

/** Puts `row` in its first bucket, or its second; false when both are full. */
function place(table: Int32Array, row: number, firstBucket: number, tag: number, rows: DigestRows, mask: number): boolean {
  let free = freeSlot(table, firstBucket * INTS_PER_BUCKET)
  if (free === NOT_FOUND) free = freeSlot(table, (rows.word(row, 1) & mask) * INTS_PER_BUCKET)
  if (free === NOT_FOUND) return false
  table[free] = tag | 0
  table[free + 1] = row + 1
  return true
}

function freeSlot(table: Int32Array, bucket: number): number {
  for (let slot = 0; slot < INTS_PER_BUCKET; slot += 2) if (table[bucket + slot + 1] === 0) return bucket + slot
  return NOT_FOUND
}
