/**
 * A keys file in service: the store swapped whole on a reload, the directory watched for changes
 * (renames, Kubernetes' symlink swap), and reloads that keep the old set when the new one is bad.
 */
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { KeyRecord, KeyStore } from '../keys/store.js'
import { silentLogger, type Logger } from '../observe/log.js'
import { contentDigestOf, KeysFileError, loadKeysFile } from './file.js'

/** A key store whose whole set is replaced in one assignment: a lookup sees the old set or the new. */
export interface SwappableKeyStore extends KeyStore {
  swap(next: KeyStore): void
  /** The store in service now. */
  readonly current: KeyStore
}

/** Wraps `initial` so that it can later be swapped for another store without touching the handler. */
export function createSwappableKeyStore(initial: KeyStore): SwappableKeyStore {
  let current = initial
  return {
    get size() {
      return current.size
    },
    get publicPolicy() {
      return current.publicPolicy
    },
    get current() {
      return current
    },
    lookup: (credential: string): KeyRecord | undefined => current.lookup(credential),
    swap(next: KeyStore) {
      current = next
    },
  }
}

// Editors, `mv` and Kubernetes' symlink swap raise several events at once: wait for quiet, but
// never longer than MAX_SETTLE_MS after the first, so that a busy directory cannot postpone a revocation.
const SETTLE_MS = 100
const MAX_SETTLE_MS = 1000
// Kubernetes mounts a ConfigMap as `..data`, a symlink swapped in one rename, and the file as a link through it.
const KUBERNETES_DATA = '..data'

/**
 * Calls `onChange` once after a burst of changes to `file`. The directory is watched, not the
 * file, so that renames over the file and symlink swaps (Kubernetes replaces `..data`) are seen;
 * events for other names in it are ignored. Returns a function that stops watching.
 */
export function watchKeysFile(file: string, onChange: () => void, onError: (error: Error) => void): () => void {
  const name = basename(file)
  let timer: NodeJS.Timeout | undefined
  let firstEventMs = 0
  const fire = () => {
    timer = undefined
    onChange()
  }
  let watcher: FSWatcher
  try {
    watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
      // `changed` can be null on some platforms: then any event may be ours.
      if (changed !== null && changed !== name && changed !== KUBERNETES_DATA) return
      const now = Date.now()
      if (timer === undefined) firstEventMs = now
      clearTimeout(timer)
      timer = setTimeout(fire, Math.max(0, Math.min(SETTLE_MS, firstEventMs + MAX_SETTLE_MS - now)))
      timer.unref()
    })
  } catch (error) {
    onError(error as Error)
    return () => {}
  }
  watcher.on('error', onError)
  return () => {
    clearTimeout(timer)
    watcher.close()
  }
}

export interface KeysFileReloader {
  /** Re-reads the file now; `SIGHUP` reloads even an unchanged file, a watched change only a real one. */
  reload(trigger: 'SIGHUP' | 'change'): void
  /** Stops watching. */
  close(): void
}

// A reload failure lists this many problems at most, then a count: one line, not one per entry.
const LOGGED_PROBLEMS = 10

/**
 * Keeps `store` in step with the keys file: reloads on change and on `reload()`. A bad file
 * keeps the previous keys serving and logs an error once per distinct content (SIGHUP always
 * logs); each reload logs one line and is told to `onReload` once.
 */
export function startKeysFileReloads(options: {
  file: string
  envKey?: string
  store: SwappableKeyStore
  /** The SHA-256 of the content the store was loaded from (`loadKeysFile`'s `contentDigest`). */
  contentDigest: string
  log: Logger
  /** Told the result of each reload that changed something or failed (for the metrics). */
  onReload?: (ok: boolean) => void
}): KeysFileReloader {
  const { file, envKey, store, log, onReload = () => {} } = options
  let loaded: string | undefined = options.contentDigest
  // What the last failed reload read: the same failure is not reported again for every event.
  let rejected: string | undefined
  const reload = (trigger: 'SIGHUP' | 'change'): void => {
    let seen: string | undefined
    try {
      // Hashing first costs a read; an event that left the file as it was (a touch, a rewrite of
      // the same text) then costs no parse, and a bad file is not reported again for every event.
      seen = contentDigestOf(file)
      if (trigger === 'change' && seen === loaded) {
        rejected = undefined
        return
      }
      if (trigger === 'change' && seen === rejected) return
      const next = loadKeysFile(file, envKey, store.current)
      store.swap(next.store)
      loaded = next.contentDigest
      rejected = undefined
      log.info('keys reloaded', { file, trigger, keys: next.store.size })
      onReload(true)
    } catch (error) {
      if (!(error instanceof KeysFileError)) throw error
      // A file that cannot be read has no digest: remember the message instead, so it too is said once.
      seen ??= `unreadable: ${error.problems[0]}`
      if (trigger === 'change' && seen === rejected) return
      rejected = seen
      log.error('keys reload failed: the previous keys stay in service', { file, trigger, error: summarizeProblems(error.problems), keys: store.size })
      onReload(false)
    }
  }
  const stopWatching = watchKeysFile(
    file,
    () => reload('change'),
    (error) => log.error('keys file watch failed: reload with SIGHUP', { file, error: error.message }),
  )
  return { reload, close: stopWatching }
}

/** The first problems, joined, and how many more there are. */
export function summarizeProblems(problems: readonly string[], shown = LOGGED_PROBLEMS): string {
  const head = problems.slice(0, shown).join('; ')
  return problems.length > shown ? `${head}; and ${problems.length - shown} more problems` : head
}

/** A keys file as a live store: what `createKeysFileStore` returns. */
export interface KeysFileStore extends SwappableKeyStore, KeysFileReloader {}

/**
 * Loads `file` (throws `KeysFileError` listing its problems) and keeps the store in step with it,
 * as the server does: reloads on change and on `reload('SIGHUP')`; a bad file keeps the old keys.
 */
export function createKeysFileStore(
  file: string,
  options: { apiKey?: string; log?: Logger; onReload?: (ok: boolean) => void } = {},
): KeysFileStore {
  const { store, contentDigest } = loadKeysFile(file, options.apiKey)
  const keys = createSwappableKeyStore(store)
  const reloader = startKeysFileReloads({ file, envKey: options.apiKey, store: keys, contentDigest, log: options.log ?? silentLogger, onReload: options.onReload })
  return Object.assign(keys, reloader)
}
