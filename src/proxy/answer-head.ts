/**
 * The head of a service's HTTP/1.1 answer, for keygate's own client (upstream-client.ts): the
 * status, the header fields as received, and what they say about the body's framing and whether
 * the connection may carry another request (RFC 9112 sections 6.3 and 9.3). Where llhttp (Node's
 * own parser) refuses an answer, so does this: two parsers that frame one answer differently are
 * how a proxy hands one client's bytes to another. Pure.
 */

/** The head of the service's answer: status and headers as received. */
export interface AnswerHead {
  status: number
  rawHeaders: string[]
}

export type Framing = { kind: 'none' } | { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' }

export interface ParsedHead extends AnswerHead {
  framing: Framing
  /** The connection may carry another request once this answer is whole. */
  reusable: boolean
}

const CRLF = '\r\n'
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+"
// A size in hex, then chunk extensions (`;name`, `;name=token`, `;name="quoted"`), nothing else.
const CHUNK_SIZE_LINE = new RegExp(`^[0-9A-Fa-f]+(?:;${TOKEN}(?:=(?:${TOKEN}|"(?:[^"\\\\\\x00-\\x08\\x0a-\\x1f\\x7f]|\\\\[\\t\\x20-\\x7e])*"))?)*$`)
const TRAILER_LINE = new RegExp(`^${TOKEN}:[\\t\\x20-\\x7e\\x80-\\xff]*$`)

/** A chunk-size line (without its CRLF) as llhttp takes it. */
export function isChunkSizeLine(line: string): boolean {
  return CHUNK_SIZE_LINE.test(line)
}

/** A trailer field line (without its CRLF). */
export function isTrailerLine(line: string): boolean {
  return TRAILER_LINE.test(line)
}

/** An LF not preceded by CR: HTTP/1.1 lines end in CRLF, and llhttp refuses a bare LF. */
export function hasBareLineFeed(data: Buffer): boolean {
  for (let at = data.indexOf(10); at !== -1; at = data.indexOf(10, at + 1)) if (at === 0 || data[at - 1] !== 13) return true
  return false
}

/** A CR or LF that is not part of a CRLF, in a head's text. */
function hasBareLineBreak(text: string): boolean {
  for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) if (text.charCodeAt(at - 1) !== 13) return true
  for (let at = text.indexOf('\r'); at !== -1; at = text.indexOf('\r', at + 1)) if (text.charCodeAt(at + 1) !== 10) return true
  return false
}

/**
 * The head's text (up to, not including, the empty line) of an answer to `method`: 'interim'
 * for a 1xx (100, 103: the client gets only the final answer), 'bad' when it is malformed.
 */
export function parseAnswerHead(text: string, method: string): ParsedHead | 'interim' | 'bad' {
  if (hasBareLineBreak(text)) return 'bad'
  let lineEnd = text.indexOf(CRLF)
  if (lineEnd === -1) lineEnd = text.length
  const match = STATUS_LINE.exec(text.slice(0, lineEnd))
  if (match === null) return 'bad'
  const status = Number(match[2])
  // keygate's client never asks for an upgrade: a 101 would turn the connection into anything.
  if (status === 101) return 'bad'
  if (status >= 100 && status < 200) return 'interim'
  const fields = parseFields(text, lineEnd + 2)
  // RFC 9112 section 6.3: a length beside a transfer coding is a framing two parsers may read two ways.
  if (fields === undefined || (fields.length !== undefined && (fields.chunked || fields.otherCoding))) return 'bad'
  // HTTP/1.0 keeps the connection only when asked to; any transfer coding but chunked last
  // ends with the connection (RFC 9112 section 6.3).
  const close = fields.close || fields.otherCoding || (match[1] === '0' && !fields.keepAlive)
  let framing: Framing
  const bodiless = method === 'HEAD' || status === 204 || status === 304
  if (bodiless) framing = { kind: 'none' }
  else if (fields.chunked) framing = { kind: 'chunked' }
  else if (fields.length !== undefined) framing = { kind: 'length', left: fields.length }
  else framing = { kind: 'close' }
  // A bodiless answer that announces a body may be followed by one, late: never read it as the next answer.
  const mayTrail = bodiless && ((fields.length ?? 0) > 0 || fields.chunked || fields.otherCoding)
  return { status, rawHeaders: fields.rawHeaders, framing, reusable: !close && !mayTrail && framing.kind !== 'close' }
}

/** What the header fields of an answer say about its framing. */
interface Fields {
  rawHeaders: string[]
  length: number | undefined
  chunked: boolean
  /** A Transfer-Encoding whose last coding is not chunked. */
  otherCoding: boolean
  close: boolean
  keepAlive: boolean
}

/**
 * The header lines of `text` from `at` on, as `[name, value, ...]`; undefined when one is malformed
 * (no name, obs-fold, Content-Lengths that disagree). Names are lower-cased only when their length
 * matches one of the three that decide framing.
 */
function parseFields(text: string, at: number): Fields | undefined {
  const fields: Fields = { rawHeaders: [], length: undefined, chunked: false, otherCoding: false, close: false, keepAlive: false }
  while (at < text.length) {
    let end = text.indexOf(CRLF, at)
    if (end === -1) end = text.length
    const colon = text.indexOf(':', at)
    const first = text.charCodeAt(at)
    if (colon <= at || colon > end || first === 32 || first === 9) return undefined // obs-fold or no name
    // `Transfer-Encoding : chunked` is no field to llhttp; it must not be one to keygate either.
    const last = text.charCodeAt(colon - 1)
    if (last === 32 || last === 9) return undefined
    const name = text.slice(at, colon)
    const value = text.slice(colon + 1, end).trim()
    at = end + 2
    fields.rawHeaders.push(name, value)
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      // One Content-Length, digits only: llhttp refuses a repeated one even with the same value.
      if (!/^\d{1,15}$/.test(value) || fields.length !== undefined) return undefined
      fields.length = Number(value)
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      fields.chunked = /(?:^|,)\s*chunked\s*$/i.test(value)
      fields.otherCoding = !fields.chunked
    } else if (name.length === 10 && name.toLowerCase() === 'connection') {
      fields.close ||= /(?:^|,)\s*close\s*(?:,|$)/i.test(value)
      fields.keepAlive ||= /keep-alive/i.test(value)
    }
  }
  return fields
}
