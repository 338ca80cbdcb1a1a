/**
 * Where log lines go: a function, or a file descriptor written off the event loop in line-aligned
 * pieces (atomic on a pipe shared by cluster workers), flushed synchronously at exit.
 */
import { write as writeFd, writeSync as writeFdSync } from 'node:fs'

// Writes of at most PIPE_BUF bytes to a pipe are atomic: cluster workers sharing stdout never split a line.
const PIPE_BUF = 4096
const LARGE_PIECE_BYTES = 64 * 1024
const RETRY_BUSY_FD_MS = 10

export interface Sink {
  busy(): boolean
  write(chunk: string, done: () => void): void
  flushSync(chunk: string): void
}

/** Where lines go (a subset of the logger's options): a function, or a file descriptor. */
export interface SinkOptions {
  write?: (chunk: string) => void
  fd?: number
  shared?: boolean
}

export function createSink({ write, fd, shared = false }: SinkOptions): Sink {
  if (write !== undefined) {
    return { busy: () => false, write: (chunk, done) => (write(chunk), done()), flushSync: (chunk) => chunk && write(chunk) }
  }
  if (fd === undefined) throw new TypeError('createLogger(options): give write or fd')
  return createFdSink(fd, shared ? PIPE_BUF : LARGE_PIECE_BYTES)
}

/** Writes to a file descriptor off the event loop, in line-aligned pieces of at most `pieceBytes`. */
function createFdSink(fd: number, pieceBytes: number): Sink {
  let pieces: Buffer[] = []
  let writing = false
  let onIdle: () => void = () => {}
  let broken = false
  const next = (): void => {
    const piece = pieces.shift()
    if (piece === undefined || broken) {
      pieces = []
      writing = false
      return onIdle()
    }
    writeFd(fd, piece, (error, written) => {
      if (error?.code === 'EAGAIN') {
        pieces.unshift(piece)
        setTimeout(next, RETRY_BUSY_FD_MS)
        return
      }
      if (error) broken = true // EPIPE or EBADF: nobody is reading; stop writing rather than throw
      else if (written < piece.length) pieces.unshift(piece.subarray(written))
      next()
    })
  }
  return {
    busy: () => writing,
    write(chunk, done) {
      pieces = splitLines(Buffer.from(chunk), pieceBytes)
      writing = true
      onIdle = done
      next()
    },
    flushSync(chunk) {
      // At exit: whatever an async write still holds, then the rest, in order.
      for (const piece of [...pieces, ...splitLines(Buffer.from(chunk), pieceBytes)]) writeAllSync(fd, piece)
      pieces = []
    },
  }
}

function writeAllSync(fd: number, piece: Buffer): void {
  for (let offset = 0, attempts = 0; offset < piece.length && attempts < 1000; attempts++) {
    try {
      offset += writeFdSync(fd, piece, offset)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') return
    }
  }
}

/** Splits at line ends into pieces of at most `pieceBytes` (a longer single line stays whole). */
function splitLines(bytes: Buffer, pieceBytes: number): Buffer[] {
  const pieces: Buffer[] = []
  let start = 0
  while (bytes.length - start > pieceBytes) {
    let end = bytes.lastIndexOf(0x0a, start + pieceBytes - 1)
    if (end < start) end = bytes.indexOf(0x0a, start + pieceBytes)
    if (end === -1) break
    pieces.push(bytes.subarray(start, end + 1))
    start = end + 1
  }
  if (start < bytes.length) pieces.push(bytes.subarray(start))
  return pieces
}
