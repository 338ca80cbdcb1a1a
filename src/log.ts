/** JSON-lines logger: one object per line, buffered and written once per event-loop turn. */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
export type LogFields = Record<string, string | number | boolean | undefined>

export interface Logger {
  /** True when lines of `level` are written: check it before building costly fields. */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  /** Writes everything buffered now; call it before the process exits. */
  flush(): void
}

export interface LoggerOptions {
  level: LogLevel
  /** Receives whole lines, many at a time. */
  write: (chunk: string) => void
}

// Past this many buffered bytes the buffer is written at once instead of at the end of the turn.
const FLUSH_AT_BYTES = 64 * 1024

/** Creates a logger writing lines at or above `level` to `write`. */
export function createLogger({ level, write }: LoggerOptions): Logger {
  const threshold = LOG_LEVELS.indexOf(level)
  let buffer = ''
  let scheduled = false
  const flush = (): void => {
    scheduled = false
    if (buffer === '') return
    const chunk = buffer
    buffer = ''
    write(chunk)
  }
  const line = (lineLevel: LogLevel) => (msg: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(lineLevel) < threshold) return
    buffer += JSON.stringify({ time: new Date().toISOString(), level: lineLevel, msg, ...fields }) + '\n'
    if (buffer.length >= FLUSH_AT_BYTES) flush()
    else if (!scheduled) {
      scheduled = true
      setImmediate(flush)
    }
  }
  return {
    enabled: (lineLevel) => LOG_LEVELS.indexOf(lineLevel) >= threshold,
    debug: line('debug'),
    info: line('info'),
    warn: line('warn'),
    error: line('error'),
    flush,
  }
}

/** A logger that writes nothing: the default for embedded handlers. */
export const silentLogger: Logger = createLogger({ level: 'silent', write: () => {} })
