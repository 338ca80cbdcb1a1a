/**
 * Every environment variable keygate reads: its default, its range and a line of meaning. The
 * configuration code takes defaults and ranges from here, and `keygate serve --help` prints it,
 * so the two cannot disagree.
 */

export interface Setting {
  name: string
  /** What an unset (or empty) variable means, as written; undefined: nothing (the feature is off). */
  fallback?: string
  /** Whole numbers only: the smallest and largest value accepted. */
  range?: readonly [number, number]
  meaning: string
}

const HOUR_MS = 3_600_000

export const SETTINGS = [
  { name: 'PORT', fallback: '3000', range: [0, 65535], meaning: 'TCP port; 0 picks a free one (the listening line says which)' },
  { name: 'HOST', fallback: '127.0.0.1', meaning: 'address to listen on; 0.0.0.0 for other machines' },
  { name: 'API_KEY', meaning: 'one key (id "env"); neither it nor API_KEYS_FILE: the demo key 12345' },
  { name: 'API_KEYS_FILE', meaning: 'path of a keys file, reloaded on SIGHUP and when it changes' },
  { name: 'NODE_ENV', meaning: '"production" refuses to start with the demo key' },
  { name: 'TLS_CERT_FILE', meaning: 'PEM certificate chain: HTTPS (with TLS_KEY_FILE), reloaded on SIGHUP' },
  { name: 'TLS_KEY_FILE', meaning: 'unencrypted PEM private key for TLS_CERT_FILE' },
  { name: 'TRUST_PROXY', fallback: '0', range: [0, 100], meaning: 'proxy hops trusted in X-Forwarded-For; 0 ignores it' },
  { name: 'AUTH_FAIL_LIMIT', fallback: '20', range: [0, 1_000_000], meaning: 'failed attempts per client in the window before 429; 0: off' },
  { name: 'AUTH_FAIL_WINDOW_S', fallback: '60', range: [1, 86_400], meaning: 'the throttling window, in seconds' },
  { name: 'THROTTLE_MAX_CLIENTS', fallback: '100000', range: [1, 10_000_000], meaning: 'client addresses the throttle tracks at most' },
  { name: 'HEADERS_TIMEOUT_MS', fallback: '10000', range: [1, HOUR_MS], meaning: 'deadline for a request head (at most REQUEST_TIMEOUT_MS)' },
  { name: 'REQUEST_TIMEOUT_MS', fallback: '30000', range: [0, HOUR_MS], meaning: 'deadline for a whole request; 0: none' },
  // 0 would mean "never close an idle connection" to node:http: refused, not passed on.
  { name: 'KEEP_ALIVE_TIMEOUT_MS', fallback: '5000', range: [1, HOUR_MS], meaning: 'an idle keep-alive connection closes after this' },
  { name: 'SHUTDOWN_TIMEOUT_MS', fallback: '10000', range: [0, HOUR_MS], meaning: 'SIGTERM waits this long for requests in flight, then exit 1' },
  { name: 'LOG_LEVEL', fallback: 'info', meaning: 'debug, info (a line per request), warn, error or silent' },
  { name: 'WORKERS', fallback: '1', range: [1, 1024], meaning: 'processes serving the port; "auto": one per CPU' },
  { name: 'REDIS_URL', meaning: 'redis:// or rediss://: limit counters shared in Redis or Valkey' },
  { name: 'REDIS_PREFIX', fallback: 'keygate:', meaning: 'start of every Redis key keygate writes' },
  { name: 'REDIS_TIMEOUT_MS', fallback: '250', range: [1, 60_000], meaning: 'deadline of each Redis command and connection' },
  { name: 'LIMITS_ON_REDIS_FAILURE', fallback: 'local', meaning: 'while Redis is away: local, open (no limits) or closed (503)' },
  { name: 'UPSTREAM_URL', meaning: 'http(s):// service: proxy mode, allowed requests go there' },
  { name: 'UPSTREAM_TIMEOUT_MS', fallback: '60000', range: [1, HOUR_MS], meaning: 'proxy mode: no answer head within this is 504' },
  { name: 'MAX_BODY_BYTES', fallback: '1048576', range: [0, Number.MAX_SAFE_INTEGER], meaning: 'larger request bodies get 413; 0 (no limit) in proxy mode only' },
] as const satisfies readonly Setting[]

export type SettingName = (typeof SETTINGS)[number]['name']
/** The settings that are whole numbers (they have a range). */
export type IntegerSettingName = Extract<(typeof SETTINGS)[number], { range: readonly [number, number] }>['name']

/** The setting called `name`. */
export function settingOf(name: SettingName): Setting {
  return SETTINGS.find((setting) => setting.name === name) as Setting
}

/** The table as `keygate serve --help` prints it: name, default, meaning, one variable a line. */
export function describeSettings(): string {
  const width = Math.max(...SETTINGS.map((setting) => setting.name.length)) + 2
  return SETTINGS.map((setting: Setting) => {
    const fallback = setting.fallback === undefined ? '' : ` (default ${setting.fallback})`
    return `  ${setting.name.padEnd(width)}${setting.meaning}${fallback}\n`
  }).join('')
}
