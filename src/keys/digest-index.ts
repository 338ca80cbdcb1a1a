/**
 * A digest index whose lookups touch the same memory whatever the number of keys: two buckets of a
 * table of at least 2 MiB, then one 32-byte row of at least 4 MiB of digests. A `Map` of 100,000
 * digests misses the CPU caches where one of a single digest hits them, which made lookup time
 * tell (roughly) how many keys are loaded. Pure: no I/O.
 */
const SLOTS_PER_BUCKET = 8 // (tag, row + 1) pairs of int32: a bucket is one 64-byte cache line
const INTS_PER_BUCKET = SLOTS_PER_BUCKET * 2
const MIN_BUCKETS = 1 << 15 // 2 MiB of table: room for about 150,000 keys before it grows
const MIN_ROWS = 1 << 17 // 4 MiB of rows: digests first, then rows no digest is in
const DIGEST_BYTES = 32
const WORDS_PER_DIGEST = DIGEST_BYTES / 4
const NOT_FOUND = -1
const WORDS_PER_PAGE = 4096 / 4
// See FixedFootprintIndex.touchPages: 1,536 pages for the smallest index, done in 48 lookups.
const PAGES_PER_LOOKUP = 32

export interface DigestIndex {
  /** The position of `digest` (32 latin1 characters) in the list given, or -1; always the same work. */
  find(digest: string): number
}

/** Indexes distinct SHA-256 digests (32-character latin1 strings). */
export function createDigestIndex(digests: readonly string[]): DigestIndex {
  let bucketCount = MIN_BUCKETS
  while (bucketCount * SLOTS_PER_BUCKET < digests.length * 2) bucketCount *= 2
  let table = fillTable(digests, bucketCount)
  // A full pair of buckets or two tags alike (both about as likely as a lottery win): grow and retry.
  while (table === undefined) table = fillTable(digests, (bucketCount *= 2))
  return new FixedFootprintIndex(table, bucketCount - 1, fillRows(digests))
}

// A class, not a closure per index: every index shares one `find`, so a call site that sees two
// indexes stays monomorphic and neither is faster for having been seen first.
class FixedFootprintIndex implements DigestIndex {
  private readonly rowCount: number
  /** Pages of the table, then of the rows, that lookups have written to so far. */
  private pagesTouched = 0
  private readonly tablePages: number
  private readonly pageCount: number

  constructor(
    private readonly buckets: Int32Array,
    private readonly mask: number,
    private readonly rows: Int32Array,
  ) {
    this.rowCount = rows.length / WORDS_PER_DIGEST
    this.tablePages = Math.ceil(buckets.length / WORDS_PER_PAGE)
    this.pageCount = this.tablePages + Math.ceil(rows.length / WORDS_PER_PAGE)
  }

  find(digest: string): number {
    if (this.pagesTouched < this.pageCount) this.touchPages()
    const { buckets, mask } = this
    const first = (word(digest, 0) & mask) * INTS_PER_BUCKET
    const second = (word(digest, 4) & mask) * INTS_PER_BUCKET
    const tag = word(digest, 8) | 0
    let found = NOT_FOUND
    // Every slot of both buckets is read, match or not: the work does not depend on the contents.
    for (let slot = 0; slot < INTS_PER_BUCKET; slot += 2) {
      if (buckets[first + slot] === tag && (buckets[first + slot + 1] as number) > 0) found = (buckets[first + slot + 1] as number) - 1
      if (buckets[second + slot] === tag && (buckets[second + slot + 1] as number) > 0) found = (buckets[second + slot + 1] as number) - 1
    }
    // A miss reads a row as well, one the digest picks: the same kind of memory access as a hit.
    const row = found === NOT_FOUND ? word(digest, 12) % this.rowCount : found
    return sameDigest(this.rows, row * WORDS_PER_DIGEST, digest) && found !== NOT_FOUND ? found : NOT_FOUND
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
 * Whether the row at `at` holds `digest`: all eight words are compared, whatever differs, and
 * the differences are ORed together, so the time says nothing about where they differ. (The
 * same as timingSafeEqual, without copying both sides into buffers first.)
 */
function sameDigest(rows: Int32Array, at: number, digest: string): boolean {
  let difference = 0
  for (let i = 0; i < WORDS_PER_DIGEST; i++) difference |= (rows[at + i] as number) ^ word(digest, i * 4)
  return difference === 0
}

/** Four bytes of a digest string as an unsigned integer. */
function word(digest: string, at: number): number {
  return (digest.charCodeAt(at) | (digest.charCodeAt(at + 1) << 8) | (digest.charCodeAt(at + 2) << 16) | (digest.charCodeAt(at + 3) << 24)) >>> 0
}

/** The bucket table: a slot holds a digest's tag and its row plus one; 0 there means empty. */
function fillTable(digests: readonly string[], bucketCount: number): Int32Array | undefined {
  const table = new Int32Array(bucketCount * INTS_PER_BUCKET)
  const mask = bucketCount - 1
  for (let row = 0; row < digests.length; row++) {
    const digest = digests[row] as string
    const tag = word(digest, 8) | 0
    const candidates = [(word(digest, 0) & mask) * INTS_PER_BUCKET, (word(digest, 4) & mask) * INTS_PER_BUCKET]
    if (candidates.some((bucket) => hasTag(table, bucket, tag))) return undefined
    const free = candidates.map((bucket) => freeSlot(table, bucket)).find((slot) => slot !== NOT_FOUND)
    if (free === undefined) return undefined
    table[free] = tag
    table[free + 1] = row + 1
  }
  return table
}

function hasTag(table: Int32Array, bucket: number, tag: number): boolean {
  for (let slot = 0; slot < INTS_PER_BUCKET; slot += 2) if (table[bucket + slot + 1] !== 0 && table[bucket + slot] === tag) return true
  return false
}

function freeSlot(table: Int32Array, bucket: number): number {
  for (let slot = 0; slot < INTS_PER_BUCKET; slot += 2) if (table[bucket + slot + 1] === 0) return bucket + slot
  return NOT_FOUND
}

/** The digests as rows of eight words (as `word` reads them, so byte order does not matter); the rest stay zero. */
function fillRows(digests: readonly string[]): Int32Array {
  const rows = new Int32Array(Math.max(MIN_ROWS, digests.length) * WORDS_PER_DIGEST)
  digests.forEach((digest, row) => {
    for (let i = 0; i < WORDS_PER_DIGEST; i++) rows[row * WORDS_PER_DIGEST + i] = word(digest, i * 4)
  })
  return rows
}
