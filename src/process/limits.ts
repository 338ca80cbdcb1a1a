/** Where a serving process keeps its limit counters: Redis, the cluster primary, or its own memory. */
import { throttleOptionsOf, type Config } from '../config.js'
import { createThrottle, type Throttle } from '../limits/throttle.js'
import type { RateLimitStore } from '../limits/rate-limit.js'
import type { Logger } from '../observe/log.js'

export interface Limits {
  throttle?: Throttle
  /** Default (undefined): the handler's memory. */
  rateLimits?: RateLimitStore
  store?: { up(): number; errors(): number }
}

/**
 * Where the limit counters live: Redis with `REDIS_URL`, else the cluster primary in a worker,
 * else this process's memory. Waits briefly for Redis, and serves without it (as configured).
 */
export async function createLimits(config: Config, log: Logger, worker: typeof import('./cluster-worker.js') | undefined): Promise<Limits> {
  const throttle = throttleOptionsOf(config)
  const redis = config.redis
  if (redis !== undefined) {
    const [{ createRedisLimits }, { describeRedis }] = await Promise.all([import('../limits/redis-store.js'), import('../redis/url.js')])
    const store = describeRedis(redis.address)
    const limits = createRedisLimits({
      redis: redis.address,
      timeoutMs: redis.timeoutMs,
      prefix: redis.prefix,
      onFailure: redis.onFailure,
      throttle,
      onStateChange: (up, reason) =>
        up ? log.info('limits store reachable', { store }) : log.warn('limits store unreachable', { store, reason, onFailure: redis.onFailure }),
    })
    await limits.whenUp(redis.timeoutMs)
    return { throttle: limits.throttle, rateLimits: limits.rateLimits, store: { up: () => (limits.up ? 1 : 0), errors: () => limits.errors } }
  }
  if (worker !== undefined) return worker.connectWorkerLimits(throttle)
  return { throttle: throttle && createThrottle(throttle) }
}
