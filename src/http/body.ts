/** Request bodies: keygate's routes take none, but must not be made to swallow a huge one. */
import type { IncomingMessage } from 'node:http'

/** Bodies larger than this get 413. */
export const MAX_BODY_BYTES = 1024 * 1024

/** True when the request announces a body that has not been read yet. */
export function hasUnreadBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  const announced = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
  return announced && !req.readableEnded
}

/**
 * Reads and discards the body, then calls `onDone`; calls `onTooLarge` instead as soon as the
 * body is known to exceed `MAX_BODY_BYTES`, by its `Content-Length` or by the bytes received.
 */
export function discardBody(req: IncomingMessage, onDone: () => void, onTooLarge: () => void): void {
  if (Number(req.headers['content-length']) > MAX_BODY_BYTES) return onTooLarge()
  let received = 0
  const onData = (chunk: Buffer) => {
    received += chunk.length
    if (received <= MAX_BODY_BYTES) return
    req.off('data', onData).off('end', onDone)
    onTooLarge()
  }
  req.on('data', onData).once('end', onDone)
}
