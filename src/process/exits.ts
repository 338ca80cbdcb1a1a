/** A user's mistake in the configuration or the environment: one line on stderr naming it, exit 1. */
import { ConfigError, type Config } from '../config.js'
import { KeysFileError } from '../keys-file/file.js'
import type { Logger } from '../observe/log.js'

/** Runs `load`; a `ConfigError` or `KeysFileError` (a user's mistake) becomes one stderr line and exit 1, anything else a crash. */
export function exitOnConfigError<T>(load: () => T, log?: Logger): T {
  try {
    return load()
  } catch (error) {
    if (!(error instanceof ConfigError) && !(error instanceof KeysFileError)) throw error
    log?.flush()
    process.stderr.write(`keygate: ${error.message}\n`)
    process.exit(1)
  }
}

export function exitOnListenError(error: NodeJS.ErrnoException, config: Config, log: Logger): void {
  const reasons: Record<string, string> = {
    EADDRINUSE: `PORT ${config.port} is already in use on ${config.host}`,
    EACCES: `PORT ${config.port} needs privileges this process does not have`,
    EADDRNOTAVAIL: `HOST ${config.host} is not an address of this machine`,
    ENOTFOUND: `HOST ${config.host} does not resolve`,
  }
  const reason = error.code === undefined ? undefined : reasons[error.code]
  if (reason === undefined) throw error
  log.flush()
  process.stderr.write(`keygate: ${reason}\n`)
  process.exit(1)
}
