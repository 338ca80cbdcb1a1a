/** What deserves an operator's look in a valid keys file: `keygate check` and startup report it. Pure. */
import type { KeyEntry } from './store.js'

const DAY_MS = 86_400_000
/** How far ahead an expiry is worth a warning. */
export const EXPIRY_WARNING_DAYS = 30

/** What deserves a look in a valid keys file: expired keys, keys expiring soon, plain-text keys. */
export interface KeysFileFindings {
  expired: KeyEntry[]
  expiringSoon: KeyEntry[]
  plainText: KeyEntry[]
  /** Entries with `allow` rules (their own or the defaults'). */
  withRules: KeyEntry[]
  /** Entries whose `allow` is empty: valid keys that may make no request. */
  allowNothing: KeyEntry[]
  /** Entries with a rate limit (their own or the defaults'). */
  withLimits: KeyEntry[]
}

/** Sorts the entries of a valid file into what `keygate check` and startup report. */
export function findingsOf(entries: readonly KeyEntry[], nowMs: number): KeysFileFindings {
  const soon = nowMs + EXPIRY_WARNING_DAYS * DAY_MS
  const findings: KeysFileFindings = { expired: [], expiringSoon: [], plainText: [], withRules: [], allowNothing: [], withLimits: [] }
  for (const entry of entries) {
    const expiry = expiryMsOf(entry)
    if (expiry <= nowMs) findings.expired.push(entry)
    else if (expiry <= soon) findings.expiringSoon.push(entry)
    if (entry.key !== undefined) findings.plainText.push(entry)
    if (entry.allow !== undefined) findings.withRules.push(entry)
    if (entry.allow?.length === 0) findings.allowNothing.push(entry)
    if (entry.rateLimit !== undefined && entry.rateLimit !== null) findings.withLimits.push(entry)
  }
  return findings
}

export function expiryMsOf(entry: KeyEntry): number {
  return entry.expiresAt === undefined ? Infinity : new Date(entry.expiresAt).getTime()
}

// A warning names a few ids, then a count: a million expired keys make one short line.
const NAMED_IN_WARNING = 5

/** One warning line for each kind of finding, and for a file without keys. */
export function keysFileWarnings(file: string, entries: readonly KeyEntry[], nowMs: number): string[] {
  const { expired, expiringSoon, plainText, allowNothing } = findingsOf(entries, nowMs)
  const ids = (list: KeyEntry[]) =>
    list.slice(0, NAMED_IN_WARNING).map((entry) => entry.id).join(', ') + (list.length > NAMED_IN_WARNING ? ` and ${list.length - NAMED_IN_WARNING} more` : '')
  const warnings: string[] = []
  if (entries.length === 0) warnings.push(`keys file ${file} has no keys: only API_KEY, if set, is accepted`)
  if (expired.length > 0) warnings.push(`keys file ${file}: ${expired.length} expired key(s), refused: ${ids(expired)}`)
  if (expiringSoon.length > 0) warnings.push(`keys file ${file}: ${expiringSoon.length} key(s) expire within ${EXPIRY_WARNING_DAYS} days: ${ids(expiringSoon)}`)
  if (plainText.length > 0) warnings.push(`keys file ${file}: ${plainText.length} plain-text key(s), use sha256 instead: ${ids(plainText)}`)
  if (allowNothing.length > 0) warnings.push(`keys file ${file}: ${allowNothing.length} key(s) with "allow": [] may make no request: ${ids(allowNothing)}`)
  return warnings
}
