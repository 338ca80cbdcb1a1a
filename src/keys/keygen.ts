/** Key generation: `kg_` + 40 random base62 characters + a 6-character base62 CRC32 checksum. */
import { randomBytes } from 'node:crypto'

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
export const KEY_PREFIX = 'kg_'
const RANDOM_LENGTH = 40
const CHECKSUM_LENGTH = 6 // 62^6 > 2^32: every CRC32 fits
// Bytes from 248 up are thrown away: 248 = 4 * 62, so byte % 62 is uniform (no modulo bias).
const UNBIASED_LIMIT = 248
const KEY_SHAPE = /^kg_([0-9A-Za-z]{40})([0-9A-Za-z]{6})$/

/** A new random key, such as `kg_` + 46 base62 characters. */
export function generateKey(): string {
  const random = randomBase62(RANDOM_LENGTH)
  return `${KEY_PREFIX}${random}${checksumOf(random)}`
}

/** True when `key` has the keygate shape and its checksum matches: tells a typo or a real leak from noise. */
export function hasValidChecksum(key: string): boolean {
  const match = KEY_SHAPE.exec(key)
  return match !== null && checksumOf(match[1] ?? '') === match[2]
}

function randomBase62(length: number): string {
  let out = ''
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < UNBIASED_LIMIT) out += BASE62[byte % 62]
      if (out.length === length) break
    }
  }
  return out
}

function checksumOf(text: string): string {
  let value = crc32(Buffer.from(text, 'latin1'))
  let out = ''
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[value % 62] + out
    value = Math.floor(value / 62)
  }
  return out
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

/** CRC-32 (IEEE 802.3, as zlib and PNG use), written out because `zlib.crc32` needs Node 22. */
export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff
  for (const byte of bytes) crc = (CRC_TABLE[(crc ^ byte) & 0xff] as number) ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}
