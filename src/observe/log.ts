/** JSON-lines logger: lines are buffered and written in batches (every 50 ms or 64 KiB), never one write per line. */
import { createSink } from './log-sink.js'

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
export type LogFields = Record<string, string | number | boolean | undefined>

/** The fields of one access line; `path` must already be free of the query string. */
export interface AccessFields {
  /** Undefined for an answer to a request Node could not parse (400, 408, 431). */
  method: string | undefined
  /** Without the query string; undefined when the request could not be parsed. */
  path: string | undefined
  status: number
  /** Milliseconds; written rounded to three decimals. */
  ms: number
  keyId: string | undefined
  reason: string | undefined
  /** True when the key was an entry's earlier key (a rotation's `previous`). */
  previousKey?: boolean
  client: string
  requestId: string
  /** For forward-auth: the method and path the proxy was asked for. */
  originalMethod?: string
  originalPath?: string
  /** `/auth`: why the original request was refused as ambiguous (400); keygate's words, never the request's. */
  originalProblem?: string
  /** Proxy mode: the service's status (absent when it never answered), the time of the exchange, what went wrong. */
  upstreamStatus?: number
  upstreamMs?: number
  upstreamError?: string
  /** Node's code for that failure (`ECONNREFUSED`, `DEPTH_ZERO_SELF_SIGNED_CERT`...). */
  upstreamErrorCode?: string
}

export interface Logger {
  /** True when lines of `level` are written: check it before building costly fields. */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  /** The `request` line at `info`, built without an intermediate object. */
  access(fields: AccessFields): void
  /** Lines dropped so far because the destination could not keep up. */
  readonly dropped: number
  /** Writes everything buffered now, synchronously; call it before the process exits. */
  flush(): void
}

interface LoggerSettings {
  level: LogLevel
  /** Bytes buffered at most while the destination is busy; past it lines are dropped and counted. */
  maxBufferBytes?: number
  /** Fields added to every line but access lines, such as a cluster worker's id. */
  base?: LogFields
}

/** Where lines go: `write` or `fd`, one of the two (the types require it, as `createLogger` does). */
export type LoggerOptions = LoggerSettings &
  (
    | {
        /** A synchronous destination for whole lines, many at a time (embedding, tests). */
        write: (chunk: string) => void
        fd?: undefined
        shared?: undefined
      }
    | {
        write?: undefined
        /** A file descriptor (1: stdout) written asynchronously, one write in flight at a time. */
        fd: number
        /**
         * Write in pieces of at most 4096 bytes (PIPE_BUF), which a pipe takes atomically, for
         * processes sharing one stdout (cluster workers). Otherwise pieces of up to 64 KiB: fewer writes.
         */
        shared?: boolean
      }
  )

const DEFAULT_MAX_BUFFER_BYTES = 4 * 1024 * 1024
// A batch is written when it reaches this size, or this long after its first line.
const FLUSH_AT_BYTES = 64 * 1024
const FLUSH_EVERY_MS = 50

/** Creates a logger writing lines at or above `level` to `write` or `fd`. */
export function createLogger(options: LoggerOptions): Logger {
  const threshold = LOG_LEVELS.indexOf(options.level)
  const sink = createSink(options)
  const maxBufferBytes = options.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES
  // Lines are kept apart and joined once per batch: appending to one string would build a rope
  // of thousands of pieces, slower to flatten when the batch is written.
  let lines: string[] = []
  let buffered = 0 // characters in `lines`
  let dropped = 0
  let droppedSinceReport = 0
  let timer: NodeJS.Timeout | undefined

  const takeBatch = (): string => {
    const batch = lines.join('')
    lines = []
    buffered = 0
    return batch
  }
  const schedule = (): void => {
    if (timer !== undefined) return
    timer = setTimeout(drain, FLUSH_EVERY_MS)
    timer.unref() // the exit handler flushes: a pending batch must not keep the process alive
  }
  const drain = (): void => {
    clearTimeout(timer)
    timer = undefined
    if (sink.busy() || lines.length === 0) return
    if (droppedSinceReport > 0) {
      lines.push(lineOf('warn', 'log lines dropped: the destination could not keep up', { count: droppedSinceReport }))
      droppedSinceReport = 0
    }
    sink.write(takeBatch(), written)
  }
  const written = (): void => {
    if (buffered >= FLUSH_AT_BYTES) drain()
    else if (lines.length > 0) schedule()
  }
  const append = (line: string): void => {
    if (buffered + line.length > maxBufferBytes) {
      dropped++
      droppedSinceReport++
      return
    }
    lines.push(line)
    buffered += line.length
    if (buffered >= FLUSH_AT_BYTES && !sink.busy()) drain()
    else schedule()
  }
  const base = options.base
  const at = (level: LogLevel) => (msg: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(level) >= threshold) append(lineOf(level, msg, base === undefined ? fields : { ...fields, ...base }))
  }
  const accessEnabled = LOG_LEVELS.indexOf('info') >= threshold
  // The base fields (a cluster worker's number) end every access line too, as ready-made JSON.
  const baseFields = base === undefined || Object.keys(base).length === 0 ? '' : `,${JSON.stringify(base).slice(1, -1)}`
  return {
    enabled: (level) => LOG_LEVELS.indexOf(level) >= threshold,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    access: (fields) => {
      if (accessEnabled) append(accessLineOf(fields, baseFields))
    },
    get dropped() {
      return dropped
    },
    flush() {
      sink.flushSync(takeBatch())
    },
  }
}

/** A logger that writes nothing: the default for embedded handlers. */
export const silentLogger: Logger = createLogger({ level: 'silent', write: () => {} })

function lineOf(level: LogLevel, msg: string, fields?: LogFields): string {
  return `${JSON.stringify({ time: isoNow(), level, msg, ...fields })}\n`
}

function accessLineOf(f: AccessFields, baseFields: string): string {
  // Hand-built, as this runs once per request. The method (an HTTP token Node checked), the client
  // (an IP address) and the request id (checked or generated) need no escaping; any other text
  // of plain characters is quoted as it is, and the rest goes through JSON.stringify.
  let line = `{"time":"${isoNow()}","level":"info","msg":"request"`
  if (f.method !== undefined) line += `,"method":"${f.method}"`
  if (f.path !== undefined) line += `,"path":${jsonString(f.path)}`
  line += `,"status":${f.status},"ms":${millisecondsOf(f.ms)}`
  if (f.keyId !== undefined) line += `,"keyId":${jsonString(f.keyId)}`
  if (f.reason !== undefined) line += `,"reason":"${f.reason}"`
  if (f.previousKey === true) line += ',"previousKey":true'
  if (f.originalMethod !== undefined) line += `,"originalMethod":${jsonString(f.originalMethod)}`
  if (f.originalPath !== undefined) line += `,"originalPath":${jsonString(f.originalPath)}`
  if (f.originalProblem !== undefined) line += `,"originalProblem":${jsonString(f.originalProblem)}`
  if (f.upstreamStatus !== undefined) line += `,"upstreamStatus":${f.upstreamStatus}`
  if (f.upstreamMs !== undefined) line += `,"upstreamMs":${millisecondsOf(f.upstreamMs)}`
  if (f.upstreamError !== undefined) line += `,"upstreamError":"${f.upstreamError}"`
  if (f.upstreamErrorCode !== undefined) line += `,"upstreamErrorCode":${jsonString(f.upstreamErrorCode)}`
  return `${line},"client":"${f.client}","requestId":"${f.requestId}"${baseFields}}\n`
}

// Printable ASCII but the quote and the backslash: JSON as it is.
const PLAIN_JSON_TEXT = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/

function jsonString(value: string): string {
  return PLAIN_JSON_TEXT.test(value) ? `"${value}"` : JSON.stringify(value)
}

/**
 * Milliseconds rounded to three decimals, printed as JavaScript prints such a number (0.31, 7,
 * 1234.568), from whole microseconds: cheaper than printing a double.
 */
function millisecondsOf(ms: number): string {
  const us = Math.round(ms * 1000)
  const whole = Math.floor(us / 1000)
  const fraction = us - whole * 1000
  if (fraction === 0) return `${whole}`
  if (fraction % 100 === 0) return `${whole}.${fraction / 100}`
  if (fraction % 10 === 0) return `${whole}.${fraction < 100 ? '0' : ''}${fraction / 10}`
  return `${whole}.${fraction < 10 ? '00' : fraction < 100 ? '0' : ''}${fraction}`
}

let cachedMs = 0
let cachedIso = ''
/** `new Date().toISOString()`, computed at most once per millisecond. */
function isoNow(): string {
  const now = Date.now()
  if (now !== cachedMs) {
    cachedMs = now
    cachedIso = new Date(now).toISOString()
  }
  return cachedIso
}
