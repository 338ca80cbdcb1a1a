/** `authorize()`: a key's rules applied to an app's own route, on the canonical path. */
import { canonicalPath } from './canonical-path.js'
import type { AuthResult } from '../keys/auth.js'

/** The answer of `authorize`: the request may go on, or why not (403 forbidden, 400 for an ambiguous path). */
export type Authorization = { ok: true } | { ok: false; reason: 'forbidden' | 'bad_path' | 'unauthenticated' }

/**
 * For an app's own routes: may the authenticated key make `method` on `path` (without its query)?
 * A key without rules may make every request; the path must be canonical, as for the server.
 */
export function authorize(auth: AuthResult, method: string, path: string): Authorization {
  if (!auth.ok) return { ok: false, reason: 'unauthenticated' }
  const canonical = canonicalPath(path)
  if (!canonical.ok) return { ok: false, reason: 'bad_path' }
  if (auth.policy === undefined || auth.policy.allows(method, canonical.segments)) return { ok: true }
  return { ok: false, reason: 'forbidden' }
}
