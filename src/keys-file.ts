/** The keys file: reading and validating it, swapping a new key set in, watching it for changes. */
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { dirname } from 'node:path'
import { ConfigError } from './config.js'
import { isValidKeyId, tryCreateKeyStore, type KeyEntry, type KeyRecord, type KeyStore } from './keys.js'
import type { Logger } from './log.js'

/** A keys file that cannot be used; `problems` has one message per fault found. */
export class KeysFileError extends ConfigError {
  override name = 'KeysFileError'
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : ''
    super(`API_KEYS_FILE ${file}: ${problems[0]}${more}`)
  }
}

/** The id `API_KEY` gets; the keys file may not use it when `API_KEY` is set. */
export const ENV_KEY_ID = 'env'
const ENTRY_FIELDS = new Set(['id', 'key', 'sha256', 'expiresAt'])
// Short words like `expiresat` or `name`; not long or mixed strings, which could be a pasted key.
const QUOTABLE_FIELD_NAME = /^[A-Za-z]{1,12}[0-9]{0,3}$/

/**
 * Builds the store for the text of a keys file plus, when given, the `API_KEY` entry (id `env`).
 * Throws `KeysFileError` listing every fault found; messages never include key material.
 */
export function parseKeysFile(text: string, file: string, envKey?: string): { store: KeyStore; entries: KeyEntry[] } {
  const { entries, problems } = parseDocument(text, file)
  if (envKey !== undefined) {
    const clash = entries.findIndex((entry) => entry.id === ENV_KEY_ID)
    if (clash !== -1) problems.push(`keys[${clash}] (id "${ENV_KEY_ID}"): id "${ENV_KEY_ID}" is taken by API_KEY`)
  }
  const all: KeyEntry[] = envKey === undefined ? entries : [...entries, { id: ENV_KEY_ID, key: envKey }]
  const { store, problems: storeProblems } = tryCreateKeyStore(all)
  const envLabel = `keys[${entries.length}] (id "${ENV_KEY_ID}")`
  problems.push(...storeProblems.map((problem) => problem.replace(envLabel, 'API_KEY')))
  if (store === undefined || problems.length > 0) throw new KeysFileError(file, problems)
  return { store, entries }
}

/** Reads and parses the keys file; see `parseKeysFile`. Also returns the text, to detect real changes. */
export function loadKeysFile(file: string, envKey?: string): { store: KeyStore; entries: KeyEntry[]; text: string } {
  const text = readKeysText(file)
  return { ...parseKeysFile(text, file, envKey), text }
}

function parseDocument(text: string, file: string): { entries: KeyEntry[]; problems: string[] } {
  const document = parseJson(text, file)
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    throw new KeysFileError(file, ['must be a JSON object of the form { "keys": [ ... ] }'])
  }
  const problems = Object.keys(document)
    .filter((field) => field !== 'keys')
    .map((field) => `unknown top-level field ${describeField(field)}: only "keys" is allowed`)
  const keys = (document as { keys?: unknown }).keys
  if (!Array.isArray(keys)) throw new KeysFileError(file, ['"keys" must be an array of entries', ...problems])
  keys.forEach((entry, index) => problems.push(...unknownFieldsOf(entry, index)))
  return { entries: keys as KeyEntry[], problems }
}

/** A key store whose whole set is replaced in one assignment: a lookup sees the old set or the new. */
export interface SwappableKeyStore extends KeyStore {
  swap(next: KeyStore): void
}

/** Wraps `initial` so that it can later be swapped for another store without touching the handler. */
export function createSwappableKeyStore(initial: KeyStore): SwappableKeyStore {
  let current = initial
  return {
    get size() {
      return current.size
    },
    lookup: (credential: string): KeyRecord | undefined => current.lookup(credential),
    swap(next: KeyStore) {
      current = next
    },
  }
}

// Editors, `mv` and Kubernetes' symlink swap raise several events at once: wait for quiet.
const SETTLE_MS = 100

/**
 * Calls `onChange` once after a burst of changes in the directory holding `file`.
 * The directory is watched, not the file, so that renames over the file and symlink swaps
 * (Kubernetes ConfigMaps replace `..data`) are seen. Returns a function that stops watching.
 */
export function watchKeysFile(file: string, onChange: () => void, onError: (error: Error) => void): () => void {
  let timer: NodeJS.Timeout | undefined
  let watcher: FSWatcher
  try {
    watcher = watch(dirname(file), { persistent: false }, () => {
      clearTimeout(timer)
      timer = setTimeout(onChange, SETTLE_MS)
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

function readKeysText(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reasons: Record<string, string> = {
      ENOENT: 'file not found',
      EACCES: 'permission denied',
      EISDIR: 'is a directory, not a file',
    }
    throw new KeysFileError(file, [(code && reasons[code]) ?? `cannot be read (${code ?? 'unknown error'})`])
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text)
  } catch (error) {
    // V8's message quotes the text around the fault, which may be a key: give only the position.
    const position = /position (\d+)/.exec((error as Error).message)?.[1]
    const where = position === undefined ? '' : ` at ${lineAndColumn(text, Number(position))}`
    throw new KeysFileError(file, [`is not valid JSON${where}`])
  }
}

function lineAndColumn(text: string, position: number): string {
  const before = text.slice(0, position).split('\n')
  return `line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1}`
}

function unknownFieldsOf(entry: unknown, index: number): string[] {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return [`keys[${index}]: must be an object`]
  const id = (entry as { id?: unknown }).id
  const label = typeof id === 'string' && isValidKeyId(id) ? `keys[${index}] (id "${id}")` : `keys[${index}]`
  return Object.keys(entry)
    .filter((field) => !ENTRY_FIELDS.has(field))
    .map((field) => `${label}: unknown field ${describeField(field)} (allowed: id, key, sha256, expiresAt)`)
}

// A field name is user text that could be a pasted key: quote it only when it looks like a word.
function describeField(field: string): string {
  return QUOTABLE_FIELD_NAME.test(field) ? JSON.stringify(field) : `of ${field.length} characters (not quoted: it may be a key)`
}

export interface KeysFileReloader {
  /** Re-reads the file now; `SIGHUP` reloads even an unchanged file, a watched change only a real one. */
  reload(trigger: 'SIGHUP' | 'change'): void
  /** Stops watching. */
  close(): void
}

/**
 * Keeps `store` in step with the keys file: reloads on change and on `reload()`.
 * A bad file keeps the previous keys serving and logs an error; each reload logs one line.
 */
export function startKeysFileReloads(options: {
  file: string
  envKey?: string
  store: SwappableKeyStore
  initialText: string
  log: Logger
  /** Told the result of each reload that changed something or failed (for the metrics). */
  onReload?: (ok: boolean) => void
}): KeysFileReloader {
  const { file, envKey, store, log, onReload = () => {} } = options
  let loadedText = options.initialText
  const reload = (trigger: 'SIGHUP' | 'change'): void => {
    try {
      const text = readKeysText(file)
      // An event in the directory that left the file as it was (a touch, another file) costs no parse.
      if (trigger === 'change' && text === loadedText) return
      const next = parseKeysFile(text, file, envKey)
      store.swap(next.store)
      loadedText = text
      log.info('keys reloaded', { file, trigger, keys: next.store.size })
      onReload(true)
    } catch (error) {
      if (!(error instanceof KeysFileError)) throw error
      log.error('keys reload failed: the previous keys stay in service', {
        file,
        trigger,
        error: error.problems.join('; '),
        keys: store.size,
      })
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
