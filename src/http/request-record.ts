/**
 * What is kept of an answered request: its counters (status, time, failure reason, the service's
 * answer in proxy mode) and its access line. The client's address is worked out only if
 * something asks for it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { Logger } from '../observe/log.js'
import { FAILURE_REASONS, type Metrics } from '../observe/metrics.js'
import { clientAddressOf } from './client.js'
import type { Context } from './gate.js'
import type { Outcome } from './replies.js'

const FAILURE_INDEX: Record<string, number> = Object.fromEntries(FAILURE_REASONS.map((reason, i) => [reason, i]))

/** Counts and logs one answered request: `(req, res, path, routeIndex, startedMs, context, outcome)`. */
export type RecordRequest = (req: IncomingMessage, res: ServerResponse, path: string, routeIndex: number, startedMs: number, context: Context, outcome?: Outcome) => void

export function createRequestRecorder(metrics: Metrics, log: Logger): RecordRequest {
  const logging = log.enabled('info')
  return (req, res, path, routeIndex, startedMs, context, outcome) => {
    const ms = performance.now() - startedMs
    const failure = outcome === undefined || outcome.ok ? -1 : (FAILURE_INDEX[outcome.reason] ?? -1)
    metrics.recordRequest(routeIndex, res.statusCode, ms / 1000, failure)
    if (outcome !== undefined && 'previousKey' in outcome) metrics.recordPreviousKey()
    if (context.upstream !== undefined) metrics.recordUpstream(context.upstream.status, context.upstream.error)
    if (logging) logRequest(log, req, res, path, ms, context, outcome)
  }
}

/** What a route needs beyond `req`; the client's address is worked out only if something asks for it. */
export class RequestContext implements Context {
  private address: string | undefined
  original: Context['original'] = undefined

  constructor(
    readonly requestId: string,
    private readonly req: IncomingMessage,
    private readonly trustProxy: number,
  ) {}

  get client(): string {
    this.address ??= clientAddressOf(this.req, this.trustProxy)
    return this.address
  }
}

const MAX_LOGGED_PATH = 256

function logRequest(
  log: Logger,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  ms: number,
  context: Context,
  outcome: Outcome | undefined,
): void {
  log.access({
    method: req.method,
    path: path.length > MAX_LOGGED_PATH ? path.slice(0, MAX_LOGGED_PATH) : path,
    status: res.statusCode,
    ms,
    keyId: outcome?.keyId || undefined, // a public request has no key
    reason: outcome?.ok === false ? outcome.reason : undefined,
    // An entry's earlier key (a rotation's): who has not switched yet.
    ...(outcome !== undefined && 'previousKey' in outcome && { previousKey: true }),
    client: context.client,
    requestId: context.requestId,
    // The route's own reading of it: canonical, without the query (which may hold secrets).
    ...(context.original !== undefined && 'problem' in context.original && { originalProblem: context.original.problem }),
    ...(context.original !== undefined && !('problem' in context.original) && {
      originalMethod: context.original.method,
      originalPath: context.original.path.slice(0, MAX_LOGGED_PATH),
    }),
    ...(context.upstream !== undefined && {
      upstreamStatus: context.upstream.status,
      upstreamMs: context.upstream.ms,
      upstreamError: context.upstream.error,
      upstreamErrorCode: context.upstream.code,
    }),
  })
}
