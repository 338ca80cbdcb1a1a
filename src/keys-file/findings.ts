/** What deserves an operator's look in a valid keys file: `keygate check` and startup report it. Pure. */
import type { KeyStore } from '../keys/store.js'
import { DigestKeyStore } from '../key-table/key-table.js'

const DAY_MS = 86_400_000
/** How far ahead an expiry is worth a warning. */
export const EXPIRY_WARNING_DAYS = 30

export interface KeyFinding {
  id: string
  expiresAtMs: number
}

/** What deserves a look in a valid keys file: expired keys, keys expiring soon, plain-text keys. */
export interface KeysFileFindings {
  keys: number
  expired: KeyFinding[]
  expiringSoon: KeyFinding[]
  /** Ids of entries with a plain-text `key`. */
  plainText: string[]
  /** Entries with `allow` rules (their own or the defaults'). */
  withRules: number
  /** Ids of entries whose `allow` is empty: valid keys that may make no request. */
  allowNothing: string[]
  /** Entries with a rate limit (their own or the defaults'). */
  withLimits: number
  /** Entries with a quota, and with an address allowlist (their own or the defaults'). */
  withQuotas: number
  withAllowlists: number
  /** Earlier keys (a rotation's `previous`) still valid, and those past their time (refused). */
  previousKeys: KeyFinding[]
  previousEnded: KeyFinding[]
}

/**
 * Sorts the keys of a store made from a file into what `keygate check` and startup report,
 * from its columns: a million keys cost no million records. `fileKeys`: the keys from the file
 * (the first ones; API_KEY's comes after them).
 */
export function findingsOf(store: KeyStore, nowMs: number, fileKeys = store.size): KeysFileFindings {
  const table = store instanceof DigestKeyStore ? store.table : undefined
  const soon = nowMs + EXPIRY_WARNING_DAYS * DAY_MS
  const findings: KeysFileFindings = { keys: fileKeys, expired: [], expiringSoon: [], plainText: [], withRules: 0, allowNothing: [], withLimits: 0, withQuotas: 0, withAllowlists: 0, previousKeys: [], previousEnded: [] }
  if (table === undefined) return findings
  for (const { id, untilMs } of table.previousKeys()) (untilMs <= nowMs ? findings.previousEnded : findings.previousKeys).push({ id, expiresAtMs: untilMs })
  for (let row = 0; row < fileKeys; row++) {
    const expiresAtMs = table.expiresAt(row)
    if (expiresAtMs <= nowMs) findings.expired.push({ id: table.id(row), expiresAtMs })
    else if (expiresAtMs <= soon) findings.expiringSoon.push({ id: table.id(row), expiresAtMs })
    const policy = table.policyOf(row)
    if (policy !== undefined) findings.withRules++
    if (policy?.rules === 0) findings.allowNothing.push(table.id(row))
    if (table.hasLimit(row)) findings.withLimits++
    if (table.quotaOf(row) !== undefined) findings.withQuotas++
    if (table.addressesOf(row) !== undefined) findings.withAllowlists++
    if (table.plainTextCount > 0 && table.isPlainText(row)) findings.plainText.push(table.id(row))
  }
  return findings
}

// A warning names a few ids, then a count: a million expired keys make one short line.
const NAMED_IN_WARNING = 5

/** One warning line for each kind of finding, and for a file without keys. */
export function keysFileWarnings(file: string, findings: KeysFileFindings): string[] {
  const { expired, expiringSoon, plainText, allowNothing, previousEnded } = findings
  const ids = (list: ReadonlyArray<KeyFinding | string>) =>
    list.slice(0, NAMED_IN_WARNING).map((item) => (typeof item === 'string' ? item : item.id)).join(', ') + (list.length > NAMED_IN_WARNING ? ` and ${list.length - NAMED_IN_WARNING} more` : '')
  const warnings: string[] = []
  if (findings.keys === 0) warnings.push(`keys file ${file} has no keys: only API_KEY, if set, is accepted`)
  if (expired.length > 0) warnings.push(`keys file ${file}: ${expired.length} expired key(s), refused: ${ids(expired)}`)
  if (expiringSoon.length > 0) warnings.push(`keys file ${file}: ${expiringSoon.length} key(s) expire within ${EXPIRY_WARNING_DAYS} days: ${ids(expiringSoon)}`)
  if (plainText.length > 0) warnings.push(`keys file ${file}: ${plainText.length} plain-text key(s), use sha256 instead: ${ids(plainText)}`)
  if (previousEnded.length > 0) warnings.push(`keys file ${file}: ${previousEnded.length} earlier key(s) past their "until", refused (remove them from "previous"): ${ids(previousEnded)}`)
  if (allowNothing.length > 0) warnings.push(`keys file ${file}: ${allowNothing.length} key(s) with "allow": [] may make no request: ${ids(allowNothing)}`)
  return warnings
}
