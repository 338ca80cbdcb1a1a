/**
 * The request a reverse proxy asks `/auth` about: nginx sends `X-Original-Method` and
 * `X-Original-URI` (the raw `$request_uri`), Caddy and Traefik `X-Forwarded-Method` and
 * `X-Forwarded-Uri`. Its path must be canonical, as any path a scope is matched against. Pure.
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

/** The original request, `undefined` when the proxy sent none, or 'ambiguous' when its method or path cannot be trusted (400). */
export function originalRequestOf(headers: IncomingHttpHeaders): OriginalRequest | 'ambiguous' | undefined {
  const method = headers['x-original-method'] ?? headers['x-forwarded-method']
  const uri = headers['x-original-uri'] ?? headers['x-forwarded-uri']
  if (method === undefined && uri === undefined) return undefined
  if (typeof method !== 'string' || typeof uri !== 'string' || !METHOD_TOKEN.test(method)) return 'ambiguous'
  const end = uri.search(/[?#]/)
  const canonical = canonicalPath(end === -1 ? uri : uri.slice(0, end))
  return canonical.ok ? { method, segments: canonical.segments, path: canonical.path } : 'ambiguous'
}
