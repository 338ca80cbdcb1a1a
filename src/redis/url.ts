/** `redis://[[user]:password@]host[:port][/db]` and `rediss://` (TLS), read without ever echoing the password. */

/** What `LIMITS_ON_REDIS_FAILURE` may say: count in this process, enforce nothing, or answer 503. */
export const REDIS_FAILURE_MODES = ['local', 'open', 'closed'] as const
export type RedisFailureMode = (typeof REDIS_FAILURE_MODES)[number]

export interface RedisAddress {
  host: string
  port: number
  tls: boolean
  /** ACL user (Redis 6+); without it `AUTH` has the password alone (the `default` user). */
  user?: string
  password?: string
  db: number
}

/** The address in `url`, or a description of what is wrong with it (which never contains the password). */
export function parseRedisUrl(url: string): RedisAddress | string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'is not a URL (expected redis://[[user]:password@]host[:port][/db] or rediss://...)'
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') return `must start with redis:// or rediss://, not ${parsed.protocol}//`
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1')
  if (host === '') return 'has no host'
  if (parsed.search !== '' || parsed.hash !== '') return 'must not have a query or fragment'
  const db = parsed.pathname === '' || parsed.pathname === '/' ? 0 : Number(parsed.pathname.slice(1))
  if (!/^(\/\d{1,5})?\/?$/.test(parsed.pathname) || !Number.isSafeInteger(db)) return 'must end with an optional database number, such as /0'
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part)
    } catch {
      return undefined
    }
  }
  const user = parsed.username === '' ? undefined : decode(parsed.username)
  const password = parsed.password === '' ? undefined : decode(parsed.password)
  if (user === undefined && parsed.username !== '') return 'has a user name with a bad %-escape'
  if (password === undefined && parsed.password !== '') return 'has a password with a bad %-escape'
  if (user !== undefined && password === undefined) return 'has a user but no password (redis://user:password@host)'
  return { host, port: parsed.port === '' ? 6379 : Number(parsed.port), tls: parsed.protocol === 'rediss:', user, password, db }
}

/** The address for logs and the settings line: no user name or password. */
export function describeRedis(address: RedisAddress): string {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host
  return `${address.tls ? 'rediss' : 'redis'}://${host}:${address.port}/${address.db}`
}
