/**
 * Earlier keys of entries (a rotation's `previous`): kept by digest beside the rows, each pointing
 * at its entry's row, so that an earlier key is its entry in everything but when it stops working.
 * Pure.
 */
import { word, WORDS_PER_DIGEST, type DigestRows } from './digest-rows.js'
import type { CheckedEntry, KeyColumns } from './key-columns.js'
import { where } from '../keys/entry-check.js'

/** Adds the earlier keys of `entry` (row `row`); one that is another entry's earlier key too is a problem. */
export function putPrevious(columns: KeyColumns, row: number, entry: CheckedEntry, problems: string[]): void {
  columns.rowsWithPrevious.add(row)
  entry.previous?.forEach(({ digest, untilMs }, i) => {
    const taken = columns.previous.get(digest)
    if (taken === undefined) columns.previous.set(digest, { row, untilMs })
    else problems.push(`${where(entry.index, columns.ids.get(row))}: previous[${i}] is an earlier key of entry "${columns.ids.get(taken.row)}" too`)
  })
}

/** Earlier keys that are some entry's current key (a key must say which entry it is): one problem each. */
export function previousInUse(columns: KeyColumns, indexOfRow: (row: number) => number): string[] {
  const { previous, digests } = columns
  const problems: string[] = []
  if (previous.size === 0) return problems
  // Few earlier keys, many rows: one pass over the rows' first words, whole digests compared on a match.
  const byFirstWord = new Map<number, string[]>()
  for (const digest of previous.keys()) byFirstWord.set(word(digest, 0), [...(byFirstWord.get(word(digest, 0)) ?? []), digest])
  for (let owner = 0; owner < columns.count; owner++) {
    for (const digest of byFirstWord.get(digests.word(owner, 0)) ?? []) {
      if (!sameDigest(digests, owner, digest)) continue
      const row = (previous.get(digest) as { row: number }).row
      problems.push(`${where(indexOfRow(row), columns.ids.get(row))}: an earlier key (previous) is the key of entry "${columns.ids.get(owner)}"`)
    }
  }
  return problems
}

function sameDigest(digests: DigestRows, row: number, digest: string): boolean {
  for (let w = 0; w < WORDS_PER_DIGEST; w++) if (digests.word(row, w) !== word(digest, w * 4)) return false
  return true
}
