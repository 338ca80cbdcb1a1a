/**
 * RESP2, the Redis serialization protocol (https://redis.io/docs/reference/protocol-spec/):
 * commands out as arrays of bulk strings, replies in through an incremental parser that takes
 * the socket's chunks as they come (a reply split over chunks, several replies in one chunk).
 */

/** An error reply (`-ERR ...`); `code` is its first word (`NOSCRIPT`, `WRONGPASS`, `ERR`). */
export class RedisReplyError extends Error {
  override name = 'RedisReplyError'
  readonly code: string

  constructor(message: string) {
    super(message)
    this.code = message.split(' ', 1)[0] ?? ''
  }
}

/** Bytes that are not RESP: the connection cannot be trusted any more. */
export class RespProtocolError extends Error {
  override name = 'RespProtocolError'
}

export type Reply = string | number | null | RedisReplyError | Reply[]

/** One command, as RESP: an array of bulk strings. */
export function encodeCommand(args: readonly (string | number)[]): string {
  let out = `*${args.length}\r\n`
  for (const arg of args) {
    const text = String(arg)
    out += `$${Buffer.byteLength(text)}\r\n${text}\r\n`
  }
  return out
}

// A reply nested deeper, or a bulk string longer, than keygate's scripts ever produce is a broken peer.
const MAX_DEPTH = 8
const MAX_BULK_BYTES = 1 << 20
const MAX_ARRAY_LENGTH = 1 << 16
const CR = 13

interface Parsed {
  value: Reply
  end: number
}

/** Feeds chunks in, calls `onReply` once per complete reply, in order. Throws `RespProtocolError`. */
export class ReplyParser {
  private rest: Buffer | undefined

  constructor(private readonly onReply: (reply: Reply) => void) {}

  push(chunk: Buffer): void {
    const data = this.rest === undefined ? chunk : Buffer.concat([this.rest, chunk])
    let offset = 0
    while (offset < data.length) {
      const parsed = parseAt(data, offset, 0)
      if (parsed === undefined) break // incomplete: wait for the next chunk
      offset = parsed.end
      this.onReply(parsed.value)
    }
    this.rest = offset < data.length ? data.subarray(offset) : undefined
  }

  /** Drops a partial reply (the connection it came from is gone). */
  reset(): void {
    this.rest = undefined
  }
}

/** The reply starting at `offset`, or undefined when it has not arrived whole yet. */
function parseAt(data: Buffer, offset: number, depth: number): Parsed | undefined {
  const lineEnd = data.indexOf('\r\n', offset + 1)
  if (lineEnd === -1) {
    if (data.length - offset > 64 * 1024) throw new RespProtocolError('a reply line longer than 64 KiB')
    return undefined
  }
  const type = data[offset]
  const line = data.toString('latin1', offset + 1, lineEnd)
  const next = lineEnd + 2
  switch (type) {
    case 0x2b: // + simple string
      return { value: line, end: next }
    case 0x2d: // - error
      return { value: new RedisReplyError(line), end: next }
    case 0x3a: // : integer
      return { value: integerOf(line), end: next }
    case 0x24: // $ bulk string
      return bulkAt(data, integerOf(line), next)
    case 0x2a: // * array
      return arrayAt(data, integerOf(line), next, depth)
    default:
      throw new RespProtocolError(`unexpected reply type byte ${String(type)}`)
  }
}

function integerOf(line: string): number {
  if (!/^-?\d{1,16}$/.test(line)) throw new RespProtocolError('a length or integer that is not a number')
  return Number(line)
}

function bulkAt(data: Buffer, length: number, start: number): Parsed | undefined {
  if (length === -1) return { value: null, end: start }
  if (length < 0 || length > MAX_BULK_BYTES) throw new RespProtocolError(`a bulk string of ${length} bytes`)
  if (data.length < start + length + 2) return undefined
  if (data[start + length] !== CR) throw new RespProtocolError('a bulk string not ended by CRLF')
  return { value: data.toString('utf8', start, start + length), end: start + length + 2 }
}

function arrayAt(data: Buffer, length: number, start: number, depth: number): Parsed | undefined {
  if (length === -1) return { value: null, end: start }
  if (length < 0 || length > MAX_ARRAY_LENGTH) throw new RespProtocolError(`an array of ${length} elements`)
  if (depth >= MAX_DEPTH) throw new RespProtocolError('arrays nested too deep')
  const items: Reply[] = []
  let end = start
  for (let i = 0; i < length; i++) {
    if (end >= data.length) return undefined
    const item = parseAt(data, end, depth + 1)
    if (item === undefined) return undefined
    items.push(item.value)
    end = item.end
  }
  return { value: items, end }
}
