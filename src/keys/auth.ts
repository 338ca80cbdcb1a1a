/** Reads the credential from a request and verifies it against a key store. */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { KeyStore } from './store.js'
import type { Policy } from './policy.js'
import type { RateLimit } from '../limits/rate-limit.js'
import type { Quota } from '../limits/quota.js'
import type { AddressSet } from './address-set.js'

export type AuthFailure = 'missing' | 'invalid' | 'expired'

/**
 * The outcome of `authenticate`: the key's id and plan, or why the request was refused.
 * An expired key's id is given too, so operators can see who still uses an old key;
 * `previousKey` says the credential is an earlier key of the entry (a rotation's).
 */
export type AuthResult =
  | { ok: true; keyId: string; policy?: Policy; rateLimit?: RateLimit; quota?: Quota; addresses?: AddressSet; previousKey?: true }
  | { ok: false; reason: AuthFailure; keyId?: string; previousKey?: true }

const MISSING: AuthResult = Object.freeze({ ok: false, reason: 'missing' })
const INVALID: AuthResult = Object.freeze({ ok: false, reason: 'invalid' })

/**
 * The presented credential: the first header present of `Authorization: <key>`,
 * `Authorization: Bearer <key>` and `X-API-Key`. Never the query string, a cookie or the body.
 * An empty header counts as absent, and so does an `Authorization` of another scheme
 * (`Basic ...`): that one is the service's, and the credential is then `X-API-Key`.
 */
export function extractCredential(headers: IncomingHttpHeaders): string | undefined {
  const authorization = headers.authorization
  if (isCredentialAuthorization(authorization)) {
    if (!isBearer(authorization)) return authorization
    let start = 7
    while (authorization.charCodeAt(start) === 32) start++
    return authorization.slice(start)
  }
  const apiKey = headers['x-api-key']
  // Node joins repeated X-API-Key headers with ", ": such a value is no key and simply fails.
  return typeof apiKey === 'string' && apiKey !== '' ? apiKey : undefined
}

const BEARER = 'bearer'

/**
 * True when an `Authorization` value is keygate's to read: a bare key (keys hold no space) or
 * `Bearer <key>`. Another scheme (a value with a space whose first word is not Bearer) is not.
 * An embedding app may have set the header to something else than a string: that is no key.
 */
export function isCredentialAuthorization(value: unknown): value is string {
  return typeof value === 'string' && value !== '' && (!value.includes(' ') || isBearer(value))
}

/** True when `value` starts with the scheme `Bearer` in any case and a space (RFC 9110: schemes are case-insensitive). */
function isBearer(value: string): boolean {
  if (value.charCodeAt(BEARER.length) !== 32) return false
  // ORing 0x20 lowercases an ASCII letter; no other character becomes one of these lowercase letters.
  for (let i = 0; i < BEARER.length; i++) if ((value.charCodeAt(i) | 0x20) !== BEARER.charCodeAt(i)) return false
  return true
}

/**
 * Verifies the request's credential: `{ ok: true, keyId }` or `{ ok: false, reason }`. Never throws.
 * `nowMs` is read from the clock only for a key that expires.
 */
export function authenticate(keys: KeyStore, req: IncomingMessage, nowMs?: number): AuthResult {
  const credential = req?.headers === undefined || req.headers === null ? undefined : extractCredential(req.headers)
  if (credential === undefined) return MISSING
  const record = keys.lookup(credential)
  if (record === undefined) return INVALID
  if (record.expiresAtMs === Infinity || record.expiresAtMs > (nowMs ?? Date.now())) {
    if (record.policy === undefined && record.rateLimit === undefined && record.quota === undefined && record.addresses === undefined && record.previous === undefined) {
      return { ok: true, keyId: record.id }
    }
    const { policy, rateLimit, quota, addresses } = record
    return { ok: true, keyId: record.id, policy, rateLimit, quota, addresses, ...(record.previous && { previousKey: true }) }
  }
  return { ok: false, reason: 'expired', keyId: record.id, ...(record.previous && { previousKey: true }) }
}

