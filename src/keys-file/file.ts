/** The keys file: reading and validating it, swapping a new key set in, watching it for changes. */
import { createHash } from 'node:crypto'
import { closeSync, constants, fstatSync, openSync, readSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import { bytesSource, JsonSyntaxError, readDocument, type ByteSource } from './json-reader.js'
import { isValidKeyId, type KeyEntry } from '../keys/entry-check.js'
import { KeySetBuilder, type KeyDefaults } from '../key-table/key-set-builder.js'
import type { KeyTable } from '../key-table/key-table.js'
import { baseOf, LayeredBuilder } from '../key-table/layered-store.js'
import { findingsOf, type KeysFileFindings } from './findings.js'
import type { KeyRecord, KeyStore } from '../keys/store.js'
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
const DEFAULTS_FIELDS = new Set(['allow', 'rateLimit'])
// Short words like `expiresat` or `name`; not long or mixed strings, which could be a pasted key.
const QUOTABLE_FIELD_NAME = /^[A-Za-z]{1,12}[0-9]{0,3}$/

/**
 * Builds the store for the text of a keys file plus, when given, the `API_KEY` entry (id `env`).
 * Throws `KeysFileError` listing every fault found; messages never include key material.
 */
export function parseKeysFile(text: string, file: string, envKey?: string): KeysFileContents {
  return readKeys(bytesSource(Buffer.from(text, 'utf8')), file, envKey) as KeysFileContents
}

/**
 * Reads and parses the keys file a window at a time (see `parseKeysFile`): the text is never held
 * whole. Also returns the SHA-256 of what was read, to tell a real change from a touch.
 */
export function loadKeysFile(file: string, envKey?: string, previous?: KeyStore): KeysFileContents & { contentDigest: string } {
  const base = baseOf(previous)
  if (base !== undefined) {
    const layered = withKeysFile(file, (source, digest) => ({ ...readKeys(source, file, envKey, base), contentDigest: digest() }))
    if (layered.store !== undefined) return layered as KeysFileContents & { contentDigest: string }
  }
  return withKeysFile(file, (source, digest) => ({ ...(readKeys(source, file, envKey) as KeysFileContents), contentDigest: digest() }))
}

/**
 * Checks the keys file as a load would (throws `KeysFileError` listing its problems) and says what
 * deserves a look, without building the index a store needs for lookups: `keygate check`.
 */
export function checkKeysFile(file: string, nowMs: number, envKey?: string): { findings: KeysFileFindings; publicRules: number } {
  const { store, fileKeys } = withKeysFile(file, (source) => readKeys(source, file, envKey, undefined, false)) as KeysFileContents
  return { findings: findingsOf(store, nowMs, fileKeys), publicRules: store.publicPolicy?.rules ?? 0 }
}

/** The SHA-256 of the file's bytes, read a window at a time. */
function contentDigestOf(file: string): string {
  return withKeysFile(file, (source, digest) => {
    const window = Buffer.allocUnsafe(1 << 20)
    while (source(window, 0) > 0);
    return digest()
  })
}

interface TopLevel {
  problems: string[]
  defaults: KeyDefaults
  publicRules?: string[]
  keys: 'missing' | 'array' | 'not an array'
}

/** A keys file's store, and how many of its keys are the file's (API_KEY's comes after them). */
export interface KeysFileContents {
  store: KeyStore
  fileKeys: number
}

/**
 * Every entry goes into the builder as it is read: a million entries never exist as objects at
 * once. With `base` (the table of the set being replaced), unchanged entries are kept from it; the
 * store is then missing when so much changed that a whole new set is better (read again without).
 */
function readKeys(source: ByteSource, file: string, envKey?: string, base?: KeyTable, indexed = true): Partial<KeysFileContents> & { fileKeys: number } {
  const reserved = envKey === undefined ? undefined : { id: ENV_KEY_ID, problem: `id "${ENV_KEY_ID}" is taken by API_KEY` }
  const builder = base === undefined ? new KeySetBuilder(reserved) : new LayeredBuilder(base, reserved)
  const top: TopLevel = { problems: [], defaults: {}, keys: 'missing' }
  let count = 0
  try {
    readDocument(source, {
      onNotObject: () => {
        throw new KeysFileError(file, ['must be a JSON object of the form { "keys": [ ... ] }'])
      },
      onField: (name, value) => topLevelField(top, name, value),
      onFlatEntry: (bytes, members, memberCount, index) => builder.addFlat(bytes, members, memberCount, index),
      onEntry: (entry, index) => {
        for (const problem of unknownFieldsOf(entry, index)) top.problems.push(problem)
        builder.add(entry as KeyEntry, index)
      },
      onKeysEnd: (entries) => {
        top.keys = 'array'
        count = entries
      },
    })
  } catch (error) {
    if (!(error instanceof JsonSyntaxError)) throw error
    const what = error.duplicate === undefined ? error.message : `field ${describeField(error.duplicate)} given twice in one object`
    throw new KeysFileError(file, [`is not valid JSON at line ${error.line}, column ${error.column}: ${what}`])
  }
  if (top.keys !== 'array') throw new KeysFileError(file, ['"keys" must be an array of entries', ...top.problems])
  if (envKey !== undefined) builder.add({ id: ENV_KEY_ID, key: envKey }, count, 'API_KEY')
  const finished: { store?: KeyStore; rebuild?: true; problems: string[] } = builder.finish({ publicRules: top.publicRules, defaults: top.defaults, indexed })
  const envLabel = `keys[${count}] (id "${ENV_KEY_ID}")`
  for (const problem of finished.problems) top.problems.push(problem.replace(envLabel, 'API_KEY'))
  if (top.problems.length > 0 || (finished.store === undefined && !finished.rebuild)) throw new KeysFileError(file, top.problems)
  return { store: finished.store, fileKeys: count }
}

/** A top-level field other than an array of keys: `defaults`, `public`, a `keys` that is no array, or an unknown one. */
function topLevelField(top: TopLevel, name: string, value: unknown): void {
  if (name === 'keys') top.keys = 'not an array'
  else if (name === 'public') {
    if (Array.isArray(value)) top.publicRules = value as string[]
    else top.problems.push('"public" must be an array of rules such as "GET /status"')
  } else if (name === 'defaults') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return void top.problems.push('"defaults" must be an object such as { "allow": [...] }')
    for (const field of Object.keys(value)) if (!DEFAULTS_FIELDS.has(field)) top.problems.push(`defaults: unknown field ${describeField(field)} (allowed: allow, rateLimit)`)
    top.defaults = value as KeyDefaults
  } else top.problems.push(`unknown top-level field ${describeField(name)}: only "keys", "defaults" and "public" are allowed`)
}

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

/**
 * Opens the keys file and gives `use` a source over its bytes and the SHA-256 of those read so
 * far; turns what the system says about the file into a `KeysFileError`.
 */
function withKeysFile<T>(file: string, use: (source: ByteSource, digest: () => string) => T): T {
  let fd: number | undefined
  try {
    // O_NONBLOCK: should the path be a FIFO, opening it must not wait for a writer.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK)
    if (!fstatSync(fd).isFile()) throw new KeysFileError(file, ['is not a regular file'])
    const hash = createHash('sha256')
    const opened = fd
    const source: ByteSource = (into, at) => {
      const read = readSync(opened, into, at, into.length - at, null)
      hash.update(into.subarray(at, at + read))
      return read
    }
    return use(source, () => hash.digest('hex'))
  } catch (error) {
    if (!(error instanceof Error) || error instanceof KeysFileError || !('code' in error)) throw error
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
