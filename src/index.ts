/** keygate's public API for embedding in your own server. */
export { createHandler, type Handler, type HandlerOptions, type Next } from './handler.js'
export { createKeyStore, isValidKey, type KeyEntry, type KeyRecord, type KeyStore } from './keys.js'
export { authenticate, extractCredential, type AuthFailure, type AuthResult } from './auth.js'
export { createLogger, type Logger, type LoggerOptions, type LogLevel } from './log.js'
export { createThrottle, type Throttle, type ThrottleOptions } from './throttle.js'
