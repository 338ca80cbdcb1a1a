/** Turns environment variables into a validated, typed configuration. Pure: no I/O, no exit. */
import { isValidKey } from './keys/entry-check.js'
import { LOG_LEVELS, type LogLevel } from './observe/log.js'
import { settingOf, type IntegerSettingName, type SettingName } from './settings.js'
import { describeRedis, parseRedisUrl, REDIS_FAILURE_MODES, type RedisAddress, type RedisFailureMode } from './redis/url.js'

/** A user's configuration mistake: the entry point prints its message as one line and exits 1. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

export interface Config {
  port: number
  host: string
  /** The key given by `API_KEY` (id `env`), or the demo key when `demo` is true. */
  apiKey?: string
  /** Path of the keys file from `API_KEYS_FILE`. */
  keysFile?: string
  /** True when neither `API_KEY` nor `API_KEYS_FILE` is set: the demo key serves. */
  demo: boolean
  headersTimeoutMs: number
  requestTimeoutMs: number
  keepAliveTimeoutMs: number
  shutdownTimeoutMs: number
  logLevel: LogLevel
  /** Proxy hops trusted in `X-Forwarded-For`; 0 ignores the header. */
  trustProxy: number
  /** Failed attempts per client within the window before 429; 0 disables throttling. */
  authFailLimit: number
  authFailWindowS: number
  throttleMaxClients: number
  /** Both set, or neither: HTTPS with this certificate chain and private key (PEM files). */
  tls?: { certFile: string; keyFile: string }
  /** Processes serving the port: 1 runs no cluster primary. */
  workers: number
  /** Request bodies above this get 413; 0: no limit (proxy mode only). */
  maxBodyBytes: number
  /** `UPSTREAM_URL`: proxy mode, with the deadline for the service's answer head. */
  upstream?: { url: URL; timeoutMs: number }
  /** `REDIS_URL` and its settings: the limit counters live in Redis. */
  redis?: { address: RedisAddress; prefix: string; timeoutMs: number; onFailure: RedisFailureMode }
}

/** The tutorial's key, used only when no key is configured outside production. */
export const DEMO_KEY = '12345'
const MIN_RECOMMENDED_KEY_LENGTH = 16

type Env = Readonly<Record<string, string | undefined>>

/**
 * Reads the configuration from `env`; throws `ConfigError` naming the first bad variable.
 * `cpuCount` is what `WORKERS=auto` means (the caller passes `os.availableParallelism()`).
 */
export function loadConfig(env: Env, cpuCount = 1): { config: Config; warnings: string[] } {
  const warnings: string[] = []
  const keysFile = readKeysFilePath(env)
  const { apiKey, demo } = readApiKey(env, keysFile !== undefined, warnings)
  const config: Config = {
    port: readInteger(env, 'PORT'),
    host: readHost(env),
    apiKey,
    keysFile,
    demo,
    headersTimeoutMs: readInteger(env, 'HEADERS_TIMEOUT_MS'),
    requestTimeoutMs: readInteger(env, 'REQUEST_TIMEOUT_MS'),
    keepAliveTimeoutMs: readInteger(env, 'KEEP_ALIVE_TIMEOUT_MS'),
    shutdownTimeoutMs: readInteger(env, 'SHUTDOWN_TIMEOUT_MS'),
    logLevel: readLogLevel(env),
    trustProxy: readInteger(env, 'TRUST_PROXY'),
    authFailLimit: readInteger(env, 'AUTH_FAIL_LIMIT'),
    authFailWindowS: readInteger(env, 'AUTH_FAIL_WINDOW_S'),
    throttleMaxClients: readInteger(env, 'THROTTLE_MAX_CLIENTS'),
    tls: readTlsFiles(env),
    workers: env.WORKERS === 'auto' ? Math.max(1, cpuCount) : readInteger(env, 'WORKERS'),
    redis: readRedis(env),
    maxBodyBytes: readInteger(env, 'MAX_BODY_BYTES'),
    upstream: readUpstream(env),
  }
  if (config.maxBodyBytes === 0 && config.upstream === undefined) {
    throw new ConfigError('MAX_BODY_BYTES=0 (no limit) is for proxy mode (UPSTREAM_URL): keygate\'s own routes read no body')
  }
  // node:http refuses a headers timeout longer than a non-zero request timeout.
  if (config.requestTimeoutMs > 0 && config.headersTimeoutMs > config.requestTimeoutMs) {
    throw new ConfigError(
      `HEADERS_TIMEOUT_MS (${config.headersTimeoutMs}) must not exceed REQUEST_TIMEOUT_MS (${config.requestTimeoutMs})`,
    )
  }
  return { config, warnings }
}

/** The throttle's options (`createThrottle`'s shape), or undefined when `AUTH_FAIL_LIMIT=0` turns it off. */
export function throttleOptionsOf(config: Config): { limit: number; windowMs: number; maxClients: number } | undefined {
  if (config.authFailLimit === 0) return undefined
  return { limit: config.authFailLimit, windowMs: config.authFailWindowS * 1000, maxClients: config.throttleMaxClients }
}

/** The settings that matter to an operator, for one line at startup: no key, no secret. */
export function settingsOf(config: Config): Record<string, string | number | boolean | undefined> {
  return {
    keys: config.keysFile !== undefined ? `file ${config.keysFile}${config.apiKey !== undefined ? ' + API_KEY' : ''}` : config.demo ? 'demo key' : 'API_KEY',
    throttle: config.authFailLimit === 0 ? 'off' : `${config.authFailLimit} failures per ${config.authFailWindowS} s, ${config.throttleMaxClients} clients tracked`,
    trustProxy: config.trustProxy,
    workers: config.workers,
    tls: config.tls !== undefined,
    host: config.host,
    logLevel: config.logLevel,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    upstream: config.upstream === undefined ? undefined : `${config.upstream.url.href}, timeout ${config.upstream.timeoutMs} ms`,
    maxBodyBytes: config.maxBodyBytes,
    limits: config.redis !== undefined
      ? `redis ${describeRedis(config.redis.address)} prefix ${config.redis.prefix}, timeout ${config.redis.timeoutMs} ms, on failure ${config.redis.onFailure}`
      : config.workers > 1 ? 'cluster primary' : 'memory',
  }
}

/** The variable's whole number, its default when unset; range and default from SETTINGS. */
function readInteger(env: Env, name: IntegerSettingName): number {
  const { fallback, range } = settingOf(name)
  const [min, max] = range as readonly [number, number] // every IntegerSettingName has one
  const raw = env[name]
  if (raw === undefined || raw === '') return Number(fallback)
  const value = /^\d+$/.test(raw) ? Number(raw) : NaN
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    const auto = name === 'WORKERS' ? ' or "auto"' : ''
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}${auto}, got ${JSON.stringify(raw)}`)
  }
  return value
}

function fallbackOf(name: SettingName): string {
  return settingOf(name).fallback ?? ''
}

function readUpstream(env: Env): Config['upstream'] {
  // Checked whenever set, proxy mode or not: a bad value waiting for the day UPSTREAM_URL is set is a mistake now.
  const timeoutMs = readInteger(env, 'UPSTREAM_TIMEOUT_MS')
  const raw = env.UPSTREAM_URL
  if (raw === undefined || raw === '') return undefined
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError('UPSTREAM_URL must be a URL such as http://127.0.0.1:8080 or https://service.internal/base')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`UPSTREAM_URL must start with http:// or https://, not ${url.protocol}//`)
  if (url.username !== '' || url.password !== '') throw new ConfigError('UPSTREAM_URL must not hold a user or password')
  if (url.search !== '' || url.hash !== '') throw new ConfigError('UPSTREAM_URL must not have a query or fragment (only a base path)')
  return { url, timeoutMs }
}

function readRedis(env: Env): Config['redis'] {
  // The settings are checked whenever set, with or without REDIS_URL.
  const prefix = env.REDIS_PREFIX || fallbackOf('REDIS_PREFIX')
  if (!/^[\x21-\x7e]{1,100}$/.test(prefix)) throw new ConfigError(`REDIS_PREFIX must be 1 to 100 visible ASCII characters, got ${JSON.stringify(prefix)}`)
  const onFailure = env.LIMITS_ON_REDIS_FAILURE || fallbackOf('LIMITS_ON_REDIS_FAILURE')
  const mode = REDIS_FAILURE_MODES.find((name) => name === onFailure)
  if (mode === undefined) throw new ConfigError(`LIMITS_ON_REDIS_FAILURE must be one of ${REDIS_FAILURE_MODES.join(', ')}, got ${JSON.stringify(onFailure)}`)
  const timeoutMs = readInteger(env, 'REDIS_TIMEOUT_MS')
  const url = env.REDIS_URL
  if (url === undefined || url === '') return undefined
  const address = parseRedisUrl(url)
  // The message says what is wrong and never repeats the URL: it may hold a password.
  if (typeof address === 'string') throw new ConfigError(`REDIS_URL ${address}`)
  return { address, prefix, timeoutMs, onFailure: mode }
}

function readLogLevel(env: Env): LogLevel {
  const raw = env.LOG_LEVEL
  if (raw === undefined || raw === '') return fallbackOf('LOG_LEVEL') as LogLevel
  const level = LOG_LEVELS.find((name) => name === raw)
  if (level === undefined) throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(raw)}`)
  return level
}

function readHost(env: Env): string {
  const host = env.HOST
  if (host === undefined || host === '') return fallbackOf('HOST')
  if (!/^[A-Za-z0-9.:-]+$/.test(host) || host.length > 253) {
    throw new ConfigError(`HOST must be an IP address or host name, got ${JSON.stringify(host)}`)
  }
  return host
}

function readTlsFiles(env: Env): Config['tls'] {
  const certFile = env.TLS_CERT_FILE || undefined
  const keyFile = env.TLS_KEY_FILE || undefined
  if (certFile === undefined && keyFile === undefined) return undefined
  if (keyFile === undefined) throw new ConfigError('TLS_KEY_FILE is not set: HTTPS needs both TLS_CERT_FILE and TLS_KEY_FILE')
  if (certFile === undefined) throw new ConfigError('TLS_CERT_FILE is not set: HTTPS needs both TLS_CERT_FILE and TLS_KEY_FILE')
  return { certFile, keyFile }
}

function readKeysFilePath(env: Env): string | undefined {
  const file = env.API_KEYS_FILE
  if (file === undefined) return undefined
  if (file.trim() === '') throw new ConfigError('API_KEYS_FILE must be the path of a keys file, got an empty value')
  return file
}

function readApiKey(env: Env, hasKeysFile: boolean, warnings: string[]): { apiKey?: string; demo: boolean } {
  const key = env.API_KEY
  if (key === undefined) {
    if (hasKeysFile) return { demo: false }
    if (env.NODE_ENV === 'production') {
      throw new ConfigError('API_KEY is not set (nor API_KEYS_FILE): the demo key is refused when NODE_ENV=production')
    }
    warnings.push(`no API_KEY or API_KEYS_FILE set: serving with the public demo key "${DEMO_KEY}"; never use it in production`)
    return { apiKey: DEMO_KEY, demo: true }
  }
  // The message describes the fault and never echoes the value: it is a secret.
  if (!isValidKey(key)) {
    throw new ConfigError(
      `API_KEY must be 1 to 4096 visible ASCII characters (no spaces or control characters); got ${describeLength(key)}`,
    )
  }
  if (key.length < MIN_RECOMMENDED_KEY_LENGTH) {
    warnings.push(`API_KEY is shorter than ${MIN_RECOMMENDED_KEY_LENGTH} characters: use a long random key`)
  }
  return { apiKey: key, demo: false }
}

function describeLength(value: string): string {
  return value.length === 0 ? 'an empty value' : `a value of ${value.length} characters that breaks the rule`
}
