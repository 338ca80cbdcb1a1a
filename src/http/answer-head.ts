/**
 * The head of a service's HTTP/1.1 answer, for keygate's own client (upstream-client.ts): the
 * status, the header fields as received, and what they say about the body's framing and whether
 * the connection may carry another request (RFC 9112 sections 6.3 and 9.3). Pure.
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

/**
 * The head's text (up to, not including, the empty line) of an answer to `method`: 'interim'
 * for a 1xx (100, 103: the client gets only the final answer), 'bad' when it is malformed.
 */
export function parseAnswerHead(text: string, method: string): ParsedHead | 'interim' | 'bad' {
  let lineEnd = text.indexOf(CRLF)
  if (lineEnd === -1) lineEnd = text.length
  const match = STATUS_LINE.exec(text.slice(0, lineEnd))
  if (match === null) return 'bad'
  const status = Number(match[2])
  if (status >= 100 && status < 200) return 'interim'
  const fields = parseFields(text, lineEnd + 2)
  if (fields === undefined) return 'bad'
  // HTTP/1.0 keeps the connection only when asked to; any transfer coding but chunked last
  // ends with the connection (RFC 9112 section 6.3).
  const close = fields.close || fields.otherCoding || (match[1] === '0' && !fields.keepAlive)
  let framing: Framing
  if (method === 'HEAD' || status === 204 || status === 304) framing = { kind: 'none' }
  else if (fields.chunked) framing = { kind: 'chunked' }
  else if (fields.length !== undefined && !fields.otherCoding) framing = { kind: 'length', left: fields.length }
  else framing = { kind: 'close' }
  return { status, rawHeaders: fields.rawHeaders, framing, reusable: !close && framing.kind !== 'close' }
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
    const name = text.slice(at, colon)
    const value = text.slice(colon + 1, end).trim()
    at = end + 2
    fields.rawHeaders.push(name, value)
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      if (!/^\d{1,15}$/.test(value) || (fields.length !== undefined && fields.length !== Number(value))) return undefined
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
