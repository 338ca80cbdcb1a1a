/** keygate's public API for embedding in your own server: everything the server itself uses. */
export { createHandler, createHandlerMetrics, type Handler, type HandlerOptions, type Next } from './handler.js'
export type { RoutePaths } from './routes.js'
export { createKeyStore, isValidKey, type KeyEntry, type KeyRecord, type KeyStore } from './keys.js'
export {
  createKeysFileStore,
  createSwappableKeyStore,
  KeysFileError,
  loadKeysFile,
  parseKeysFile,
  startKeysFileReloads,
  type KeysFileReloader,
  type KeysFileStore,
  type SwappableKeyStore,
} from './keys-file.js'
export { authenticate, authorize, extractCredential, type AuthFailure, type AuthResult, type Authorization } from './auth.js'
export { clientAddressOf } from './client.js'
export { createLogger, silentLogger, type Logger, type LoggerOptions, type LogLevel } from './log.js'
export { createMetrics, renderMetrics, type Metrics, type MetricsGauges, type MetricsSnapshot } from './metrics.js'
export { createThrottle, THROTTLE_DEFAULTS, throttleKeyOf, type Throttle, type ThrottleOptions } from './throttle.js'
export { VERSION } from './version.js'
export { canonicalPath, type CanonicalPath } from './http/canonical-path.js'
export { compilePolicy, type Policy } from './keys/policy.js'
export { compileRateLimit, createMemoryRateLimitStore, type RateDecision, type RateLimit, type RateLimitSpec, type RateLimitStore } from './limits/rate-limit.js'
