/** JSON responses written by hand: body buffers and header blocks are built once, at startup. */
import { randomFillSync } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'

/** A response prepared ahead of time: status, body and every header; only `X-Request-Id` varies. */
export interface Reply {
  readonly status: number
  /** The exact text sent. A string: Node then writes head and body in one write, not a writev of two. */
  readonly body: string
  /** Flat `[name, value, ...]` list, the form `writeHead` takes fastest; the last value is the request id. */
  readonly headers: string[]
}

const JSON_TYPE = 'application/json; charset=utf-8'
/** Prometheus text exposition format 0.0.4. */
export const METRICS_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
const COMMON_HEADERS = ['cache-control', 'no-store', 'x-content-type-options', 'nosniff']
const SAFE_REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/

/** Prepares a reply (JSON unless `contentType` says otherwise); `body` is the exact text sent. */
export function createReply(status: number, body: string, extraHeaders: readonly string[] = [], contentType = JSON_TYPE): Reply {
  const length = String(Buffer.byteLength(body))
  return {
    status,
    body,
    headers: ['content-type', contentType, 'content-length', length, ...COMMON_HEADERS, ...extraHeaders, 'x-request-id', ''],
  }
}

/** Prepares a reply with no body (204): no `Content-Type` or `Content-Length`, as RFC 9110 wants. */
export function createEmptyReply(status: number, extraHeaders: readonly string[] = []): Reply {
  return { status, body: '', headers: [...COMMON_HEADERS, ...extraHeaders, 'x-request-id', ''] }
}

/** The client's `X-Request-Id` when it is 1-128 chars of `[A-Za-z0-9._-]`, otherwise a fresh one. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && SAFE_REQUEST_ID.test(given) ? given : freshRequestId()
}

const ID_BYTES = 16
// Random bytes are drawn 4 KiB at a time: one system call per 256 ids.
const idPool = Buffer.allocUnsafeSlow(ID_BYTES * 256)
let idPoolAt = idPool.length

/**
 * 32 hex characters from 16 random bytes, like nginx's `$request_id`: as unguessable as a UUID,
 * and about half the cost of `randomUUID()` (one flat string instead of one built from pieces).
 */
export function freshRequestId(): string {
  if (idPoolAt === idPool.length) {
    randomFillSync(idPool)
    idPoolAt = 0
  }
  idPoolAt += ID_BYTES
  return idPool.toString('hex', idPoolAt - ID_BYTES, idPoolAt)
}

/** Writes `reply` in one `writeHead`; HEAD gets the headers and no body. */
export function sendReply(
  req: IncomingMessage,
  res: ServerResponse,
  reply: Reply,
  requestId: string,
  extraHeaders?: readonly string[],
): void {
  let headers = reply.headers
  if (extraHeaders === undefined) {
    // The prepared list is reused: writeHead reads it synchronously, before any other request runs.
    headers[headers.length - 1] = requestId
  } else {
    headers = [...headers.slice(0, -2), ...extraHeaders, 'x-request-id', requestId]
  }
  res.writeHead(reply.status, headers)
  if (req.method === 'HEAD' || reply.body === '') res.end()
  else res.end(reply.body)
}

const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'headers_too_large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'timeout'],
}
const MALFORMED: [number, string, string] = [400, 'Bad Request', 'malformed']
// A socket whose answer has not gone out by then (a peer that reads nothing) is destroyed anyway.
const CLIENT_ERROR_WRITE_MS = 1000

/** What `answerClientError` wrote: the status, the request id it gave, and a reason for the access line. */
export interface ClientErrorAnswer {
  status: number
  requestId: string
  reason: string
}

/**
 * The `clientError` answer: malformed HTTP gets 400 (oversized headers 431, a timeout 408) with a
 * JSON body when the socket can still take one; the connection is closed either way.
 * Returns what was written, or `undefined` when the socket could take nothing.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): ClientErrorAnswer | undefined {
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage
  // A TLS socket that never finished its handshake cannot carry an answer: a write would wait
  // for the handshake forever and keep the descriptor open after the peer has gone.
  if (!socket.writable || inFlight?.headersSent === true || !handshakeDone(socket)) {
    socket.destroy()
    return undefined
  }
  const [status, text, reason] = CLIENT_ERRORS[error.code ?? ''] ?? MALFORMED
  const requestId = freshRequestId()
  // A request in progress (Node cut it with 408 while its body came): its own access line, when
  // its handler writes one, says what was sent instead of the 200 its response still holds.
  if (inFlight !== undefined) inFlight.statusCode = status
  writeRawReply(socket, status, text, requestId)
  return { status, requestId, reason }
}

/** Writes a whole JSON error answer on a raw socket, then closes it (destroyed if the peer does not read). */
export function writeRawReply(socket: Duplex, status: number, text: string, requestId: string): void {
  const body = `{"error":"${text}"}`
  const head = [
    `HTTP/1.1 ${status} ${text}`,
    `content-type: ${JSON_TYPE}`,
    `content-length: ${body.length}`,
    'cache-control: no-store',
    'x-content-type-options: nosniff',
    `x-request-id: ${requestId}`,
    'connection: close',
  ]
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`, () => socket.destroy())
  setTimeout(() => socket.destroy(), CLIENT_ERROR_WRITE_MS).unref()
}

function handshakeDone(socket: Duplex): boolean {
  const tls = socket as Duplex & { encrypted?: boolean; _secureEstablished?: boolean }
  return tls.encrypted !== true || tls._secureEstablished === true
}

// Up to this size a body is copied behind the head, to leave in one write(2).
const ONE_WRITE_BYTES = 8 * 1024

/** What of Node's ServerResponse `endWith` relies on: the head it holds until the first write. */
interface HeldHead {
  _header?: unknown
  _headerSent?: unknown
}

/**
 * Ends `res` with `last` as its body. `res.end(body)` goes out as a writev of the head and body
 * plus an empty piece, which costs more than the rest of the answer's own work; a small body
 * whose head is still held (nothing written yet, no chunked coding) is put behind the head
 * instead, and the answer leaves in one write. Where Node's fields are not as expected, `res.end`.
 */
export function endWith(res: ServerResponse, last: Buffer, ended: () => void): void {
  const held = res as ServerResponse & HeldHead
  if (last.length <= ONE_WRITE_BYTES && held._headerSent === false && typeof held._header === 'string' && !res.chunkedEncoding) {
    held._header += last.toString('latin1')
    res.end(ended)
  } else res.end(last, ended)
}
