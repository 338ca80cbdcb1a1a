/** A key store built from entries checked one by one into packed columns (key-set-builder.ts, key-table.ts). Pure: no I/O. */
import { KeySetBuilder } from './key-set-builder.js'
import type { KeyEntry } from '../keys/entry-check.js'
import type { KeyStore } from '../keys/store.js'

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
  const builder = new KeySetBuilder()
  entries.forEach((entry, index) => builder.add(entry, index))
  return builder.finish({ publicRules })
}
