/**
 * The guard's Web-standard variant, for fetch-style apps (Hono and others on Node), with Web
 * `Request` and `Response` only: `fetch(request, info)` resolves with keygate's refusal, or with
 * `undefined` when the request may go on; `answered(request, response)` adds keygate's headers
 * (RateLimit, X-Request-Id) to the app's answer and writes the access line and metrics with its
 * status. It runs the node:http guard on a request and response that carry only what it reads
 * and writes.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { keyIdOf, rememberKeyId } from './identity.js'

export interface FetchGuardInfo {
  /** The client's address (the socket peer; `TRUST_PROXY` applies to `X-Forwarded-For` as everywhere). */
  clientAddress?: string
}

/** What an allowed request left: the headers for its answer, and the access line waiting for its status. */
interface Pending {
  headers: Array<[string, string]>
  finish(status: number): void
}

type NodeGuard = (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void

export function fetchVariantOf(guard: NodeGuard) {
  const pending = new WeakMap<Request, Pending>()
  const fetch = (request: Request, info: FetchGuardInfo = {}) =>
    new Promise<Response | undefined>((resolve, reject) => {
      const req = nodeRequestOf(request, info) as unknown as IncomingMessage
      const res = new CapturedResponse(resolve)
      guard(req, res as unknown as ServerResponse, (error) => {
        if (error !== undefined) return reject(error)
        rememberKeyId(request, keyIdOf(req))
        pending.set(request, { headers: res.headers, finish: (status) => res.close(status) })
        resolve(undefined)
      })
    })
  const answered = (request: Request, response: Response): Response => {
    const allowed = pending.get(request)
    if (allowed === undefined) return response
    pending.delete(request)
    const headers = new Headers(response.headers)
    for (const [name, value] of allowed.headers) headers.set(name, value)
    allowed.finish(response.status)
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers })
  }
  return { fetch, answered }
}

/** The fields of a node:http request that keygate reads, from a Web request. */
function nodeRequestOf(request: Request, info: FetchGuardInfo) {
  const url = new URL(request.url)
  return {
    method: request.method,
    url: url.pathname + url.search,
    headers: Object.fromEntries(request.headers),
    httpVersionMajor: 1,
    httpVersionMinor: 1,
    socket: { remoteAddress: info.clientAddress ?? '' },
  }
}

/** The fields of a node:http response that keygate writes: a refusal becomes a Response. */
class CapturedResponse {
  statusCode = 200
  headersSent = false
  destroyed = false
  readonly headers: Array<[string, string]> = []
  private status = 200
  private head: string[] = []
  private readonly closeListeners: Array<() => void> = []

  constructor(private readonly refuse: (response: Response) => void) {}

  setHeader(name: string, value: string): void {
    this.headers.push([name, value])
  }

  writeHead(status: number, head: string[]): this {
    this.status = status
    this.head = head
    this.headersSent = true
    return this
  }

  end(body?: string): void {
    const headers = new Headers()
    for (let i = 0; i < this.head.length; i += 2) headers.append(this.head[i] as string, this.head[i + 1] as string)
    this.statusCode = this.status
    this.refuse(new Response(body === undefined || body === '' ? null : body, { status: this.status, headers }))
    this.close(this.status)
  }

  once(event: string, listener: () => void): this {
    if (event === 'close') this.closeListeners.push(listener)
    return this
  }

  /** The answer is over (keygate's refusal, or the app's answer with `status`): its access line is written. */
  close(status: number): void {
    this.statusCode = status
    for (const listener of this.closeListeners.splice(0)) listener()
  }
}
