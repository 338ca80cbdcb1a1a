/** The keys file: reading and validating it, swapping a new key set in, watching it for changes. */
import { closeSync, constants, fstatSync, openSync, readFileSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import { checkJson, lineAndColumnOf } from './json-check.js'
import { isValidKeyId, tryCreateKeyStore, type KeyEntry, type KeyRecord, type KeyStore } from './store.js'
import { silentLogger, type Logger } from '../observe/log.js'

/** A keys file that cannot be used; `problems` has one message per fault found. */
export class KeysFileError extends Error {
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
const ENTRY_FIELDS = new Set(['id', 'key', 'sha256', 'expiresAt', 'allow', 'rateLimit'])
const TOP_LEVEL_FIELDS = new Set(['keys', 'defaults', 'public'])
const DEFAULTS_FIELDS = new Set(['allow', 'rateLimit'])
// Short words like `expiresat` or `name`; not long or mixed strings, which could be a pasted key.
const QUOTABLE_FIELD_NAME = /^[A-Za-z]{1,12}[0-9]{0,3}$/

/**
 * Builds the store for the text of a keys file plus, when given, the `API_KEY` entry (id `env`).
 * Throws `KeysFileError` listing every fault found; messages never include key material.
 */
export function parseKeysFile(text: string, file: string, envKey?: string): { store: KeyStore; entries: KeyEntry[] } {
  const { entries: given, problems, defaults, publicRules } = parseDocument(text, file)
  // `defaults` gives its rules and rate limit to every entry without its own, the API_KEY entry included.
  const hasDefaults = defaults.allow !== undefined || defaults.rateLimit !== undefined
  const withDefaults = (entry: KeyEntry): KeyEntry => {
    if (!hasDefaults || entry === null || typeof entry !== 'object') return entry
    const allow = entry.allow ?? defaults.allow
    const rateLimit = entry.rateLimit === undefined ? defaults.rateLimit : entry.rateLimit
    return { ...entry, ...(allow !== undefined && { allow }), ...(rateLimit !== undefined && { rateLimit }) }
  }
  const entries = hasDefaults ? given.map(withDefaults) : given
  if (envKey !== undefined) {
    const clash = entries.findIndex((entry) => entry.id === ENV_KEY_ID)
    if (clash !== -1) problems.push(`keys[${clash}] (id "${ENV_KEY_ID}"): id "${ENV_KEY_ID}" is taken by API_KEY`)
  }
  const all: KeyEntry[] = envKey === undefined ? entries : [...entries, withDefaults({ id: ENV_KEY_ID, key: envKey })]
  const { store, problems: storeProblems } = tryCreateKeyStore(all, publicRules)
  const envLabel = `keys[${entries.length}] (id "${ENV_KEY_ID}")`
  for (const problem of storeProblems) problems.push(problem.replace(envLabel, 'API_KEY'))
  if (store === undefined || problems.length > 0) throw new KeysFileError(file, problems)
  return { store, entries }
}

/** Reads and parses the keys file; see `parseKeysFile`. Also returns the text, to detect real changes. */
export function loadKeysFile(file: string, envKey?: string): { store: KeyStore; entries: KeyEntry[]; text: string } {
  const text = readKeysText(file)
  return { ...parseKeysFile(text, file, envKey), text }
}

interface Document {
  entries: KeyEntry[]
  problems: string[]
  defaults: { allow?: string[]; rateLimit?: KeyEntry['rateLimit'] }
  publicRules?: string[]
}

function parseDocument(text: string, file: string): Document {
  const document = parseJson(text, file)
  if (document === null || typeof document !== 'object' || Array.isArray(document)) {
    throw new KeysFileError(file, ['must be a JSON object of the form { "keys": [ ... ] }'])
  }
  const problems = Object.keys(document)
    .filter((field) => !TOP_LEVEL_FIELDS.has(field))
    .map((field) => `unknown top-level field ${describeField(field)}: only "keys", "defaults" and "public" are allowed`)
  const { keys, defaults = {}, public: publicRules } = document as { keys?: unknown; defaults?: unknown; public?: unknown }
  const defaultsValid = defaults !== null && typeof defaults === 'object' && !Array.isArray(defaults)
  if (!defaultsValid) problems.push('"defaults" must be an object such as { "allow": [...] }')
  else for (const field of Object.keys(defaults)) if (!DEFAULTS_FIELDS.has(field)) problems.push(`defaults: unknown field ${describeField(field)} (allowed: allow, rateLimit)`)
  if (publicRules !== undefined && !Array.isArray(publicRules)) problems.push('"public" must be an array of rules such as "GET /status"')
  if (!Array.isArray(keys)) throw new KeysFileError(file, ['"keys" must be an array of entries', ...problems])
  // A loop, not push(...list): a spread of 100,000 problems overflows the call stack.
  keys.forEach((entry, index) => {
    for (const problem of unknownFieldsOf(entry, index)) problems.push(problem)
  })
  return { entries: keys as KeyEntry[], problems, defaults: defaultsValid ? (defaults as Document['defaults']) : {}, publicRules: publicRules as string[] | undefined }
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
    get publicPolicy() {
      return current.publicPolicy
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

function readKeysText(file: string): string {
  let fd: number | undefined
  try {
    // O_NONBLOCK: should the path be a FIFO, opening it must not wait for a writer.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK)
    if (!fstatSync(fd).isFile()) throw new KeysFileError(file, ['is not a regular file'])
    return readFileSync(fd, 'utf8')
  } catch (error) {
    if (error instanceof KeysFileError) throw error
    const code = (error as NodeJS.ErrnoException).code
    const reasons: Record<string, string> = {
      ENOENT: 'file not found',
      EACCES: 'permission denied',
      EISDIR: 'is a directory, not a file',
    }
    throw new KeysFileError(file, [(code && reasons[code]) ?? `cannot be read (${code ?? 'unknown error'})`])
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

const BOM = '\ufeff'

/** Parses the text (a UTF-8 byte order mark allowed); a syntax error or a repeated field gives its line and column only. */
function parseJson(text: string, file: string): unknown {
  const json = text.startsWith(BOM) ? text.slice(1) : text
  const problem = checkJson(json)
  if (problem === undefined) return JSON.parse(json)
  const { line, column } = lineAndColumnOf(json, problem.offset)
  const what = problem.duplicate === undefined ? problem.message : `field ${describeField(problem.duplicate)} given twice in one object`
  throw new KeysFileError(file, [`is not valid JSON at line ${line}, column ${column}: ${what}`])
}

function unknownFieldsOf(entry: unknown, index: number): string[] {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return [`keys[${index}]: must be an object`]
  const id = (entry as { id?: unknown }).id
  const label = typeof id === 'string' && isValidKeyId(id) ? `keys[${index}] (id "${id}")` : `keys[${index}]`
  return Object.keys(entry)
    .filter((field) => !ENTRY_FIELDS.has(field))
    .map((field) => `${label}: unknown field ${describeField(field)} (allowed: id, key, sha256, expiresAt, allow, rateLimit)`)
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
  initialText: string
  log: Logger
  /** Told the result of each reload that changed something or failed (for the metrics). */
  onReload?: (ok: boolean) => void
}): KeysFileReloader {
  const { file, envKey, store, log, onReload = () => {} } = options
  let loadedText: string | undefined = options.initialText
  // What the last failed reload read: the same failure is not reported again for every event.
  let rejected: string | undefined
  const reload = (trigger: 'SIGHUP' | 'change'): void => {
    let text: string | undefined
    try {
      text = readKeysText(file)
      // An event that left the file as it was (a touch, a rewrite of the same text) costs no parse.
      if (trigger === 'change' && text === loadedText) {
        rejected = undefined
        return
      }
      if (trigger === 'change' && text === rejected) return
      const next = parseKeysFile(text, file, envKey)
      store.swap(next.store)
      loadedText = text
      rejected = undefined
      log.info('keys reloaded', { file, trigger, keys: next.store.size })
      onReload(true)
    } catch (error) {
      if (!(error instanceof KeysFileError)) throw error
      // A file that cannot be read has no text: remember the message instead, so it too is said once.
      const seen = text ?? `unreadable: ${error.problems[0]}`
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
  const { store, text } = loadKeysFile(file, options.apiKey)
  const keys = createSwappableKeyStore(store)
  const reloader = startKeysFileReloads({ file, envKey: options.apiKey, store: keys, initialText: text, log: options.log ?? silentLogger, onReload: options.onReload })
  return Object.assign(keys, reloader)
}
