/**
 * The columns of a key set under construction (key-set-builder.ts fills them, key-table.ts reads
 * them): one typed column per field, each made only when some row sets it. Pure.
 */
import { ByteStrings, Column } from './columns.js'
import { DigestRows } from './digest-rows.js'
import type { AddressSet } from '../keys/address-set.js'
import type { PreviousKey } from '../keys/entry-check.js'
import type { Policy } from '../keys/policy.js'
import type { Quota } from '../limits/quota.js'
import type { RateLimit } from '../limits/rate-limit.js'

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
  /** Codes of the plan's quota and allowlist (INHERIT when the fast path read the entry). */
  quotaCode: number
  addressCode: number
  /** The entry's earlier keys; undefined: none. */
  previous?: PreviousKey[]
}

/** Rules, limits, quotas, allowlists: code 0 is "the defaults'", 1 (but rules) "none", the rest index their list. */
export const INHERIT = 0
export const NO_LIMIT = 1

/** What entries without a field of their own get: the keys file's `defaults`, compiled. */
export interface CompiledDefaults {
  policy?: Policy
  limit?: RateLimit
  quota?: Quota
  addresses?: AddressSet
}

/** Distinct values of one plan field, by code; made once per distinct value (a million keys share a few). */
export class CodedValues<T> {
  readonly codes = new Column((n) => new Uint32Array(n), INHERIT)
  /** What each code was made from (JSON), to tell whether an entry of another file is the same. */
  readonly keys: string[] = ['', 'null']
  readonly values: Array<T | undefined> = [undefined, undefined]

  /** The value of row `row`: its own, none, or `inherited`. */
  of(row: number, inherited: T | undefined): T | undefined {
    const code = this.codes.get(row)
    return code === INHERIT ? inherited : this.values[code]
  }
}

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
  readonly quotas = new CodedValues<Quota>()
  readonly addressSets = new CodedValues<AddressSet>()
  /** Earlier keys by digest: the row whose id, plan and limits they share, and when they stop working. */
  readonly previous = new Map<string, { row: number; untilMs: number }>()
  /** Rows with earlier keys: such a row is never kept by a reload (layered-store.ts). */
  readonly rowsWithPrevious = new Set<number>()
  /** Rows filled so far; a row's digest is added first and counts it. */
  get count(): number {
    return this.digests.count
  }
}
