/**
 * Canonical request paths: the one form in which a scope check, a proxy and the service behind
 * them all see the same path. A path that could be read two ways is refused (400) instead of
 * guessed at: this is where forward-auth services get bypassed (encoded slashes, `%2e` dot
 * segments, `;` parameters, backslashes). Pure.
 */

/** Why a path is refused, for logs and tests; the client only ever sees 400. */
export type PathRefusal =
  | 'not absolute'
  | 'empty segment'
  | 'dot segment'
  | 'forbidden character'
  | 'bad escape'
  | 'forbidden escape'

export type CanonicalPath = { ok: true; path: string; segments: string[] } | { ok: false; refusal: PathRefusal }

const PERCENT = 0x25
// Escapes that decode to these would change how the path splits or reads: `/` `\` `.` `;`.
const FORBIDDEN_DECODED = new Set([0x2f, 0x5c, 0x2e, 0x3b])

/**
 * The path (without its query) checked and decoded: no empty segment but a final `/`, no `.` or
 * `..`, no `\`, `;`, `#`, control or non-ASCII byte, every `%` followed by two hex digits, and no escape
 * of `/`, `\`, `.`, `;` or a control byte. Other escapes are decoded (`/v1/%61dmin` is `/v1/admin`).
 */
export function canonicalPath(raw: string): CanonicalPath {
  if (raw.charCodeAt(0) !== 0x2f) return refuse('not absolute')
  const refusal = rawRefusal(raw)
  if (refusal !== undefined) return refuse(refusal)
  const parts = raw.slice(1).split('/')
  const segments: string[] = []
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string
    if (part === '' && i < parts.length - 1) return refuse('empty segment')
    if (part === '.' || part === '..') return refuse('dot segment')
    const decoded = decodeSegment(part)
    if (decoded === undefined) return refuse('bad escape')
    segments.push(decoded)
  }
  return { ok: true, path: `/${segments.join('/')}`, segments }
}

function refuse(refusal: PathRefusal): CanonicalPath {
  return { ok: false, refusal }
}

/** The first fault of the raw characters and escapes, or `undefined`. */
function rawRefusal(raw: string): PathRefusal | undefined {
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i)
    // `#` too: the service's parser cuts the path there, a scope rule would not.
    if (c <= 0x20 || c >= 0x7f || c === 0x5c || c === 0x3b || c === 0x23) return 'forbidden character'
    if (c !== PERCENT) continue
    const byte = hexByte(raw, i + 1)
    if (byte === -1) return 'bad escape'
    if (byte < 0x20 || byte === 0x7f || FORBIDDEN_DECODED.has(byte)) return 'forbidden escape'
    i += 2
  }
  return undefined
}

function hexByte(text: string, at: number): number {
  const high = hexDigit(text.charCodeAt(at))
  const low = hexDigit(text.charCodeAt(at + 1))
  return high === -1 || low === -1 ? -1 : high * 16 + low
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  return -1
}

/** The segment with its escapes decoded as UTF-8; `undefined` when they are not valid UTF-8. */
function decodeSegment(segment: string): string | undefined {
  if (!segment.includes('%')) return segment
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}
