/**
 * Limit counters in Redis or Valkey, shared by every keygate process that uses it. Each count is
 * one script (atomic, one key), so two processes never race on a counter. Only counters are
 * stored, under the prefix and with a TTL: `fail:<client>` (failed attempts in a fixed window),
 * `rate:<key id> <L/W/B>` (a GCRA TAT in microseconds of the server's clock) and
 * `quota:<key id> <period> <start>` (a count, kept a minute past its period). A client that
 * reaches the limit is announced on `<prefix>blocked`, so every process refuses it without asking
 * Redis. While Redis is away, `onFailure` decides: `local` counts in this process, `open`
 * enforces nothing, `closed` answers 503.
 */
import { createRedisClient, defineScript, RedisUnavailableError, type RedisClient } from '../redis/client.js'
import type { RedisAddress, RedisFailureMode } from '../redis/url.js'
import { periodAt, QUOTA_UNAVAILABLE, quotaDecision, type Quota, type QuotaDecision } from './quota.js'
import { createMemoryRateLimitStore, decisionAt, GCRA_EPSILON_MS, RATE_UNAVAILABLE, type RateDecision, type RateLimit, type RateLimitStore } from './rate-limit.js'
import { createSharedThrottle, type FailureVerdict } from './shared-throttle.js'
import { createThrottle, THROTTLE_UNAVAILABLE, type Throttle } from './throttle.js'
import type { Reply } from '../redis/resp.js'

export interface RedisLimitsOptions {
  redis: RedisAddress
  /** Deadline of every command (`REDIS_TIMEOUT_MS`, default 250). */
  timeoutMs?: number
  /** Start of every key and of the channel (`REDIS_PREFIX`, default `keygate:`). */
  prefix?: string
  onFailure?: RedisFailureMode
  /** Failed-attempt throttling (all three fields); absent: none. */
  throttle?: { limit: number; windowMs: number; maxClients: number }
  /** Told when Redis goes away (`up` false) and when it is back; the reason never holds a secret. */
  onStateChange?: (up: boolean, reason: string) => void
}

export interface RedisLimits {
  throttle?: Throttle
  rateLimits: RateLimitStore
  readonly up: boolean
  /** Commands that failed (no answer in time, connection lost, error reply) and connection attempts that failed. */
  readonly errors: number
  whenUp(ms: number): Promise<boolean>
  close(): void
}

// Every counting script first checks its deadline (ARGV's last, microseconds of the server's
// clock): one that runs after keygate gave up on it (Redis was frozen) counts nothing.
const TOO_LATE = -1

// KEYS[1] the client's counter; ARGV: limit, window (ms), channel, client, deadline.
const FAIL = defineScript(`
local t = redis.call('TIME')
if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(ARGV[5]) then return {${TOO_LATE}, 0} end
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if n == tonumber(ARGV[1]) then
  redis.call('PUBLISH', ARGV[3], ttl .. ' ' .. ARGV[4])
end
return {n, ttl}
`)

// KEYS[1] the key's TAT (microseconds of the server's clock); ARGV: interval (us), burst, epsilon (us), deadline.
// Returns {allowed, how far the TAT was ahead of now (us)}.
const GCRA = defineScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(ARGV[4]) then return {${TOO_LATE}, 0} end
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local ahead = tat - now
if ahead + interval <= tonumber(ARGV[2]) * interval + tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil((ahead + interval) / 1000))
  return {1, math.floor(ahead)}
end
return {0, math.floor(ahead)}
`)

// KEYS[1] the key's count in one period; ARGV: limit, when the period ends (ms since the epoch), deadline.
// Counts only when the period has room. Returns {allowed, the count before this request}.
const QUOTA = defineScript(`
local t = redis.call('TIME')
if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(ARGV[3]) then return {${TOO_LATE}, 0} end
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if used >= tonumber(ARGV[1]) then return {0, used} end
redis.call('INCR', KEYS[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {1, used}
`)
// A period's counter outlives the period's end by this much: a process whose clock is a little
// behind still finds the count of the period it is in, instead of a fresh one.
const QUOTA_EXPIRY_MARGIN_MS = 60_000

/** Connects (in the background: keygate serves while Redis is away) and returns the throttle and rate limiter. */
export function createRedisLimits(options: RedisLimitsOptions): RedisLimits {
  const { prefix = 'keygate:', onFailure = 'local', timeoutMs = 250 } = options
  const channel = `${prefix}blocked`
  let errors = 0
  const client = createRedisClient({ ...options.redis, timeoutMs, onStateChange: options.onStateChange })
  const failed = () => void errors++
  const throttle = options.throttle === undefined ? undefined : redisThrottle(client, options.throttle, prefix, onFailure, failed)
  const subscriber = throttle === undefined
    ? undefined
    : createRedisClient({ ...options.redis, timeoutMs, subscribe: { channel, onMessage: (payload) => learnBlock(throttle, payload) } })
  return {
    throttle,
    rateLimits: redisRateLimits(client, prefix, onFailure, failed),
    get up() {
      return client.up
    },
    get errors() {
      return errors + client.connectionFailures
    },
    whenUp: (ms) => client.whenUp(ms),
    close() {
      client.close()
      subscriber?.close()
    },
  }
}

type LearningThrottle = Throttle & { block(client: string, ms: number, nowMs: number): void }

/** `<ms> <client>`, as the FAIL script publishes it. */
function learnBlock(throttle: LearningThrottle, payload: string): void {
  const space = payload.indexOf(' ')
  const ms = Number(payload.slice(0, space))
  // A block of no time (`0`, an empty number) blocks nobody: block() ignores it.
  if (space !== -1 && Number.isFinite(ms)) throttle.block(payload.slice(space + 1), ms, Date.now())
}

function redisThrottle(
  client: RedisClient,
  { limit, windowMs, maxClients }: NonNullable<RedisLimitsOptions['throttle']>,
  prefix: string,
  onFailure: RedisFailureMode,
  failed: () => void,
): LearningThrottle {
  const local = createThrottle({ limit, windowMs, maxClients })
  const shared = createSharedThrottle(maxClients, async (address): Promise<FailureVerdict> => {
    const [n, ttl] = numbers(await client.runScript(FAIL, `${prefix}fail:${address}`, [limit, windowMs, `${prefix}blocked`, address, client.deadlineUs()]))
    return { alreadyBlocked: n > limit, blockedForMs: n >= limit ? ttl : 0 }
  })
  // While Redis is away: `open` refuses nobody, `closed` everybody, `local` counts here (and keeps the blocks it learnt).
  const checkAway = (address: string, nowMs: number): number =>
    onFailure === 'local' ? Math.max(local.retryAfterS(address, nowMs), shared.retryAfterS(address, nowMs)) : onFailure === 'closed' ? THROTTLE_UNAVAILABLE : 0
  const countAway = (address: string, nowMs: number): number =>
    onFailure === 'local' ? local.recordFailure(address, nowMs) : onFailure === 'closed' ? THROTTLE_UNAVAILABLE : 0
  return {
    get size() {
      return shared.size + (client.up ? 0 : local.size)
    },
    get mayRefuse() {
      return client.up ? shared.size > 0 : onFailure === 'closed' || (onFailure === 'local' && shared.size + local.size > 0)
    },
    retryAfterS: (address, nowMs) => (client.up ? shared.retryAfterS(address, nowMs) : checkAway(address, nowMs)),
    recordFailure(address, nowMs) {
      if (!client.up) return countAway(address, nowMs)
      return shared.recordFailure(address, nowMs).catch(() => {
        failed()
        return countAway(address, Date.now())
      })
    },
    block: shared.block,
  }
}

function redisRateLimits(client: RedisClient, prefix: string, onFailure: RedisFailureMode, failed: () => void): RateLimitStore {
  const local = createMemoryRateLimitStore()
  const whileAway = (stateKey: string, limit: RateLimit, nowMs: number): RateDecision | undefined =>
    onFailure === 'local' ? local.take(stateKey, limit, nowMs) : onFailure === 'closed' ? RATE_UNAVAILABLE : undefined
  const spendWhileAway = (quota: Quota, nowMs: number): QuotaDecision | undefined =>
    onFailure === 'local' ? local.spend(quota, nowMs) : onFailure === 'closed' ? QUOTA_UNAVAILABLE : undefined
  return {
    get size() {
      return local.size
    },
    // The period is keygate's clock's (see docs/plans.md): the counter's name holds its start.
    spend(quota, nowMs) {
      if (!client.up) return spendWhileAway(quota, nowMs)
      const { startMs, endMs } = periodAt(quota.period, nowMs)
      const key = `${prefix}quota:${quota.stateKey.replace('\n', ' ')} ${new Date(startMs).toISOString()}`
      return client
        .runScript(QUOTA, key, [quota.limit, endMs + QUOTA_EXPIRY_MARGIN_MS, client.deadlineUs()])
        .then((reply) => quotaDecision(quota, numbers(reply)[1], endMs, nowMs))
        .catch(() => {
          failed()
          return spendWhileAway(quota, Date.now())
        })
    },
    take(stateKey, limit, nowMs) {
      if (!client.up) return whileAway(stateKey, limit, nowMs)
      const key = `${prefix}rate:${stateKey.replace('\n', ' ')}`
      return client
        .runScript(GCRA, key, [limit.intervalMs * 1000, limit.burst, GCRA_EPSILON_MS * 1000, client.deadlineUs()])
        .then((reply) => {
          const [allowed, aheadUs] = numbers(reply)
          return decisionAt(aheadUs / 1000, limit, allowed === 1)
        })
        .catch(() => {
          failed()
          return whileAway(stateKey, limit, Date.now())
        })
    },
  }
}

function numbers(reply: Reply): [number, number] {
  if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') throw new TypeError('unexpected script reply')
  if (reply[0] === TOO_LATE) throw new RedisUnavailableError('the script ran after its deadline')
  return [reply[0], reply[1]]
}
