/** The keys of a serving process: loaded from the configuration, checked, warned about, and reloaded. */
import { DEMO_KEY, type Config } from '../config.js'
import { createKeyStore } from '../key-table/key-store.js'
import type { KeyStore } from '../keys/store.js'
import { checkKeysFile, ENV_KEY_ID, loadKeysFile } from '../keys-file/file.js'
import { createSwappableKeyStore, type SwappableKeyStore } from '../keys-file/reload.js'
import { findingsOf, keysFileWarnings } from '../keys-file/findings.js'
import type { Logger } from '../observe/log.js'
import { exitOnConfigError } from './exits.js'
import { collectGarbage } from './memory.js'

export type LoadedKeys =
  | { keys: KeyStore; reload?: undefined; warnings?: undefined }
  | { keys: SwappableKeyStore; reload: { file: string; envKey?: string; contentDigest: string }; warnings: string[] }

/** The key store for the configuration: the keys file (with what reloads need) plus `API_KEY`, or the demo key. */
export function loadKeys(config: Config): LoadedKeys {
  if (config.keysFile === undefined) {
    const id = config.demo ? 'demo' : ENV_KEY_ID
    return { keys: createKeyStore([{ id, key: config.apiKey ?? DEMO_KEY }]) }
  }
  const { store, contentDigest, fileKeys } = loadKeysFile(config.keysFile, config.apiKey)
  const warnings = keysFileWarnings(config.keysFile, findingsOf(store, Date.now(), fileKeys))
  return { keys: createSwappableKeyStore(store), reload: { file: config.keysFile, envKey: config.apiKey, contentDigest }, warnings }
}

/**
 * What the primary knows of the keys: that they load, and what to warn about. In a function of its
 * own, so that nothing of the set is left in a frame still running when the garbage is collected.
 */
export function checkKeys(config: Config, log: Logger): void {
  if (config.keysFile === undefined) return
  const file = config.keysFile
  const { findings } = exitOnConfigError(() => checkKeysFile(file, Date.now(), config.apiKey), log)
  for (const warning of keysFileWarnings(file, findings)) log.warn(warning)
}

/** A reload is counted; the set it replaced (or the one it failed to make) leaves memory at once. */
export function afterReload(ok: boolean, metrics: { recordKeyReload(ok: boolean): void }): void {
  metrics.recordKeyReload(ok)
  collectGarbage()
}

/** One warning for each kind of key that deserves a look (what `keygate check` reports). */
export function warnAboutKeys(loaded: LoadedKeys, log: Logger): void {
  for (const warning of loaded.warnings ?? []) log.warn(warning)
}
