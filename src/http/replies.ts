/** keygate's own answers, prepared once, and what each request came to (the outcome). */
import type { AuthResult } from '../keys/auth.js'
import type { ProxyReplies } from './forwarding.js'
import { createEmptyReply, createReply, sendReply, type Reply } from './respond.js'

export type Outcome =
  | AuthResult
  | { ok: false; reason: 'throttled' | 'malformed' | 'expectation_failed' | 'limits_unavailable'; keyId?: undefined }
  | { ok: false; reason: 'forbidden' | 'rate_limited' | 'quota_exceeded' | 'ip_not_allowed'; keyId: string; previousKey?: true }
/** A request that a `public` rule lets through without a key. */
export const PUBLIC: Outcome = Object.freeze({ ok: true, keyId: '' })
export const THROTTLED: Outcome = Object.freeze({ ok: false, reason: 'throttled' })
export const LIMITS_UNAVAILABLE: Outcome = Object.freeze({ ok: false, reason: 'limits_unavailable' })
export const MALFORMED: Outcome = Object.freeze({ ok: false, reason: 'malformed' })
export const EXPECTATION_FAILED: Outcome = Object.freeze({ ok: false, reason: 'expectation_failed' })

const ALLOW = 'GET, HEAD, OPTIONS'
export const REPLY = {
  data: createReply(200, '{"message":"Here is your data"}'),
  healthy: createReply(200, '{"status":"ok"}'),
  ready: createReply(200, '{"status":"ready"}'),
  notFound: createReply(404, '{"error":"Not Found"}'),
  methodNotAllowed: createReply(405, '{"error":"Method Not Allowed"}', ['allow', ALLOW]),
  options: createEmptyReply(204, ['allow', ALLOW]),
  keyAccepted: createEmptyReply(204),
  // RFC 6750 section 3: no error code when no credential was presented, invalid_token otherwise.
  noCredential: createReply(401, '{"error":"Unauthorized"}', ['www-authenticate', 'Bearer realm="keygate"']),
  badCredential: createReply(401, '{"error":"Unauthorized"}', [
    'www-authenticate',
    'Bearer realm="keygate", error="invalid_token"',
  ]),
  badRequest: createReply(400, '{"error":"Bad Request"}', ['connection', 'close']),
  expectationFailed: createReply(417, '{"error":"Expectation Failed"}', ['connection', 'close']),
  tooLarge: createReply(413, '{"error":"Payload Too Large"}', ['connection', 'close']),
  // A throttled client and a key past its rate limit: the same answer, with different headers added.
  tooManyRequests: createReply(429, '{"error":"Too Many Requests"}'),
  // RFC 6750 section 3.1: a valid token without the scope the request needs.
  forbidden: createReply(403, '{"error":"Forbidden"}', ['www-authenticate', 'Bearer realm="keygate", error="insufficient_scope"']),
  // A valid key used from an address its allowlist (`ips`) does not hold: no scope is missing.
  addressNotAllowed: createReply(403, '{"error":"Forbidden"}'),
  internalError: createReply(500, '{"error":"Internal Server Error"}'),
  // Proxy mode: the service could not be reached or failed before its answer; it did not answer in time.
  badGateway: createReply(502, '{"error":"Bad Gateway"}'),
  gatewayTimeout: createReply(504, '{"error":"Gateway Timeout"}'),
  // A shared limits store is away and LIMITS_ON_REDIS_FAILURE=closed: no decision, no answer.
  limitsUnavailable: createReply(503, '{"error":"Service Unavailable"}', ['retry-after', '1']),
} satisfies Record<string, Reply>

/** The answers the proxy writes itself, from the prepared replies. */
export const PROXY_REPLIES: ProxyReplies = {
  tooLarge: (req, res, requestId) => sendReply(req, res, REPLY.tooLarge, requestId),
  badGateway: (req, res, requestId) => sendReply(req, res, REPLY.badGateway, requestId),
  gatewayTimeout: (req, res, requestId) => sendReply(req, res, REPLY.gatewayTimeout, requestId),
}

