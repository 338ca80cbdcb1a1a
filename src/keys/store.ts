/** The key store: entries held as SHA-256 digests, looked up by digest (see digest-index.ts). Pure: no I/O. */
import { hash } from 'node:crypto'
import { createDigestIndex, type DigestIndex } from './digest-index.js'
import { compilePolicy, type Policy } from './policy.js'
import { compileRateLimit, type RateLimit, type RateLimitSpec } from '../limits/rate-limit.js'

/** One key as the embedding code or the keys file gives it: exactly one of `key` or `sha256`. */
export type KeyEntry =
  | { id: string; key: string; sha256?: undefined; expiresAt?: string | Date; allow?: string[]; rateLimit?: RateLimitSpec | null }
  | { id: string; sha256: string; key?: undefined; expiresAt?: string | Date; allow?: string[]; rateLimit?: RateLimitSpec | null }

/** What a successful lookup yields: never the key itself. */
export interface KeyRecord {
  readonly id: string
  /** Milliseconds since the epoch; `Infinity` when the key never expires. */
  readonly expiresAtMs: number
  /** The requests the key may make (its `allow` rules); undefined: every request. */
  readonly policy?: Policy
  /** The key's rate limit; undefined: none. */
  readonly rateLimit?: RateLimit
}

/** A set of keys that answers "which key is this credential?". */
export interface KeyStore {
  readonly size: number
  /** Requests that need no key (the keys file's `public` rules); undefined: none. */
  readonly publicPolicy?: Policy
  /** The record whose key is `credential`, or `undefined`. Never throws. */
  lookup(credential: string): KeyRecord | undefined
}

export const MAX_KEY_LENGTH = 4096
const VALID_KEY = /^[\x21-\x7e]{1,4096}$/
const VALID_ID = /^[A-Za-z0-9._:@-]{1,128}$/
const SHA256_HEX = /^[0-9a-f]{64}$/
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))?$/

/** True when `key` is 1 to 4096 visible ASCII characters (0x21-0x7E). */
export function isValidKey(key: string): boolean {
  return VALID_KEY.test(key)
}

/** True when `id` is 1 to 128 characters of `A-Z a-z 0-9 . _ : @ -`. */
export function isValidKeyId(id: string): boolean {
  return VALID_ID.test(id)
}

/** SHA-256 of the UTF-8 bytes of `value`, as a 32-character latin1 string (one character per byte). */
export function digestOf(value: string): string {
  return hash('sha256', value, 'binary') // 'binary' is latin1: one char per byte
}

/**
 * Builds a store from entries (and the rules of requests that need no key); throws a `TypeError`
 * naming the entry and field on bad input.
 */
export function createKeyStore(entries: readonly KeyEntry[], publicRules?: readonly string[]): KeyStore {
  const { store, problems } = tryCreateKeyStore(entries, publicRules)
  if (store === undefined) throw new TypeError(problems[0])
  return store
}

/** Like `createKeyStore`, but reports every problem (one message per bad entry) instead of the first. */
export function tryCreateKeyStore(entries: readonly KeyEntry[], publicRules?: readonly string[]): { store?: KeyStore; problems: string[] } {
  if (!Array.isArray(entries)) return { problems: ['keys must be an array of { id, key } or { id, sha256 } entries'] }
  let publicPolicy: Policy | undefined
  try {
    publicPolicy = publicRules === undefined ? undefined : compilePolicy(publicRules)
  } catch (error) {
    return { problems: [(error as Error).message.replace(/^allow\[/, 'public[')] }
  }
  const byDigest = new Map<string, KeyRecord>()
  const ids = new Set<string>()
  const problems: string[] = []
  entries.forEach((entry, index) => {
    try {
      const id = idOf(entry, index)
      if (ids.has(id)) throw new TypeError(`${where(index, id)}: id is used by an earlier entry`)
      ids.add(id)
      const digest = digestOfEntry(entry, index)
      const record: KeyRecord = Object.freeze({ id, expiresAtMs: parseExpiry(entry.expiresAt, index, id), policy: policyOf(entry.allow, index, id), rateLimit: rateLimitOf(entry.rateLimit, index, id) })
      const clash = byDigest.get(digest)
      if (clash !== undefined) throw new TypeError(`${where(index, record.id)}: same key as entry "${clash.id}"`)
      byDigest.set(digest, record)
    } catch (error) {
      problems.push((error as Error).message)
    }
  })
  if (problems.length > 0) return { problems }
  return { store: new DigestKeyStore(createDigestIndex([...byDigest.keys()]), [...byDigest.values()], publicPolicy), problems }
}

// A class, so that every store shares one `lookup`: see FixedFootprintIndex.
class DigestKeyStore implements KeyStore {
  readonly size: number

  constructor(
    private readonly index: DigestIndex,
    private readonly records: readonly KeyRecord[],
    readonly publicPolicy: Policy | undefined,
  ) {
    this.size = records.length
  }

  lookup(credential: string): KeyRecord | undefined {
    // Longer than any valid key: no key can match, and hashing 100 KB would be wasted work.
    if (typeof credential !== 'string' || credential.length === 0 || credential.length > MAX_KEY_LENGTH) return undefined
    const row = this.index.find(digestOf(credential))
    return row === -1 ? undefined : this.records[row]
  }
}

function idOf(entry: KeyEntry, index: number): string {
  if (entry === null || typeof entry !== 'object') throw new TypeError(`keys[${index}]: must be an object`)
  if (typeof entry.id !== 'string' || !isValidKeyId(entry.id)) {
    throw new TypeError(`keys[${index}]: id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -`)
  }
  return entry.id
}

function digestOfEntry(entry: KeyEntry, index: number): string {
  const hasKey = entry.key !== undefined
  const hasHash = entry.sha256 !== undefined
  if (hasKey === hasHash) throw new TypeError(`${where(index, entry.id)}: needs exactly one of "key" or "sha256"`)
  if (hasKey) {
    if (typeof entry.key !== 'string' || !isValidKey(entry.key)) {
      throw new TypeError(`${where(index, entry.id)}: key must be 1 to 4096 visible ASCII characters (0x21-0x7E)`)
    }
    return digestOf(entry.key)
  }
  if (typeof entry.sha256 !== 'string' || !SHA256_HEX.test(entry.sha256)) {
    throw new TypeError(`${where(index, entry.id)}: sha256 must be 64 lowercase hex characters`)
  }
  return Buffer.from(entry.sha256, 'hex').toString('latin1')
}

function parseExpiry(value: string | Date | undefined, index: number, id: string): number {
  if (value === undefined) return Infinity
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' && isRealDate(value) ? Date.parse(value) : NaN
  if (Number.isNaN(ms)) {
    throw new TypeError(`${where(index, id)}: expiresAt must be an ISO-8601 date, such as 2027-06-30T00:00:00Z`)
  }
  return ms
}

/** An ISO-8601 date whose day exists: `Date.parse` would roll 2027-02-31 over into March. */
function isRealDate(value: string): boolean {
  const match = ISO_8601.exec(value)
  if (match === null) return false
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])]
  const date = new Date(Date.UTC(year, month - 1, day))
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day
}

function policyOf(allow: string[] | undefined, index: number, id: string): Policy | undefined {
  if (allow === undefined) return undefined
  try {
    return compilePolicy(allow)
  } catch (error) {
    throw new TypeError(`${where(index, id)}: ${(error as Error).message}`)
  }
}

function rateLimitOf(spec: RateLimitSpec | null | undefined, index: number, id: string): RateLimit | undefined {
  if (spec === undefined || spec === null) return undefined
  try {
    return compileRateLimit(spec, id)
  } catch (error) {
    throw new TypeError(`${where(index, id)}: ${(error as Error).message}`)
  }
}

function where(index: number, id: string): string {
  return `keys[${index}] (id "${id}")`
}
