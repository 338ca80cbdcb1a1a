/**
 * SHA-256 digests as rows of eight 32-bit words in one growing array: what the digest index
 * (digest-index.ts) is built over and reads on every lookup. Pure.
 */
export const MIN_ROWS = 1 << 17 // 4 MiB of rows: digests first, then rows no digest is in
const DIGEST_BYTES = 32
export const WORDS_PER_DIGEST = DIGEST_BYTES / 4

const HEX = new Int8Array(256).fill(-1)
for (let c = 0; c < 16; c++) HEX['0123456789abcdef'.charCodeAt(c)] = c

/**
 * Digests as rows of eight words, in the order they are added (as `word` reads them, so byte order
 * does not matter), in one array. One array, not chunks: a lookup that first had to pick a chunk
 * was measurably slower in a set of 100,000 keys than in a set of one (the timing check saw about
 * 1 ns). It starts at MIN_ROWS rows and doubles; the room past the last row is never written,
 * so it costs address space, not memory.
 */
export class DigestRows {
  words = new Int32Array(MIN_ROWS * WORDS_PER_DIGEST)
  count = 0

  /** Adds a digest given as eight words. */
  addWords(words: Int32Array): void {
    this.room().set(words, this.count * WORDS_PER_DIGEST)
    this.count++
  }

  /** Adds a digest given as 32 latin1 characters. */
  addLatin1(digest: string): void {
    const words = this.room()
    const at = this.count * WORDS_PER_DIGEST
    for (let w = 0; w < WORDS_PER_DIGEST; w++) words[at + w] = word(digest, w * 4)
    this.count++
  }

  /** Word `w` (0-7) of row `row`. */
  word(row: number, w: number): number {
    return (this.words[row * WORDS_PER_DIGEST + w] as number) >>> 0
  }

  sameAs(row: number, other: number): boolean {
    for (let w = 0; w < WORDS_PER_DIGEST; w++) if (this.word(row, w) !== this.word(other, w)) return false
    return true
  }

  /** The array, with room for one more row. */
  private room(): Int32Array {
    if ((this.count + 1) * WORDS_PER_DIGEST > this.words.length) {
      const grown = new Int32Array(this.words.length * 2)
      grown.set(this.words)
      this.words = grown
    }
    return this.words
  }
}

/** Decodes 64 lowercase hex digits at `bytes[start]` into eight words (`DigestRows`' layout); false when they are not hex digits. */
export function hexToWords(bytes: Buffer | Uint8Array, start: number, into: Int32Array): boolean {
  let bad = 0
  for (let w = 0; w < WORDS_PER_DIGEST; w++) {
    let value = 0
    for (let b = 0; b < 4; b++) {
      const i = start + (w * 4 + b) * 2
      const high = HEX[bytes[i] as number] as number
      const low = HEX[bytes[i + 1] as number] as number
      bad |= high | low // -1 when either is not a hex digit
      value |= ((high << 4) | low) << (b * 8)
    }
    into[w] = value
  }
  return bad >= 0
}

/** Four bytes of a digest string as an unsigned integer. */
export function word(digest: string, at: number): number {
  return (digest.charCodeAt(at) | (digest.charCodeAt(at + 1) << 8) | (digest.charCodeAt(at + 2) << 16) | (digest.charCodeAt(at + 3) << 24)) >>> 0
}
