/** The `keygate` command's work: serve, keygen, hash, check, rotate, --version (loaded by cli.ts). */
import { createHash, randomBytes } from 'node:crypto'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { isValidKey, isValidKeyId, type KeyEntry } from './keys/entry-check.js'
import { tryCreateKeyStore } from './key-table/key-store.js'
import { checkKeysFile, KeysFileError } from './keys-file/file.js'
import { EXPIRY_WARNING_DAYS, keysFileWarnings, type KeyFinding, type KeysFileFindings } from './keys-file/findings.js'
import { RotateError, rotateKey } from './keys-file/rotate.js'
import { generateKey } from './keys/keygen.js'
import { describeSettings } from './settings.js'
import { VERSION } from './version.js'

const USAGE = `Usage: keygate [command] [options]

Commands:
  serve                         run the server (the default; configured by environment variables)
  keygen [--id NAME] [--expires ISO-8601]
                                print a new key, then its keys-file entry (with sha256)
  hash                          read a key on stdin, print its SHA-256 hex
  check FILE                    validate a keys file without starting a server
  rotate FILE --id ID [--grace 24h]
                                give entry ID a new key (printed once); the old one works for the grace period
  --version, -v                 print keygate's version

Run "keygate COMMAND --help" for one command. Exit codes: 0 ok, 1 failed, 2 bad command line.
`

const HELP: Record<string, string> = {
  serve: `Usage: keygate serve\n\nRuns the server, exactly as "node dist/server.js", configured by these environment\nvariables (unset or empty: the default):\n${describeSettings()}`,
  keygen: `Usage: keygate keygen [--id NAME] [--expires ISO-8601]\n\nPrints two lines on stdout: a new key (kg_ + 46 base62 characters, the last 6 a CRC32\nchecksum) for the client, then the JSON entry for the keys file, holding only its sha256.\n  --id NAME        the entry's id (default: key-YYYYMMDD-xxxx)\n  --expires DATE   expiry, such as 2027-06-30T00:00:00Z\n`,
  hash: `Usage: keygate hash < key.txt\n\nReads one key on stdin (a trailing newline is ignored) and prints the SHA-256 hex\nto put in a keys file entry as "sha256".\n`,
  check: `Usage: keygate check FILE\n\nValidates a keys file, like "nginx -t": exit 0 with a summary (keys, expired ones,\nones expiring within 30 days, entries holding plain-text keys), or exit 1 with every problem.\n`,
  rotate: `Usage: keygate rotate FILE --id ID [--grace 24h]\n\nGives entry ID of the keys file a new key and prints it on stdout, once. The old key stays\nvalid for the grace period (s, m, h or d; default 24h; 0: none) as an earlier key of the\nentry ("previous"), with the same id, limits and quota. The file is rewritten atomically\n(one entry per line, mode and owner kept); a running server picks it up by itself. A file\nwith problems is left as it is (exit 1). No old key is ever printed.\n`,
}

const OPTIONS: Record<string, ParseArgsConfig['options']> = {
  serve: {},
  keygen: { id: { type: 'string' }, expires: { type: 'string' } },
  hash: {},
  check: {},
  rotate: { id: { type: 'string' }, grace: { type: 'string' } },
}

const MAX_STDIN_BYTES = 64 * 1024
// `check` lists this many problems (or earlier keys), then a count: a file with 150,000 typos needs no 150,000 lines.
const MAX_LISTED_PROBLEMS = 100

/** A mistake on the command line: the message and the command's usage on stderr, exit 2. */
class UsageError extends Error {
  command?: string
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  if (first === '--help' || first === '-h' || first === 'help') return print(USAGE)
  if (first === '--version' || first === '-v') return print(`${VERSION}\n`)
  const command = first === undefined || first.startsWith('-') ? 'serve' : first
  const args = command === first ? rest : argv
  const options = OPTIONS[command]
  if (options === undefined) throw new UsageError(`unknown command "${command}"`)
  try {
    return await run(command, args, options)
  } catch (error) {
    if (error instanceof UsageError || isParseArgsError(error)) throw Object.assign(usageError(error as Error), { command })
    throw error
  }
}

async function run(command: string, args: string[], options: ParseArgsConfig['options']): Promise<number> {
  const parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  if (parsed.values.help) return print(HELP[command] ?? USAGE)
  const values = parsed.values as Record<string, string | undefined>
  switch (command) {
    case 'keygen':
      noPositionals(parsed.positionals)
      return keygen(values.id, values.expires)
    case 'hash':
      noPositionals(parsed.positionals)
      return hash(await readStdin())
    case 'check':
      return check(onePositional(parsed.positionals, 'FILE'))
    case 'rotate':
      return rotate(onePositional(parsed.positionals, 'FILE'), values.id, values.grace)
    default:
      noPositionals(parsed.positionals)
      await import('./server.js')
      return -1 // the server runs until a signal; it exits by itself
  }
}

function isParseArgsError(error: unknown): boolean {
  return (error as NodeJS.ErrnoException)?.code?.startsWith('ERR_PARSE_ARGS') === true
}

/** Node's parseArgs messages are long and about its own syntax: a short one naming the option instead. */
function usageError(error: Error): UsageError {
  if (error instanceof UsageError) return error
  const option = /'(-[^' ]*)/.exec(error.message)?.[1] ?? ''
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return new UsageError(`unknown option ${option}`)
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return new UsageError(`option ${option} needs a value`)
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return new UsageError(`unexpected argument ${option}`)
  return new UsageError(error.message)
}

function keygen(id = defaultId(), expiresAt?: string): number {
  if (!isValidKeyId(id)) throw new UsageError('--id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -')
  const key = generateKey()
  const entry = { id, sha256: createHash('sha256').update(key).digest('hex'), ...(expiresAt !== undefined && { expiresAt }) }
  const { store, problems } = tryCreateKeyStore([entry as KeyEntry])
  if (problems.length > 0) throw new UsageError(`--expires must be a real ISO-8601 date, such as 2027-06-30T00:00:00Z`)
  // A key born expired is a mistake, not a key: refuse it rather than print one that never works.
  if ((store?.lookup(key)?.expiresAtMs ?? Infinity) <= Date.now()) throw new UsageError(`--expires ${expiresAt} is in the past`)
  process.stdout.write(`${key}\n${JSON.stringify(entry)}\n`)
  process.stderr.write('# line 1: the key, for the client only. line 2: the entry for the keys file (no secret in it).\n')
  return 0
}

function defaultId(): string {
  return `key-${new Date().toISOString().slice(0, 10).replaceAll('-', '')}-${randomBytes(2).toString('hex')}`
}

function hash(input: string): number {
  const key = input.replace(/\r?\n$/, '')
  if (!isValidKey(key)) {
    process.stderr.write('keygate hash: the key on stdin must be 1 to 4096 visible ASCII characters (no spaces)\n')
    return 1
  }
  return print(`${createHash('sha256').update(key).digest('hex')}\n`)
}

function check(file: string): number {
  try {
    const { findings, publicRules } = checkKeysFile(file, Date.now())
    process.stdout.write(summarize(file, findings, publicRules))
    // The lines startup logs for this file, word for word: on stderr, so stdout stays the summary.
    for (const warning of keysFileWarnings(file, findings)) process.stderr.write(`warning: ${warning}\n`)
    return 0
  } catch (error) {
    if (!(error instanceof KeysFileError)) throw error
    return printProblems(file, error)
  }
}

function printProblems(file: string, error: KeysFileError): number {
  const shown = error.problems.slice(0, MAX_LISTED_PROBLEMS)
  const more = error.problems.length - shown.length
  process.stderr.write(shown.map((problem) => `${file}: ${problem}\n`).join(''))
  if (more > 0) process.stderr.write(`${file}: and ${more} more problems (${error.problems.length} in all)\n`)
  return 1
}

const GRACE = /^(\d{1,6})(s|m|h|d)$/
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

function rotate(file: string, id: string | undefined, grace = '24h'): number {
  if (id === undefined || !isValidKeyId(id)) throw new UsageError('--id must name the entry: 1 to 128 characters of A-Z a-z 0-9 . _ : @ -')
  const match = GRACE.exec(grace)
  if (grace !== '0' && match === null) throw new UsageError('--grace must be a duration such as 30m, 24h or 7d (0: none)')
  const graceMs = match === null ? 0 : Number(match[1]) * (UNIT_MS[match[2] as string] as number)
  try {
    const { key, until } = rotateKey(file, id, graceMs, Date.now())
    process.stdout.write(`${key}\n`)
    process.stderr.write(`# the new key of "${id}", for the client only: it is not shown again. ${until === undefined ? 'The old key no longer works.' : `The old key works until ${until}.`}\n`)
    return 0
  } catch (error) {
    if (error instanceof KeysFileError) return printProblems(file, error)
    if (!(error instanceof RotateError)) throw error
    process.stderr.write(`keygate rotate: ${file}: ${error.message}\n`)
    return 1
  }
}

function summarize(file: string, findings: KeysFileFindings, publicRules: number): string {
  const label = (key: KeyFinding) => `${key.id} (${new Date(key.expiresAtMs).toISOString()})`
  const { keys, expired, expiringSoon, plainText, withRules, allowNothing, withLimits, withQuotas, withAllowlists, previousKeys } = findings
  const lines = [`${file}: OK, ${keys} key${keys === 1 ? '' : 's'}`]
  if (expired.length > 0) lines.push(`  expired: ${expired.map(label).join(', ')}`)
  if (expiringSoon.length > 0) lines.push(`  expiring within ${EXPIRY_WARNING_DAYS} days: ${expiringSoon.map(label).join(', ')}`)
  if (plainText.length > 0) lines.push(`  plain-text keys (use sha256 instead): ${plainText.join(', ')}`)
  if (withRules > 0) lines.push(`  keys with rules: ${withRules}`)
  if (withLimits > 0) lines.push(`  keys with rate limits: ${withLimits}`)
  if (withQuotas > 0) lines.push(`  keys with quotas: ${withQuotas}`)
  if (withAllowlists > 0) lines.push(`  keys with address allowlists: ${withAllowlists}`)
  const more = previousKeys.length > MAX_LISTED_PROBLEMS ? ` and ${previousKeys.length - MAX_LISTED_PROBLEMS} more` : ''
  if (previousKeys.length > 0) lines.push(`  earlier keys still valid (rotation): ${previousKeys.slice(0, MAX_LISTED_PROBLEMS).map(label).join(', ')}${more}`)
  if (allowNothing.length > 0) lines.push(`  keys that may make no request ("allow": []): ${allowNothing.join(', ')}`)
  if (publicRules > 0) lines.push(`  public rules: ${publicRules}`)
  return `${lines.join('\n')}\n`
}

function noPositionals(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`)
}

function onePositional(positionals: string[], name: string): string {
  if (positionals.length !== 1 || positionals[0] === undefined) throw new UsageError(`expected exactly one ${name}`)
  return positionals[0]
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_STDIN_BYTES) break
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function print(text: string): number {
  process.stdout.write(text)
  return 0
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code
  },
  (error: unknown) => {
    if (!(error instanceof UsageError) && !isParseArgsError(error)) throw error
    const usage = error instanceof UsageError && error.command !== undefined ? HELP[error.command] ?? USAGE : USAGE
    process.stderr.write(`keygate: ${(error as Error).message}\n\n${usage}`)
    process.exitCode = 2
  },
)
