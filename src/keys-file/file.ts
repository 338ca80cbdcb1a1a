/** The keys file: reading and validating it into a key set (reload.ts keeps one in service). */
import { createHash } from 'node:crypto'
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'
import { bytesSource, JsonSyntaxError, type ByteSource } from './byte-window.js'
import { readDocument } from './json-reader.js'
import { isValidKeyId, type KeyEntry } from '../keys/entry-check.js'
import { KeySetBuilder } from '../key-table/key-set-builder.js'
import type { KeyDefaults } from '../key-table/shared-fields.js'
import type { KeyTable } from '../key-table/key-table.js'
import { baseOf, LayeredBuilder } from '../key-table/layered-store.js'
import { findingsOf, type KeysFileFindings } from './findings.js'
import type { KeyStore } from '../keys/store.js'

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
const ENTRY_FIELDS = new Set(['id', 'key', 'sha256', 'expiresAt', 'allow', 'rateLimit', 'quota', 'ips', 'previous'])
const DEFAULTS_FIELDS = new Set(['allow', 'rateLimit', 'quota', 'ips'])
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
export function contentDigestOf(file: string): string {
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
  if (top.problems.length > 0 || (finished.store === undefined && !finished.rebuild)) throw new KeysFileError(file, inFileOrder(top.problems))
  return { store: finished.store, fileKeys: count }
}

const ENTRY_INDEX = /^keys\[(\d+)\]/

/**
 * The problems in the order of the file: the builder finds some only once every entry is read
 * (an id used twice), so each goes back to its entry's place. Problems of no entry (the top-level
 * fields) come first, API_KEY's last.
 */
function inFileOrder(problems: string[]): string[] {
  const placeOf = (problem: string) => (problem.startsWith('API_KEY') ? Infinity : Number(ENTRY_INDEX.exec(problem)?.[1] ?? -1))
  return problems.map((problem, order) => ({ problem, order, place: placeOf(problem) }))
    .sort((a, b) => a.place - b.place || a.order - b.order)
    .map(({ problem }) => problem)
}

/** A top-level field other than an array of keys: `defaults`, `public`, a `keys` that is no array, or an unknown one. */
function topLevelField(top: TopLevel, name: string, value: unknown): void {
  if (name === 'keys') top.keys = 'not an array'
  else if (name === 'public') {
    if (Array.isArray(value)) top.publicRules = value as string[]
    else top.problems.push('"public" must be an array of rules such as "GET /status"')
  } else if (name === 'defaults') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return void top.problems.push('"defaults" must be an object such as { "allow": [...] }')
    for (const field of Object.keys(value)) if (!DEFAULTS_FIELDS.has(field)) top.problems.push(`defaults: unknown field ${describeField(field)} (allowed: ${[...DEFAULTS_FIELDS].join(', ')})`)
    top.defaults = value as KeyDefaults
  } else top.problems.push(`unknown top-level field ${describeField(name)}: only "keys", "defaults" and "public" are allowed`)
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
    .map((field) => `${label}: unknown field ${describeField(field)} (allowed: ${[...ENTRY_FIELDS].join(', ')})`)
}

// A field name is user text that could be a pasted key: quote it only when it looks like a word.
function describeField(field: string): string {
  return QUOTABLE_FIELD_NAME.test(field) ? JSON.stringify(field) : `of ${field.length} characters (not quoted: it may be a key)`
}

