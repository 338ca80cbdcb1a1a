/**
 * Reloading a big key set without holding two of it: the new file's entries are looked up in the
 * set being replaced, and those found there unchanged are kept where they are (one bit each);
 * only the rest are built anew, as a small second set. A lookup asks both, always. When too much
 * has changed, the caller builds the whole set afresh instead. Pure: no I/O.
 */
import { where, type KeyEntry } from '../keys/entry-check.js'
import { KeySetBuilder } from './key-set-builder.js'
import type { FinishOptions } from './shared-fields.js'
import type { CheckedEntry } from './key-columns.js'
import { DigestKeyStore, digestToLookUp, KeyTable } from './key-table.js'
import type { Policy } from '../keys/policy.js'
import type { KeyRecord, KeyStore } from '../keys/store.js'

// Below this many keys a whole new set is cheap: layers are for big ones.
const MIN_LAYERED_KEYS = 65_536
// A new set is built whole when more than this share of the base is gone or new.
const MAX_CHANGED_SHARE = 0.25

/** A set kept from an earlier load (`base`, the rows in `live`), plus what the reload added. */
export class LayeredKeyStore implements KeyStore {
  constructor(
    readonly base: KeyTable,
    private readonly live: Uint8Array,
    private readonly added: DigestKeyStore,
    readonly publicPolicy: Policy | undefined,
    readonly size: number,
  ) {}

  lookup(credential: string): KeyRecord | undefined {
    const digest = digestToLookUp(credential)
    if (digest === undefined) return undefined
    // Both layers are asked, whichever holds the key: the work does not say where it is.
    const row = this.base.find(digest)
    const added = this.added.table.find(digest)
    if (row !== -1 && isSet(this.live, row)) return this.base.record(row)
    if (added !== -1) return this.added.table.record(added)
    // Earlier keys are only the added layer's: a base row with some is never kept.
    return this.added.table.previousRecord(digest)
  }
}

/** The table a reload can keep rows of: the base of a layered store, or a plain store's own. */
export function baseOf(store: KeyStore | undefined): KeyTable | undefined {
  if (store instanceof LayeredKeyStore) return store.base
  if (store instanceof DigestKeyStore && store.size >= MIN_LAYERED_KEYS) return store.table
  return undefined
}

/**
 * Takes a reload's entries like `KeySetBuilder` (same checks, same problems), keeping each
 * unchanged entry of `base` as a bit. `finish` says `rebuild` when a whole new set is better.
 */
export class LayeredBuilder {
  private readonly added: KeySetBuilder
  private readonly live: Uint8Array
  /** For each kept base row, the index of its entry in the new file (for messages); -1: not kept. */
  private readonly keptIndex: Int32Array
  private kept = 0
  /** Entries built anew whose key is a base row's: [row, index, ...]; a problem if that row is kept too. */
  private readonly superseded: number[] = []
  private readonly addedIndex: number[] = []

  constructor(
    private readonly base: KeyTable,
    reservedId?: { id: string; problem: string },
  ) {
    this.added = new KeySetBuilder(reservedId)
    this.live = new Uint8Array(Math.ceil(base.size / 8))
    this.keptIndex = new Int32Array(base.size).fill(-1)
  }

  get problems(): string[] {
    return this.added.problems
  }

  add(entry: KeyEntry, index: number, from: 'entries' | 'API_KEY' = 'entries'): void {
    const checked = this.added.check(entry, index, from)
    if (checked === undefined) return
    const row = this.base.find(checked.digest as string)
    if (this.keep(row, checked)) return
    this.put(row, checked)
  }

  addFlat(bytes: Buffer, members: Int32Array, count: number, index: number): boolean {
    const checked = this.added.checkFlat(bytes, members, count, index)
    if (checked === undefined) return false
    const row = this.base.findWords(this.added.flatWords)
    if (!this.keep(row, checked)) this.put(row, checked)
    return true
  }

  /** The new store; `rebuild` when so much changed that a whole new set costs less than layers; or the problems. */
  finish(options: FinishOptions): { store?: KeyStore; rebuild?: true; problems: string[] } {
    const compiled = this.added.compileShared(options)
    if (compiled === undefined) return { problems: this.problems }
    const problems = [...this.conflicts()]
    if (problems.length > 0) return { problems }
    const addedCount = this.added.columns.count
    if (addedCount + (this.base.size - this.kept) > this.base.size * MAX_CHANGED_SHARE) return { rebuild: true, problems }
    const { store: added, problems: addedProblems } = this.added.finish(options, compiled)
    if (added === undefined) return { problems: addedProblems }
    const base = this.base.withDefaults(compiled.defaults)
    return { store: new LayeredKeyStore(base, this.live, added as DigestKeyStore, compiled.publicPolicy, this.kept + addedCount), problems }
  }

  /** Keeps base row `row` when it is `entry` unchanged; a second entry for a kept row is a problem. */
  private keep(row: number, entry: CheckedEntry): boolean {
    if (row === -1 || !this.base.sameEntry(row, entry, this.added.columns)) return false
    if (isSet(this.live, row)) {
      // The same entry twice: what a whole load says of it.
      this.problems.push(`${where(entry.index, this.base.id(row))}: id is used by an earlier entry`)
      return true
    }
    this.live[row >>> 3] = (this.live[row >>> 3] as number) | (1 << (row & 7))
    this.keptIndex[row] = entry.index
    this.kept++
    return true
  }

  private put(row: number, entry: CheckedEntry): void {
    this.added.put(entry)
    this.addedIndex.push(entry.index)
    if (row !== -1) this.superseded.push(row, entry.index, this.added.columns.count - 1)
  }

  /** What only shows across the two layers: a key or an id both in a kept row and in a new one. */
  private *conflicts(): Generator<string> {
    const ids = this.added.columns.ids
    // An earlier key (only new rows have some) that is the key of a kept row.
    for (const [digest, { row: addedRow }] of this.added.columns.previous) {
      const row = this.base.find(digest)
      if (row !== -1 && isSet(this.live, row)) yield `${where(this.addedIndex[addedRow] as number, ids.get(addedRow))}: an earlier key (previous) is the key of entry "${this.base.id(row)}"`
    }
    for (let i = 0; i < this.superseded.length; i += 3) {
      const [row, index, addedRow] = [this.superseded[i] as number, this.superseded[i + 1] as number, this.superseded[i + 2] as number]
      if (!isSet(this.live, row)) continue
      const keptAt = this.keptIndex[row] as number
      yield keptAt < index ? `${where(index, ids.get(addedRow))}: same key as entry "${this.base.id(row)}"` : `${where(keptAt, this.base.id(row))}: same key as entry "${ids.get(addedRow)}"`
    }
    if (this.addedIndex.length === 0) return
    // The new rows are few: their ids by hash, and every kept row's id hashed against them.
    const addedByHash = new Map<number, number[]>()
    for (let addedRow = 0; addedRow < this.added.columns.count; addedRow++) addedByHash.set(ids.hash(addedRow), [...(addedByHash.get(ids.hash(addedRow)) ?? []), addedRow])
    for (let row = 0; row < this.base.size; row++) {
      if (!isSet(this.live, row)) continue
      const addedRow = addedByHash.get(this.base.idHash(row))?.find((candidate) => this.base.sameId(row, ids, candidate))
      if (addedRow === undefined) continue
      const [keptAt, index] = [this.keptIndex[row] as number, this.addedIndex[addedRow] as number]
      yield `${where(Math.max(keptAt, index), this.base.id(row))}: id is used by an earlier entry`
    }
  }
}

function isSet(bits: Uint8Array, row: number): boolean {
  return (((bits[row >>> 3] as number) >>> (row & 7)) & 1) === 1
}
