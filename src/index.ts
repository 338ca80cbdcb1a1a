/** keygate's public API for embedding in your own server: everything the server itself uses. */
export { createHandler, type Handler, type Next } from './http/handler.js'
export { createHandlerMetrics, type HandlerOptions } from './http/handler-options.js'
export { createFetchGuard, createGuard, type Guard, type GuardOptions } from './http/guard.js'
export type { FetchGuardInfo } from './http/fetch-guard.js'
export { keyIdOf } from './http/identity.js'
export type { RoutePaths } from './http/route-paths.js'
export { createKeyStore } from './key-table/key-store.js'
export type { KeyEntry, KeyRecord, KeyStore } from './keys/store.js'
export { isValidKey } from './keys/entry-check.js'
export { KeysFileError, loadKeysFile, parseKeysFile } from './keys-file/file.js'
export {
  createKeysFileStore,
  createSwappableKeyStore,
  startKeysFileReloads,
  type KeysFileReloader,
  type KeysFileStore,
  type SwappableKeyStore,
} from './keys-file/reload.js'
export { authenticate, extractCredential, type AuthFailure, type AuthResult } from './keys/auth.js'
export { authorize, type Authorization } from './http/authorize.js'
export { clientAddressOf } from './http/client.js'
export { createLogger, silentLogger, type Logger, type LoggerOptions, type LogLevel } from './observe/log.js'
export { createMetrics, type Metrics, type MetricsGauges, type MetricsSnapshot } from './observe/metrics.js'
export { renderMetrics } from './observe/metrics-text.js'
export { createThrottle, THROTTLE_DEFAULTS, THROTTLE_UNAVAILABLE, throttleKeyOf, type MemoryThrottle, type Throttle, type ThrottleOptions } from './limits/throttle.js'
export { VERSION } from './version.js'
export { canonicalPath, type CanonicalPath } from './http/canonical-path.js'
export { compilePolicy, type Policy } from './keys/policy.js'
export { compileRateLimit, createMemoryRateLimitStore, RATE_UNAVAILABLE, type MemoryRateLimitStore, type RateDecision, type RateLimit, type RateLimitSpec, type RateLimitStore } from './limits/rate-limit.js'
export { createRedisLimits, type RedisLimits, type RedisLimitsOptions } from './limits/redis-store.js'
export { parseRedisUrl, type RedisAddress, type RedisFailureMode } from './redis/url.js'
export { createProxy, type ProxyOptions } from './proxy/proxy.js'
export type { Proxy, UpstreamError, UpstreamResult } from './http/forwarding.js'
export { takeProxyTraffic } from './proxy/tunnel.js'
