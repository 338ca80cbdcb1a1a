/** Request bodies: keygate's routes take none, but must not be made to swallow a huge one. */
import type { IncomingMessage } from 'node:http'

/** Bodies larger than this get 413 (the default of `MAX_BODY_BYTES`). */
export const MAX_BODY_BYTES = 1024 * 1024

/** True when the request announces a body that has not been read yet. */
export function hasUnreadBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  const announced = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
  return announced && !req.readableEnded
}

/**
 * Reads and discards the body, then calls `onDone`; calls `onTooLarge` instead as soon as the
 * body is known to exceed `maxBytes`, by its `Content-Length` or by the bytes received.
 */
export function discardBody(req: IncomingMessage, onDone: () => void, onTooLarge: () => void, maxBytes = MAX_BODY_BYTES): void {
  if (Number(req.headers['content-length']) > maxBytes) return onTooLarge()
  let received = 0
  const onData = (chunk: Buffer) => {
    received += chunk.length
    if (received <= maxBytes) return
    req.off('data', onData).off('end', onDone)
    onTooLarge()
  }
  req.on('data', onData).once('end', onDone)
}

// Requests whose `100 Continue` keygate sends itself, once it has decided (the server routes
// Node's 'checkContinue' here): a refused client then never uploads its body.
const continueOwed = new WeakSet<IncomingMessage>()

/** Node left this request's `100 Continue` to keygate. */
export function oweContinue(req: IncomingMessage): void {
  continueOwed.add(req)
}

/** True (once) when this request still waits for its `100 Continue`: the caller sends it now. */
export function takeContinue(req: IncomingMessage): boolean {
  return continueOwed.delete(req)
}
