/**
 * `keygate rotate`: a new key for one entry of the keys file, its old key kept as an earlier key
 * (`previous`) for a grace period, the file rewritten atomically (a temporary file in the same
 * directory, fsync, rename, the directory fsynced; mode and owner kept). A running server sees
 * the new file as it sees any edit. Nothing is written unless the file was valid before and the
 * new one is valid too.
 */
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, fchmodSync, fchownSync, fsyncSync, openSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeSync, type Stats } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { MAX_PREVIOUS } from '../keys/entry-check.js'
import { generateKey } from '../keys/keygen.js'
import { checkKeysFile, KeysFileError } from './file.js'

/** Why a rotation wrote nothing; the message never holds a key. */
export class RotateError extends Error {
  override name = 'RotateError'
}

type Entry = Record<string, unknown> & { id?: unknown; key?: unknown; sha256?: unknown; previous?: unknown }


/**
 * Rotates entry `id` of `file` at `nowMs`: returns the new key (the only place it ever appears).
 * The old key stays valid for `graceMs` (0: not at all); earlier keys already past their time go.
 * Throws `KeysFileError` for a file with problems, `RotateError` for anything else.
 */
export function rotateKey(file: string, id: string, graceMs: number, nowMs: number): { key: string; until?: string } {
  checkKeysFile(file, nowMs)
  const real = realpathSync(file) // a symlinked file is rewritten where it lies; the link stays
  const before = statSync(real)
  const doc = JSON.parse(readFileSync(real, 'utf8')) as { keys: Entry[] }
  const index = doc.keys.findIndex((entry) => entry.id === id)
  if (index === -1) throw new RotateError(`no entry with id "${id}"`)
  const key = generateKey()
  const until = graceMs > 0 ? new Date(nowMs + graceMs).toISOString() : undefined
  doc.keys[index] = rotated(doc.keys[index] as Entry, sha256Hex(key), until, nowMs)
  try {
    writeAtomically(real, before, serialize(doc), nowMs)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (error instanceof RotateError || code === undefined) throw error
    throw new RotateError(`cannot write the new file next to the old one (${code})`)
  }
  return { key, until }
}

/** The entry with `sha256` as its key, its old key among `previous` until `until`, fields in their order. */
function rotated(entry: Entry, sha256: string, until: string | undefined, nowMs: number): Entry {
  const oldSha256 = typeof entry.key === 'string' ? sha256Hex(entry.key) : (entry.sha256 as string)
  const kept = (Array.isArray(entry.previous) ? (entry.previous as Array<{ until: string }>) : []).filter((earlier) => Date.parse(earlier.until) > nowMs)
  const previous = until === undefined ? kept : [...kept, { sha256: oldSha256, until }]
  // At most what an entry may hold: the earliest-ending go first.
  previous.sort((a, b) => Date.parse(b.until) - Date.parse(a.until)).splice(MAX_PREVIOUS)
  const out: Entry = {}
  for (const [field, value] of Object.entries(entry)) {
    if (field === 'key' || field === 'sha256') out.sha256 = sha256
    else if (field !== 'previous') out[field] = value
  }
  if (previous.length > 0) out.previous = previous
  return out
}

/** The document with one entry per line: a million-key file stays a file the fast path reads. */
function serialize(doc: Record<string, unknown> & { keys: Entry[] }): string {
  const fields = Object.entries(doc).map(([name, value]) =>
    name === 'keys'
      ? `  "keys": [${doc.keys.length === 0 ? '' : `\n${doc.keys.map((entry) => `    ${JSON.stringify(entry)}`).join(',\n')}\n  `}]`
      : `  ${JSON.stringify(name)}: ${JSON.stringify(value)}`)
  return `{\n${fields.join(',\n')}\n}\n`
}

function writeAtomically(file: string, before: Stats, text: string, nowMs: number): void {
  const temporary = join(dirname(file), `.${basename(file)}.rotate-${randomBytes(6).toString('hex')}`)
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
  try {
    try {
      writeAll(fd, Buffer.from(text, 'utf8'))
      fchmodSync(fd, before.mode & 0o7777)
      if (before.uid !== process.getuid?.() || before.gid !== process.getgid?.()) fchownSync(fd, before.uid, before.gid)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    checkKeysFile(temporary, nowMs) // never a file the server would refuse
    const now = statSync(file)
    if (now.mtimeMs !== before.mtimeMs || now.size !== before.size || now.ino !== before.ino) throw new RotateError('the file changed while it was being rotated: nothing written, run it again')
    renameSync(temporary, file)
  } catch (error) {
    unlinkSync(temporary)
    if (error instanceof KeysFileError) throw new RotateError(`the rotated file would not load: ${error.problems[0]}`)
    if ((error as NodeJS.ErrnoException).code === 'EPERM') throw new RotateError(`cannot give the new file the owner of the old one (uid ${before.uid}): run as that user or as root`)
    throw error
  }
  syncDirectory(dirname(file))
}

function writeAll(fd: number, bytes: Buffer): void {
  for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at, bytes.length - at)
}

/** The rename is durable once the directory is on disk too. */
function syncDirectory(directory: string): void {
  const fd = openSync(directory, constants.O_RDONLY)
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
