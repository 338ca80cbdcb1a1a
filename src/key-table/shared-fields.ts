/** What a key set holds besides its entries: the keys file's `defaults` and `public` rules, compiled. Pure. */
import type { CompiledDefaults } from './key-columns.js'
import { compileAddressSet } from '../keys/address-set.js'
import { compilePolicy, type Policy } from '../keys/policy.js'
import { compileQuota, type QuotaSpec } from '../limits/quota.js'
import { compileRateLimit, type RateLimitSpec } from '../limits/rate-limit.js'

/** What every entry without a field of its own gets (the keys file's `defaults`). */
export interface KeyDefaults {
  allow?: string[]
  rateLimit?: RateLimitSpec | null
  quota?: QuotaSpec | null
  ips?: string[] | null
}

export interface FinishOptions {
  publicRules?: readonly string[]
  defaults?: KeyDefaults
  /** false: the set is only checked (its store finds no key), which spares building the index. */
  indexed?: boolean
}

export interface SharedFields {
  publicPolicy?: Policy
  defaults: CompiledDefaults
}

/** The public rules and the defaults, compiled; each fault is added to `problems`, naming its field. */
export function compileShared(options: FinishOptions, problems: string[]): SharedFields {
  const compileOr = <T>(compile: () => T, describe: (message: string) => string): T | undefined => {
    try {
      return compile()
    } catch (error) {
      problems.push(describe((error as Error).message))
      return undefined
    }
  }
  const publicPolicy = compileOr(() => (options.publicRules === undefined ? undefined : compilePolicy(options.publicRules)), (message) => message.replace(/^allow\[/, 'public['))
  const { allow, rateLimit, quota: quotaSpec, ips } = options.defaults ?? {}
  const inDefaults = (message: string) => `defaults: ${message}`
  const policy = compileOr(() => (allow === undefined ? undefined : compilePolicy(allow)), inDefaults)
  const limit = compileOr(() => (rateLimit === undefined || rateLimit === null ? undefined : compileRateLimit(rateLimit, '')), inDefaults)
  const quota = compileOr(() => (quotaSpec === undefined || quotaSpec === null ? undefined : compileQuota(quotaSpec)), inDefaults)
  const addresses = compileOr(() => (ips === undefined || ips === null ? undefined : compileAddressSet(ips)), inDefaults)
  return { publicPolicy, defaults: { policy, limit, quota, addresses } }
}
