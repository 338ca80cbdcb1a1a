/**
 * A key set as packed columns, whatever its size: digests as rows of words (digest-index.ts), ids
 * as bytes in a few buffers, expiry, rules and limits as typed columns (made only when some key has
 * one), and a record built only for the key a lookup found. About 70 bytes a key, where an object
 * and strings per key took 600. Pure: no I/O.
 */
import { ByteStrings, Column } from './columns.js'
import { indexDigestRows, NO_INDEX, repeatedDigest, type DigestIndex } from './digest-index.js'
import { DigestRows } from './digest-rows.js'
import { digestOf, MAX_KEY_LENGTH } from '../keys/entry-check.js'
import type { Policy } from '../keys/policy.js'
import type { KeyRecord, KeyStore } from '../keys/store.js'
import { rateLimitFor, type RateLimit } from '../limits/rate-limit.js'

/** An entry that passed every check, before it becomes a row (or is found to be one already). */
export interface CheckedEntry {
  index: number
  idBytes: Buffer
  idStart: number
  idLength: number
  /** SHA-256 of the key, as 32 latin1 characters (the fast path leaves it in `words` instead). */
  digest: string | undefined
  expiresAtMs: number
  policyCode: number
  limitCode: number
  plainText: boolean
}

/** Rules and limits: code 0 is "the defaults'", 1 (limits only) "none", the rest index `policies`/`limits`. */
export const INHERIT = 0
export const NO_LIMIT = 1

/** The columns of a key set under construction, filled row by row (validation is the caller's). */
export class KeyColumns {
  readonly digests = new DigestRows()
  readonly ids = new ByteStrings()
  readonly expiry = new Column((n) => new Float64Array(n), Infinity)
  readonly policyCodes = new Column((n) => new Uint32Array(n), INHERIT)
  readonly limitCodes = new Column((n) => new Uint32Array(n), INHERIT)
  readonly policies: Array<Policy | undefined> = [undefined]
  readonly limits: Array<RateLimit | undefined> = [undefined, undefined]
  /** What each code was made from (JSON), to tell whether an entry of another file is the same. */
  readonly policyKeys: string[] = ['']
  readonly limitKeys: string[] = ['', 'null']
  /** 1 for a plain-text key (`key`, not `sha256`): what `keygate check` warns about. */
  readonly plainText = new Column((n) => new Uint8Array(n), 0)
  plainTextCount = 0
  /** Rows filled so far; a row's digest is added first and counts it. */
  get count(): number {
    return this.digests.count
  }
}

/** A finished key set: its records on demand, and what findings and warnings need. */
export class KeyTable {
  private constructor(
    private readonly columns: KeyColumns,
    private readonly index: DigestIndex,
    private readonly defaultPolicy: Policy | undefined,
    private readonly defaultLimit: RateLimit | undefined,
  ) {}

  /** Indexes the columns; a digest given twice is reported as its two rows instead. */
  static build(columns: KeyColumns, defaults: { policy?: Policy; limit?: RateLimit }, indexed = true): KeyTable | { duplicate: [number, number] } {
    if (!indexed) {
      // Only checked (`keygate check`): the repeats an index would find, without the index.
      const duplicate = repeatedDigest(columns.digests)
      return duplicate === undefined ? new KeyTable(columns, NO_INDEX, defaults.policy, defaults.limit) : { duplicate }
    }
    const built = indexDigestRows(columns.digests)
    if ('duplicate' in built) return built
    return new KeyTable(columns, built.index, defaults.policy, defaults.limit)
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
    return { id, expiresAtMs: columns.expiry.get(row), policy: this.policyOf(row), rateLimit: limit === undefined ? undefined : rateLimitFor(limit, id) }
  }

  expiresAt(row: number): number {
    return this.columns.expiry.get(row)
  }

  policyOf(row: number): Policy | undefined {
    const code = this.columns.policyCodes.get(row)
    return code === INHERIT ? this.defaultPolicy : this.columns.policies[code]
  }

  hasLimit(row: number): boolean {
    return this.limitOf(row) !== undefined
  }

  /** The limit row `row` has (for any id: see `rateLimitFor`). */
  private limitOf(row: number): RateLimit | undefined {
    const code = this.columns.limitCodes.get(row)
    return code === INHERIT ? this.defaultLimit : this.columns.limits[code]
  }

  isPlainText(row: number): boolean {
    return this.columns.plainText.get(row) === 1
  }

  get plainTextCount(): number {
    return this.columns.plainTextCount
  }

  /** The same keys, with other defaults for those without rules or a limit of their own (a reload's). */
  withDefaults(defaults: { policy?: Policy; limit?: RateLimit }): KeyTable {
    return new KeyTable(this.columns, this.index, defaults.policy, defaults.limit)
  }

  /** Whether row `row` is the entry `entry` of another set (the same id, digest aside, and the same fields). */
  sameEntry(row: number, entry: CheckedEntry, other: KeyColumns): boolean {
    const { columns } = this
    return (
      columns.ids.equals(row, entry.idBytes, entry.idStart, entry.idLength) &&
      columns.expiry.get(row) === entry.expiresAtMs &&
      columns.plainText.get(row) === (entry.plainText ? 1 : 0) &&
      columns.policyKeys[columns.policyCodes.get(row)] === other.policyKeys[entry.policyCode] &&
      columns.limitKeys[columns.limitCodes.get(row)] === other.limitKeys[entry.limitCode]
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
    return row === -1 ? undefined : this.table.record(row)
  }
}

/** The digest a store looks `credential` up by; undefined when no key can be it. */
export function digestToLookUp(credential: string): string | undefined {
  // Longer than any valid key: no key can match, and hashing 100 KB would be wasted work.
  if (typeof credential !== 'string' || credential.length === 0 || credential.length > MAX_KEY_LENGTH) return undefined
  return digestOf(credential)
}

