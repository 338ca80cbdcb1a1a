/**
 * Builds a key set entry by entry into packed columns (key-table.ts): a million entries never
 * exist as a million objects at once. Pure: no I/O.
 */
import { repeatedStrings } from './columns.js'
import {
  addressSetOf, digestOfEntry, FLAT_NAMES, idOf, isIdBytes, isName, isRealDate, parseExpiry, policyOf, previousOf, quotaOf, rateLimitOf, where,
  type KeyEntry,
} from '../keys/entry-check.js'
import { hexToWords } from './digest-rows.js'
import { previousInUse, putPrevious } from './previous-keys.js'
import { isArrayValue, plainStrings } from './flat-entry.js'
import { INHERIT, KeyColumns, NO_LIMIT, type CheckedEntry, type CodedValues } from './key-columns.js'
import { DigestKeyStore, KeyTable } from './key-table.js'
import { compileShared, type FinishOptions, type SharedFields } from './shared-fields.js'
import type { KeyStore } from '../keys/store.js'

/**
 * Checks entries one at a time into the columns of a key set. Each bad entry adds one problem;
 * `finish` makes the store, or none. `check` and `put` are the two halves of `add`, for a reload
 * that finds most entries in the set it replaces (layered-store.ts).
 */
export class KeySetBuilder {
  readonly problems: string[] = []
  readonly columns = new KeyColumns()
  /** Indexes of the entries that have no row (each had a problem), in order: to name a row's entry. */
  private readonly failedAt: number[] = []
  // Rules and limits are compiled once per distinct value: a million keys usually share a few.
  private readonly policyCodes = new Map<string, number | Error>()
  private readonly limitCodes = new Map<string, number | Error>()
  private readonly quotaCodes = new Map<string, number | Error>()
  private readonly addressCodes = new Map<string, number | Error>()
  /** The fast path's `allow` lists by their text in the file (only those that compiled). */
  private readonly flatPolicyCodes = new Map<string, number>()
  /** Ids of entries that had a problem after their id was read (few: each is a problem). */
  private readonly failedIds = new Set<string>()
  /** The fast path's entry, reused: no object per entry. */
  private readonly flat: CheckedEntry = { index: 0, idBytes: Buffer.alloc(0), idStart: 0, idLength: 0, digest: undefined, expiresAtMs: Infinity, policyCode: INHERIT, limitCode: INHERIT, plainText: false, quotaCode: INHERIT, addressCode: INHERIT }
  readonly flatWords = new Int32Array(8)

  /** `reservedId`: an id no entry may have (`env` when API_KEY is set), and the problem it gives. */
  constructor(private readonly reservedId?: { id: string; problem: string }) {}

  /**
   * Checks `entry` (the `index`th) and adds it, or adds its first problem. The entry `API_KEY`
   * gives may have the reserved id, and is no plain-text key to warn about.
   */
  add(entry: KeyEntry, index: number, from: 'entries' | 'API_KEY' = 'entries'): void {
    const checked = this.check(entry, index, from)
    if (checked !== undefined) this.put(checked)
  }

  /** Every check of `add` (a problem is added, and undefined returned). */
  check(entry: KeyEntry, index: number, from: 'entries' | 'API_KEY' = 'entries'): CheckedEntry | undefined {
    let readId: string | undefined
    try {
      if (this.columns.count >= MAX_ROWS) throw new TypeError(`keys[${index}]: a key set holds at most ${MAX_ROWS.toLocaleString('en-US')} keys`)
      const id = idOf(entry, index)
      readId = id
      if (id === this.reservedId?.id && from === 'entries') throw new TypeError(`${where(index, id)}: ${this.reservedId.problem}`)
      const idBytes = Buffer.from(id, 'latin1')
      // A bad entry still holds its id (see the catch): a second entry with it is a second
      // problem. Two good entries with one id are found at the end, by sorting: see finish.
      if (this.failedIds.has(id)) throw new TypeError(`${where(index, id)}: id is used by an earlier entry`)
      const digest = digestOfEntry(entry, index)
      const expiresAtMs = parseExpiry(entry.expiresAt, index, id)
      const policyCode = entry.allow === undefined ? INHERIT : this.code(this.policyCodes, this.columns.policies, this.columns.policyKeys, entry.allow, () => policyOf(entry.allow, index, id))
      const limitCode = entry.rateLimit === undefined ? INHERIT : entry.rateLimit === null ? NO_LIMIT : this.code(this.limitCodes, this.columns.limits, this.columns.limitKeys, entry.rateLimit, () => rateLimitOf(entry.rateLimit, index, id))
      const quotaCode = this.planCode(this.quotaCodes, this.columns.quotas, entry.quota, () => quotaOf(entry.quota, index, id))
      const addressCode = this.planCode(this.addressCodes, this.columns.addressSets, entry.ips, () => addressSetOf(entry.ips, index, id))
      const previous = previousOf(entry.previous, index, id)
      const plainText = entry.key !== undefined && from === 'entries'
      return { index, idBytes, idStart: 0, idLength: idBytes.length, digest, expiresAtMs, policyCode, limitCode, plainText, quotaCode, addressCode, previous }
    } catch (error) {
      this.problems.push((error as Error).message)
      this.failedAt.push(index)
      if (readId !== undefined) this.failedIds.add(readId)
      return undefined
    }
  }

  /** Adds a checked entry as the next row. */
  put(entry: CheckedEntry): void {
    if (entry.digest === undefined) this.columns.digests.addWords(this.flatWords)
    else this.columns.digests.addLatin1(entry.digest)
    const row = this.columns.count - 1
    this.columns.ids.set(row, entry.idBytes, entry.idStart, entry.idLength)
    if (entry.expiresAtMs !== Infinity) this.columns.expiry.set(row, entry.expiresAtMs)
    if (entry.policyCode !== INHERIT) this.columns.policyCodes.set(row, entry.policyCode)
    if (entry.limitCode !== INHERIT) this.columns.limitCodes.set(row, entry.limitCode)
    if (entry.plainText) {
      this.columns.plainText.set(row, 1)
      this.columns.plainTextCount++
    }
    if (entry.quotaCode !== INHERIT) this.columns.quotas.codes.set(row, entry.quotaCode)
    if (entry.addressCode !== INHERIT) this.columns.addressSets.codes.set(row, entry.addressCode)
    if (entry.previous !== undefined) putPrevious(this.columns, row, entry, this.problems)
  }

  /** A field of the plan (`quota`, `ips`): INHERIT when absent, NO_LIMIT for null, else its value's code. */
  private planCode<T>(codes: Map<string, number | Error>, values: CodedValues<T>, value: unknown, compile: () => T | undefined): number {
    if (value === undefined) return INHERIT
    if (value === null) return NO_LIMIT
    return this.code(codes, values.values, values.keys, value, compile)
  }

  /**
   * The fast path for `{ "id", "sha256" [, "expiresAt"] [, "allow"] }` given as byte ranges (json-reader.ts):
   * true when the entry was added; false, with nothing added, for anything else or anything wrong
   * (the caller then builds the entry and `add` says what is wrong).
   */
  addFlat(bytes: Buffer, members: Int32Array, count: number, index: number): boolean {
    const entry = this.checkFlat(bytes, members, count, index)
    if (entry === undefined) return false
    this.put(entry)
    return true
  }

  /**
   * The checks of the fast path; the digest is left in `flatWords`, the entry returned is reused
   * by the next call. Undefined for anything the general path must look at. Does not check that
   * the id is new: `finish` does.
   */
  checkFlat(bytes: Buffer, members: Int32Array, count: number, index: number): CheckedEntry | undefined {
    let id = -1
    let sha256 = -1
    let expiresAt = -1
    let allow = -1
    for (let m = 0; m < count * 4; m += 4) {
      const start = members[m] as number
      // The four names differ in length: one comparison each. The reader has made sure that no name comes twice.
      const length = (members[m + 1] as number) - start
      if (length === 2 && isName(bytes, start, FLAT_NAMES.id)) id = m
      else if (length === 6 && isName(bytes, start, FLAT_NAMES.sha256)) sha256 = m
      else if (length === 9 && isName(bytes, start, FLAT_NAMES.expiresAt)) expiresAt = m
      else if (length === 5 && isName(bytes, start, FLAT_NAMES.allow)) allow = m
      else return undefined
      if (isArrayValue(bytes, members, m) !== (m === allow)) return undefined
    }
    if (id === -1 || sha256 === -1 || this.columns.count >= MAX_ROWS) return undefined
    const idStart = members[id + 2] as number
    const idEnd = members[id + 3] as number
    const hexStart = members[sha256 + 2] as number
    if ((members[sha256 + 3] as number) - hexStart !== 64 || !isIdBytes(bytes, idStart, idEnd)) return undefined
    if ((this.reservedId !== undefined || this.failedIds.size > 0) && this.takenByName(bytes.toString('latin1', idStart, idEnd))) return undefined
    const expiry = expiresAt === -1 ? undefined : bytes.toString('latin1', members[expiresAt + 2] as number, members[expiresAt + 3] as number)
    if (expiry !== undefined && !isRealDate(expiry)) return undefined
    if (!hexToWords(bytes, hexStart, this.flatWords)) return undefined
    const policyCode = allow === -1 ? INHERIT : this.flatPolicyCode(bytes, members[allow + 2] as number, members[allow + 3] as number, index, idStart, idEnd)
    if (policyCode === undefined) return undefined
    const entry = this.flat
    entry.policyCode = policyCode
    entry.index = index
    entry.idBytes = bytes
    entry.idStart = idStart
    entry.idLength = idEnd - idStart
    entry.expiresAtMs = expiry === undefined ? Infinity : Date.parse(expiry)
    return entry
  }

  /**
   * The code of a fast-path entry's `allow` list, or undefined for the general path to read it (a
   * string it must decode, or rules that do not compile: it names the problem).
   */
  private flatPolicyCode(bytes: Buffer, start: number, end: number, index: number, idStart: number, idEnd: number): number | undefined {
    // The same text is the same list: found by its text, it skips decoding and JSON.stringify (a third of the load).
    const text = bytes.toString('latin1', start, end)
    const known = this.flatPolicyCodes.get(text)
    if (known !== undefined) return known
    const rules = plainStrings(bytes, start)
    if (rules === undefined) return undefined
    try {
      const code = this.code(this.policyCodes, this.columns.policies, this.columns.policyKeys, rules, () => policyOf(rules, index, bytes.toString('latin1', idStart, idEnd)))
      this.flatPolicyCodes.set(text, code)
      return code
    } catch {
      return undefined
    }
  }

  /** The store of every entry added, with `defaults` for those without their own; or the problems. */
  finish(options: FinishOptions = {}, compiled = this.compileShared(options)): { store?: KeyStore; problems: string[] } {
    for (const [, later] of repeatedStrings(this.columns.ids, this.columns.count)) {
      this.problems.push(`${where(this.indexOfRow(later), this.columns.ids.get(later))}: id is used by an earlier entry`)
    }
    if (compiled === undefined || this.problems.length > 0) return { problems: this.problems }
    const table = KeyTable.build(this.columns, compiled.defaults, options.indexed ?? true)
    if (!(table instanceof KeyTable)) {
      const [first, second] = table.duplicate
      return { problems: [`${where(second, this.columns.ids.get(second))}: same key as entry "${this.columns.ids.get(first)}"`] }
    }
    const reused = previousInUse(this.columns, (row) => this.indexOfRow(row))
    if (reused.length > 0) return { problems: reused }
    return { store: new DigestKeyStore(table, compiled.publicPolicy), problems: this.problems }
  }

  /** The public rules and the defaults, compiled; undefined when anything (these or an entry) had a problem. */
  compileShared(options: FinishOptions): SharedFields | undefined {
    const shared = compileShared(options, this.problems)
    return this.problems.length > 0 ? undefined : shared
  }

  private takenByName(id: string): boolean {
    return id === this.reservedId?.id || this.failedIds.has(id)
  }

  /** The index of the entry that row `row` holds: rows skip the entries that had a problem. */
  indexOfRow(row: number): number {
    let index = row
    for (const failed of this.failedAt) {
      if (failed > index) break
      index++
    }
    return index
  }

  /** The code of a distinct rule list or limit: compiled the first time it is seen; a bad one throws each time. */
  private code<T>(codes: Map<string, number | Error>, compiled: Array<T | undefined>, keys: string[], value: unknown, compile: () => T | undefined): number {
    const key = JSON.stringify(value)
    let code = codes.get(key)
    if (code === undefined) {
      try {
        code = compiled.push(compile()) - 1
        keys.push(key)
      } catch (error) {
        code = error as Error
      }
      codes.set(key, code)
    }
    if (typeof code === 'number') return code
    compile() // throws again, with a message that names this entry
    throw code
  }
}

// Rows are int32 in the digest index, ids addressed by 32 bits: far more than a keys file needs.
const MAX_ROWS = 1 << 26
