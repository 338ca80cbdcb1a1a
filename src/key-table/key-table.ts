/**
 * A key set as packed columns, whatever its size: digests as rows of words (digest-index.ts), ids
 * as bytes in a few buffers, expiry, rules, limits and plans as typed columns (made only when
 * some key has one), earlier keys (rotations) by digest, and a record built only for the key a
 * lookup found. About 70 bytes a key, where an object
 * and strings per key took 600. Pure: no I/O.
 */
import type { ByteStrings } from './columns.js'
import { indexDigestRows, NO_INDEX, repeatedDigest, type DigestIndex } from './digest-index.js'
import { INHERIT, type CheckedEntry, type CompiledDefaults, type KeyColumns } from './key-columns.js'
import { digestOf, MAX_KEY_LENGTH } from '../keys/entry-check.js'
import type { AddressSet } from '../keys/address-set.js'
import type { Policy } from '../keys/policy.js'
import type { KeyRecord, KeyStore } from '../keys/store.js'
import { quotaFor, type Quota } from '../limits/quota.js'
import { rateLimitFor, type RateLimit } from '../limits/rate-limit.js'

/** A finished key set: its records on demand, and what findings and warnings need. */
export class KeyTable {
  private constructor(
    private readonly columns: KeyColumns,
    private readonly index: DigestIndex,
    private readonly defaults: CompiledDefaults,
  ) {}

  /** Indexes the columns; a digest given twice is reported as its two rows instead. */
  static build(columns: KeyColumns, defaults: CompiledDefaults, indexed = true): KeyTable | { duplicate: [number, number] } {
    if (!indexed) {
      // Only checked (`keygate check`): the repeats an index would find, without the index.
      const duplicate = repeatedDigest(columns.digests)
      return duplicate === undefined ? new KeyTable(columns, NO_INDEX, defaults) : { duplicate }
    }
    const built = indexDigestRows(columns.digests)
    if ('duplicate' in built) return built
    return new KeyTable(columns, built.index, defaults)
  }

  get size(): number {
    return this.columns.count
  }

  /** The row of the key whose SHA-256 is `digest`, or -1; the same work whatever the set holds. */
  find(digest: string): number {
    return this.index.find(digest)
  }

  /** `find` for a digest given as eight words (DigestRows' layout); not constant-time: for a reload's entries. */
  findWords(words: Int32Array): number {
    return this.index.findWords(words)
  }

  id(row: number): string {
    return this.columns.ids.get(row)
  }

  idHash(row: number): number {
    return this.columns.ids.hash(row)
  }

  /** Whether row `row` has the id of row `otherRow` of `other`. */
  sameId(row: number, other: ByteStrings, otherRow: number): boolean {
    return this.columns.ids.equalsRow(row, other, otherRow)
  }

  record(row: number): KeyRecord {
    const { columns } = this
    const id = columns.ids.get(row)
    const limit = this.limitOf(row)
    const quota = this.quotaOf(row)
    return {
      id,
      expiresAtMs: columns.expiry.get(row),
      policy: this.policyOf(row),
      rateLimit: limit === undefined ? undefined : rateLimitFor(limit, id),
      quota: quota === undefined ? undefined : quotaFor(quota, id),
      addresses: this.addressesOf(row),
    }
  }

  /** The record of an earlier key of an entry (a rotation's): the entry's, until `until`. */
  previousRecord(digest: string): KeyRecord | undefined {
    const found = this.columns.previous.get(digest)
    if (found === undefined) return undefined
    const record = this.record(found.row)
    return { ...record, expiresAtMs: Math.min(record.expiresAtMs, found.untilMs), previous: true }
  }

  /** Earlier keys, for findings: each with its entry's id and when it stops working. */
  *previousKeys(): Generator<{ id: string; untilMs: number }> {
    for (const { row, untilMs } of this.columns.previous.values()) yield { id: this.id(row), untilMs }
  }

  quotaOf(row: number): Quota | undefined {
    return this.columns.quotas.of(row, this.defaults.quota)
  }

  addressesOf(row: number): AddressSet | undefined {
    return this.columns.addressSets.of(row, this.defaults.addresses)
  }

  expiresAt(row: number): number {
    return this.columns.expiry.get(row)
  }

  policyOf(row: number): Policy | undefined {
    const code = this.columns.policyCodes.get(row)
    return code === INHERIT ? this.defaults.policy : this.columns.policies[code]
  }

  hasLimit(row: number): boolean {
    return this.limitOf(row) !== undefined
  }

  /** The limit row `row` has (for any id: see `rateLimitFor`). */
  private limitOf(row: number): RateLimit | undefined {
    const code = this.columns.limitCodes.get(row)
    return code === INHERIT ? this.defaults.limit : this.columns.limits[code]
  }

  isPlainText(row: number): boolean {
    return this.columns.plainText.get(row) === 1
  }

  get plainTextCount(): number {
    return this.columns.plainTextCount
  }

  /** The same keys, with other defaults for those without rules or a limit of their own (a reload's). */
  withDefaults(defaults: CompiledDefaults): KeyTable {
    return new KeyTable(this.columns, this.index, defaults)
  }

  /** Whether row `row` is the entry `entry` of another set (the same id, digest aside, and the same fields). */
  sameEntry(row: number, entry: CheckedEntry, other: KeyColumns): boolean {
    const { columns } = this
    return (
      columns.ids.equals(row, entry.idBytes, entry.idStart, entry.idLength) &&
      columns.expiry.get(row) === entry.expiresAtMs &&
      columns.plainText.get(row) === (entry.plainText ? 1 : 0) &&
      columns.policyKeys[columns.policyCodes.get(row)] === other.policyKeys[entry.policyCode] &&
      columns.limitKeys[columns.limitCodes.get(row)] === other.limitKeys[entry.limitCode] &&
      columns.quotas.keys[columns.quotas.codes.get(row)] === other.quotas.keys[entry.quotaCode] &&
      columns.addressSets.keys[columns.addressSets.codes.get(row)] === other.addressSets.keys[entry.addressCode] &&
      entry.previous === undefined &&
      !columns.rowsWithPrevious.has(row)
    )
  }
}

// A class, so that every store shares one `lookup`: see FixedFootprintIndex.
export class DigestKeyStore implements KeyStore {
  constructor(
    /** The keys, for findings and warnings: see findings.ts. */
    readonly table: KeyTable,
    readonly publicPolicy: Policy | undefined,
  ) {}

  get size(): number {
    return this.table.size
  }

  lookup(credential: string): KeyRecord | undefined {
    const digest = digestToLookUp(credential)
    const row = digest === undefined ? -1 : this.table.find(digest)
    if (row !== -1) return this.table.record(row)
    return digest === undefined ? undefined : this.table.previousRecord(digest)
  }
}

/** The digest a store looks `credential` up by; undefined when no key can be it. */
export function digestToLookUp(credential: string): string | undefined {
  // Longer than any valid key: no key can match, and hashing 100 KB would be wasted work.
  if (typeof credential !== 'string' || credential.length === 0 || credential.length > MAX_KEY_LENGTH) return undefined
  return digestOf(credential)
}

