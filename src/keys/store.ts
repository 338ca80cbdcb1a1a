/**
 * The key store: what answers "which key is this credential?", and what it answers with. The
 * store that holds keys in packed columns is built in key-table/ (createKeyStore).
 */
import type { Quota } from '../limits/quota.js'
import type { RateLimit } from '../limits/rate-limit.js'
import type { AddressSet } from './address-set.js'
import type { Policy } from './policy.js'

export type { KeyEntry } from './entry-check.js'

/** What a successful lookup yields: never the key itself. */
export interface KeyRecord {
  readonly id: string
  /** Milliseconds since the epoch; `Infinity` when the key never expires. */
  readonly expiresAtMs: number
  /** The requests the key may make (its `allow` rules); undefined: every request. */
  readonly policy?: Policy
  /** The key's rate limit; undefined: none. */
  readonly rateLimit?: RateLimit
  /** The key's quota; undefined: none. */
  readonly quota?: Quota
  /** The addresses the key may be used from; undefined: any. */
  readonly addresses?: AddressSet
  /** True when the credential is one of the entry's earlier keys (`previous`), not its current one. */
  readonly previous?: true
}

/** A set of keys that answers "which key is this credential?". */
export interface KeyStore {
  readonly size: number
  /** Requests that need no key (the keys file's `public` rules); undefined: none. */
  readonly publicPolicy?: Policy
  /** The record whose key is `credential`, or `undefined`. Never throws. */
  lookup(credential: string): KeyRecord | undefined
}
