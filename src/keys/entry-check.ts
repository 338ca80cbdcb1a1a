/**
 * Checks of one key entry, field by field, with messages that name the entry and never quote a
 * key; and the same checks on an entry's bytes where they lie in the file (the fast path). Pure.
 */
import { hash } from 'node:crypto'
import { compilePolicy, type Policy } from './policy.js'
import { compileRateLimit, type RateLimit, type RateLimitSpec } from '../limits/rate-limit.js'
import { compileQuota, type Quota, type QuotaSpec } from '../limits/quota.js'
import { compileAddressSet, type AddressSet } from './address-set.js'

/** What an entry may have besides its key: its plan (rules, limits, addresses, earlier keys). */
interface EntryFields {
  id: string
  expiresAt?: string | Date
  allow?: string[]
  rateLimit?: RateLimitSpec | null
  quota?: QuotaSpec | null
  ips?: string[] | null
  /** Earlier keys of the entry (a rotation's), each valid until its `until`. */
  previous?: Array<{ sha256: string; until: string | Date }>
}

/** One key as the embedding code or the keys file gives it: exactly one of `key` or `sha256`. */
export type KeyEntry = EntryFields & ({ key: string; sha256?: undefined } | { sha256: string; key?: undefined })

/** An earlier key of an entry: its digest (as `digestOf` gives it) and when it stops working. */
export interface PreviousKey {
  digest: string
  untilMs: number
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

/** The id of an entry, or a `TypeError` naming it. */
export function idOf(entry: KeyEntry, index: number): string {
  if (entry === null || typeof entry !== 'object') throw new TypeError(`keys[${index}]: must be an object`)
  if (typeof entry.id !== 'string' || !isValidKeyId(entry.id)) {
    throw new TypeError(`keys[${index}]: id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -`)
  }
  return entry.id
}

export function digestOfEntry(entry: KeyEntry, index: number): string {
  const hasKey = entry.key !== undefined
  const hasHash = entry.sha256 !== undefined
  if (hasKey === hasHash) throw new TypeError(`${where(index, entry.id)}: needs exactly one of "key" or "sha256"`)
  if (hasKey) {
    if (typeof entry.key !== 'string' || !isValidKey(entry.key)) {
      throw new TypeError(`${where(index, entry.id)}: key must be 1 to 4096 visible ASCII characters (0x21-0x7E)`)
    }
    return digestOf(entry.key)
  }
  return digestOfHex(entry.sha256, `${where(index, entry.id)}: sha256`)
}

function digestOfHex(hex: unknown, label: string): string {
  if (typeof hex !== 'string' || !SHA256_HEX.test(hex)) throw new TypeError(`${label} must be 64 lowercase hex characters`)
  return Buffer.from(hex, 'hex').toString('latin1')
}

export function parseExpiry(value: string | Date | undefined, index: number, id: string): number {
  if (value === undefined) return Infinity
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' && isRealDate(value) ? Date.parse(value) : NaN
  if (Number.isNaN(ms)) {
    throw new TypeError(`${where(index, id)}: expiresAt must be an ISO-8601 date, such as 2027-06-30T00:00:00Z`)
  }
  return ms
}

/** An ISO-8601 date whose day exists: `Date.parse` would roll 2027-02-31 over into March. */
export function isRealDate(value: string): boolean {
  const match = ISO_8601.exec(value)
  if (match === null) return false
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])]
  const date = new Date(Date.UTC(year, month - 1, day))
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day
}

export function policyOf(allow: string[] | undefined, index: number, id: string): Policy | undefined {
  if (allow === undefined) return undefined
  return named(index, id, () => compilePolicy(allow))
}

export function rateLimitOf(spec: RateLimitSpec | null | undefined, index: number, id: string): RateLimit | undefined {
  if (spec === undefined || spec === null) return undefined
  return named(index, id, () => compileRateLimit(spec, '')) // for any id: see rateLimitFor
}

export function quotaOf(spec: QuotaSpec | null | undefined, index: number, id: string): Quota | undefined {
  if (spec === undefined || spec === null) return undefined
  return named(index, id, () => compileQuota(spec))
}

export function addressSetOf(list: string[] | null | undefined, index: number, id: string): AddressSet | undefined {
  if (list === undefined || list === null) return undefined
  return named(index, id, () => compileAddressSet(list))
}

// A rotation keeps a few earlier keys; more is a file that never drops them.
export const MAX_PREVIOUS = 16

/** The entry's earlier keys: `[{ "sha256": "<hex>", "until": "<ISO-8601>" }]`. */
export function previousOf(list: unknown, index: number, id: string): PreviousKey[] | undefined {
  if (list === undefined) return undefined
  const label = where(index, id)
  if (!Array.isArray(list) || list.length > MAX_PREVIOUS) throw new TypeError(`${label}: previous must be an array of at most ${MAX_PREVIOUS} { "sha256", "until" } entries`)
  return list.map((item: unknown, i) => {
    const at = `${label}: previous[${i}]`
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new TypeError(`${at} must be an object { "sha256": "<hex>", "until": "<ISO-8601>" }`)
    const { sha256, until, ...rest } = item as Record<string, unknown>
    if (Object.keys(rest).length > 0) throw new TypeError(`${at}: unknown field (allowed: sha256, until)`)
    const digest = digestOfHex(sha256, `${at}.sha256`)
    const untilMs = until instanceof Date ? until.getTime() : typeof until === 'string' && isRealDate(until) ? Date.parse(until) : NaN
    if (Number.isNaN(untilMs)) throw new TypeError(`${at}.until must be an ISO-8601 date, such as 2027-06-30T00:00:00Z`)
    return { digest, untilMs }
  })
}

function named<T>(index: number, id: string, compile: () => T): T {
  try {
    return compile()
  } catch (error) {
    throw new TypeError(`${where(index, id)}: ${(error as Error).message}`)
  }
}

export function where(index: number, id: string): string {
  return `keys[${index}] (id "${id}")`
}

/** Field names of the fast path, as bytes. */
export const FLAT_NAMES = { id: Buffer.from('id'), sha256: Buffer.from('sha256'), expiresAt: Buffer.from('expiresAt'), allow: Buffer.from('allow') }

/** Whether the bytes at `start` are `name` (whose length the caller has compared). */
export function isName(bytes: Buffer, start: number, name: Buffer): boolean {
  for (let k = 0; k < name.length; k++) if (bytes[start + k] !== name[k]) return false
  return true
}

/** Whether the bytes are an id: 1 to 128 of `A-Z a-z 0-9 . _ : @ -`. */
export function isIdBytes(bytes: Buffer, start: number, end: number): boolean {
  if (end <= start || end - start > 128) return false
  for (let i = start; i < end; i++) if (ID_BYTES[bytes[i] as number] !== 1) return false
  return true
}

const ID_BYTES = new Uint8Array(256)
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-') ID_BYTES[c.charCodeAt(0)] = 1

