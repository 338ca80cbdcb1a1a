/** Which key let a request through a guard: kept beside the request, never on it (a host app's object). */
import type { IncomingMessage } from 'node:http'

const identities = new WeakMap<IncomingMessage | Request, string>()

/**
 * The id of the key that let `req` through a guard (a node:http request, or the Web request of the
 * fetch variant); undefined for a request a `public` rule let through, or no guard's.
 */
export function keyIdOf(req: IncomingMessage | Request): string | undefined {
  return identities.get(req)
}

/** Records the key id of a request a guard let through. */
export function rememberKeyId(req: IncomingMessage | Request, keyId: string | undefined): void {
  if (keyId !== undefined) identities.set(req, keyId)
}
