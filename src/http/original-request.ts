/**
 * The request a reverse proxy asks `/auth` about: nginx sends `X-Original-Method` and
 * `X-Original-URI` (the raw `$request_uri`), Caddy and Traefik `X-Forwarded-Method` and
 * `X-Forwarded-Uri`. A proxy sets one family and passes the client's headers on, so the other
 * family, when present, came from the client: if the two disagree, the request is ambiguous.
 * Its path must be canonical, as any path a scope is matched against. Pure.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { canonicalPath } from './canonical-path.js'

export interface OriginalRequest {
  method: string
  /** The canonical, decoded segments of its path. */
  segments: string[]
  /** The canonical path, for the access line (never the query). */
  path: string
}

const METHOD_TOKEN = /^[A-Z]{1,16}$/
const CONFLICT = Symbol('the two families disagree')

/** Headers that ask a service to take a request as another method (Express's method-override and others). */
export const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const

/** True when a method-override header names another method than `method`: scopes match the method keygate sees. */
export function overridesMethod(headers: IncomingHttpHeaders, method: string): boolean {
  for (const name of METHOD_OVERRIDE_HEADERS) {
    const value = headers[name]
    // Node's parser has already cut the value's surrounding white space; any other is not a method.
    if (value !== undefined && String(value).toUpperCase() !== method) return true
  }
  return false
}

/** Why an original request cannot be trusted (400): said in the access line as `originalProblem`. */
export interface Ambiguous {
  problem: string
}

/**
 * The original request, `undefined` when the proxy sent none, or what makes it ambiguous when its
 * method or path cannot be trusted (400).
 */
export function originalRequestOf(headers: IncomingHttpHeaders): OriginalRequest | Ambiguous | undefined {
  const method = oneOf(headers['x-original-method'], headers['x-forwarded-method'])
  const uri = oneOf(headers['x-original-uri'], headers['x-forwarded-uri'])
  if (method === undefined && uri === undefined) return undefined
  if (method === CONFLICT || uri === CONFLICT) return { problem: 'X-Original-* and X-Forwarded-* name different requests' }
  if (typeof uri !== 'string') return { problem: 'a method without a URI (X-Original-URI or X-Forwarded-Uri)' }
  if (typeof method !== 'string') return { problem: 'a URI without a method (X-Original-Method or X-Forwarded-Method)' }
  if (!METHOD_TOKEN.test(method)) return { problem: 'a method that is not 1 to 16 upper-case letters' }
  // A `#` is cut by the service's parser but not by a scope rule: never guess which one wins.
  if (uri.includes('#')) return { problem: 'a # in the URI' }
  const query = uri.indexOf('?')
  const canonical = canonicalPath(query === -1 ? uri : uri.slice(0, query))
  if (!canonical.ok) return { problem: `a path that is not canonical (${canonical.refusal})` }
  if (overridesMethod(headers, method)) return { problem: 'a method override naming another method' }
  return { method, segments: canonical.segments, path: canonical.path }
}

/** The value both families agree on, the one present, or CONFLICT when they differ. */
function oneOf(original: string | string[] | undefined, forwarded: string | string[] | undefined): string | string[] | undefined | typeof CONFLICT {
  if (original === undefined) return forwarded
  return forwarded === undefined || forwarded === original ? original : CONFLICT
}
