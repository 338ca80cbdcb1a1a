import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { crc32, generateKey, hasValidChecksum } from '../dist/keys/keygen.js'
import { loadConfig } from '../dist/config.js'
import { SETTINGS, type Setting } from '../dist/settings.js'
import { CLI_JS, DIST_DIR, SERVER_JS, logLines, startServerProcess } from './helpers.js'

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')

/** Runs `keygate ARGS` to completion (10 s at most) with `input` on stdin. */
function keygate(args: string[], input = '') {
  const result = spawnSync(process.execPath, [CLI_JS, ...args], { input, encoding: 'utf8', timeout: 10_000 })
  return { code: result.status, stdout: result.stdout, stderr: result.stderr }
}

function tempFile(t: TestContext, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-cli-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeFileSync(file, text)
  return file
}

test('crc32 matches the standard check value', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926)
  assert.equal(crc32(Buffer.alloc(0)), 0)
})

test('generated keys have the kg_ shape and a checksum that catches a changed character', () => {
  const key = generateKey()
  assert.match(key, /^kg_[0-9A-Za-z]{46}$/)
  assert.equal(hasValidChecksum(key), true)
  const typo = key.slice(0, 10) + (key[10] === 'a' ? 'b' : 'a') + key.slice(11)
  assert.equal(hasValidChecksum(typo), false)
  assert.equal(hasValidChecksum('kg_short'), false)
})

test('generated keys use every base62 character without modulo bias', () => {
  const counts = new Map<string, number>()
  for (let i = 0; i < 2000; i++) {
    for (const char of generateKey().slice(3, 43)) counts.set(char, (counts.get(char) ?? 0) + 1)
  }
  assert.equal(counts.size, 62)
  // byte % 62 over all 256 byte values would favour the first 8 characters by 25%.
  const mean = (chars: string) => [...chars].reduce((sum, c) => sum + (counts.get(c) ?? 0), 0) / chars.length
  const favoured = mean('01234567')
  const others = mean('89ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz')
  assert.ok(Math.abs(favoured / others - 1) < 0.1, `first 8: ${favoured}, others: ${others}`)
})

test('keygen prints a key and its keys-file entry with the sha256 of that key', () => {
  const { code, stdout, stderr } = keygate(['keygen', '--id', 'billing', '--expires', '2027-06-30T00:00:00Z'])
  assert.equal(code, 0, stderr)
  const [key, entryLine, extra] = stdout.split('\n')
  assert.equal(extra, '')
  assert.match(key ?? '', /^kg_[0-9A-Za-z]{46}$/)
  assert.deepEqual(JSON.parse(entryLine ?? ''), { id: 'billing', sha256: sha256(key ?? ''), expiresAt: '2027-06-30T00:00:00Z' })
  assert.ok(!stderr.includes(key ?? ''), 'the key must only go to stdout')
})

test('keygen without --id makes a dated id, and two runs give different keys', () => {
  const first = keygate(['keygen']).stdout.split('\n')
  const second = keygate(['keygen']).stdout.split('\n')
  assert.notEqual(first[0], second[0])
  assert.match(JSON.parse(first[1] ?? '').id, /^key-\d{8}-[0-9a-f]{4}$/)
})

test('a keygen key works in a keys file', async (t) => {
  const [key, entry] = keygate(['keygen', '--id', 'fresh']).stdout.split('\n')
  const file = tempFile(t, `{ "keys": [ ${entry} ] }`)
  const { url } = await startServerProcess(t, { API_KEYS_FILE: file })
  const res = await fetch(`${url}/auth`, { headers: { authorization: `Bearer ${key}` } })
  assert.equal(res.status, 204)
  assert.equal(res.headers.get('x-keygate-key-id'), 'fresh')
})

for (const [args, message, usage] of [
  [['keygen', '--id', 'has space'], /--id must be/, 'keygen'],
  [['keygen', '--expires', 'tomorrow'], /--expires must be a real ISO-8601 date/, 'keygen'],
  [['keygen', '--expires', ''], /--expires must be a real ISO-8601 date/, 'keygen'],
  [['keygen', '--expires', '2027-02-31T00:00:00Z'], /--expires must be a real ISO-8601 date/, 'keygen'],
  [['keygen', '--expires', '2020-01-01T00:00:00Z'], /--expires 2020-01-01T00:00:00Z is in the past/, 'keygen'],
  [['keygen', '--bogus'], /^keygate: unknown option --bogus\n/, 'keygen'],
  [['keygen', '--id'], /^keygate: option --id needs a value\n/, 'keygen'],
  [['keygen', 'extra'], /unexpected argument "extra"/, 'keygen'],
  [['frobnicate'], /unknown command "frobnicate"/, '[command]'],
  [['check'], /^keygate: expected exactly one FILE\n/, 'check'],
  [['check', 'a.json', 'b.json'], /^keygate: expected exactly one FILE\n/, 'check'],
  [['hash', '--salt', 'x'], /^keygate: unknown option --salt\n/, 'hash'],
  [['serve', '--port', '80'], /^keygate: unknown option --port\n/, 'serve'],
] as const) {
  test(`keygate ${args.join(' ')}: exit 2 with a short message and the command's usage`, () => {
    const { code, stdout, stderr } = keygate([...args])
    assert.equal(code, 2)
    assert.equal(stdout, '')
    assert.match(stderr, message)
    assert.match(stderr, new RegExp(`\n\nUsage: keygate ${usage.replace(/[[\]]/g, '\\$&')}`))
    assert.doesNotMatch(stderr, /To specify a positional argument/, "not Node's parseArgs text")
    assert.equal(stderr.split('\n')[0]?.startsWith('keygate: '), true)
  })
}

test('keygate serve --help lists every environment variable with its default, from the table the configuration reads', () => {
  const { code, stdout } = keygate(['serve', '--help'])
  assert.equal(code, 0)
  for (const setting of SETTINGS as readonly Setting[]) {
    const line = stdout.split('\n').find((l) => l.startsWith(`  ${setting.name} `))
    assert.ok(line !== undefined, `${setting.name} is listed`)
    if (setting.fallback !== undefined) assert.ok(line.endsWith(`(default ${setting.fallback})`), line)
    else assert.doesNotMatch(line, /\(default/)
  }
})

test('the configuration uses the defaults of the table: an empty environment gives them', () => {
  const { config } = loadConfig({ API_KEY: 'k'.repeat(20) })
  const byName = new Map((SETTINGS as readonly Setting[]).map((setting) => [setting.name, setting.fallback]))
  assert.equal(String(config.port), byName.get('PORT'))
  assert.equal(config.host, byName.get('HOST'))
  assert.equal(String(config.headersTimeoutMs), byName.get('HEADERS_TIMEOUT_MS'))
  assert.equal(String(config.keepAliveTimeoutMs), byName.get('KEEP_ALIVE_TIMEOUT_MS'))
  assert.equal(String(config.maxBodyBytes), byName.get('MAX_BODY_BYTES'))
  assert.equal(config.logLevel, byName.get('LOG_LEVEL'))
  // Every variable the configuration code reads is in the table.
  const read = new Set([...readFileSync(join(DIST_DIR, 'config.js'), 'utf8').matchAll(/env(?:\.|\[')([A-Z_]+)|readInteger\(env, '([A-Z_]+)'\)|fallbackOf\('([A-Z_]+)'\)/g)]
    .map((m) => m[1] ?? m[2] ?? m[3]))
  assert.ok(read.size >= 20, `${read.size} variables found`)
  for (const name of read) assert.ok(byName.has(name as string), `${name} is in SETTINGS`)
})

test("the README's configuration table has every variable of the table, with the same default", () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  for (const setting of SETTINGS as readonly Setting[]) {
    const row = readme.split('\n').find((line) => line.startsWith('| ') && (line.split('|')[1] ?? '').includes(`\`${setting.name}\``))
    assert.ok(row !== undefined, `${setting.name} in the README`)
    const fallback = row.split('|')[2]?.trim()
    assert.equal(fallback, setting.fallback === undefined ? '—' : `\`${setting.fallback}\``, setting.name)
  }
})

for (const command of ['serve', 'keygen', 'hash', 'check']) {
  test(`keygate ${command} --help prints its usage and exits 0`, () => {
    const { code, stdout } = keygate([command, '--help'])
    assert.equal(code, 0)
    assert.match(stdout, new RegExp(`^Usage: keygate ${command}`))
  })
}

test('keygate --help lists every command', () => {
  const { code, stdout } = keygate(['--help'])
  assert.equal(code, 0)
  for (const command of ['serve', 'keygen', 'hash', 'check']) assert.match(stdout, new RegExp(`\\n  ${command}\\b`))
})

test('hash reads a key on stdin and prints its SHA-256 hex, ignoring one trailing newline', () => {
  for (const input of ['my-key-value', 'my-key-value\n', 'my-key-value\r\n']) {
    const { code, stdout } = keygate(['hash'], input)
    assert.equal(code, 0)
    assert.equal(stdout, `${sha256('my-key-value')}\n`)
  }
})

for (const [name, input] of [['nothing', ''], ['a key with a space', 'my key'], ['two lines', 'a\nb\n']] as const) {
  test(`hash refuses ${name} on stdin with exit 1`, () => {
    const { code, stdout, stderr } = keygate(['hash'], input)
    assert.equal(code, 1)
    assert.equal(stdout, '')
    assert.match(stderr, /must be 1 to 4096 visible ASCII/)
  })
}

test('check: a valid file is exit 0 with a summary of expired, soon-expiring and plain-text entries', (t) => {
  const soon = new Date(Date.now() + 3 * 86_400_000).toISOString()
  const file = tempFile(t, JSON.stringify({ keys: [
    { id: 'billing', sha256: sha256('b') },
    { id: 'old', sha256: sha256('o'), expiresAt: '2020-01-01T00:00:00Z' },
    { id: 'soon', sha256: sha256('s'), expiresAt: soon },
    { id: 'local-dev', key: 'plain-text-key' },
  ] }))
  const { code, stdout } = keygate(['check', file])
  assert.equal(code, 0)
  assert.equal(stdout, [
    `${file}: OK, 4 keys`,
    '  expired: old (2020-01-01T00:00:00.000Z)',
    `  expiring within 30 days: soon (${soon})`,
    '  plain-text keys (use sha256 instead): local-dev',
    '',
  ].join('\n'))
  assert.ok(!stdout.includes('plain-text-key'))
})

test('check: an invalid file is exit 1 with every problem, one per line', (t) => {
  const file = tempFile(t, JSON.stringify({ keys: [{ id: 'a', sha256: 'zz' }, { id: 'a', key: 'dup-secret' }, { id: 'c', key: 'k', expiresat: 'x' }] }))
  const { code, stdout, stderr } = keygate(['check', file])
  assert.equal(code, 1)
  assert.equal(stdout, '')
  // In the order of the file, though an id used twice is found only once every entry is read.
  assert.deepEqual(stderr.trimEnd().split('\n'), [
    `${file}: keys[0] (id "a"): sha256 must be 64 lowercase hex characters`,
    `${file}: keys[1] (id "a"): id is used by an earlier entry`,
    `${file}: keys[2] (id "c"): unknown field "expiresat" (allowed: id, key, sha256, expiresAt, allow, rateLimit, quota, ips, previous)`,
  ])
  // The server names the same first problem.
  const server = spawnSync(process.execPath, [SERVER_JS], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env.PATH ?? '', PORT: '0', API_KEYS_FILE: file } })
  assert.equal(server.status, 1)
  assert.equal(server.stderr, `keygate: API_KEYS_FILE ${file}: keys[0] (id "a"): sha256 must be 64 lowercase hex characters (and 2 more problems)\n`)
  assert.ok(!stderr.includes('dup-secret'))
})

test('check prints the warnings startup logs for the same file, word for word, on stderr', async (t) => {
  const soon = new Date(Date.now() + 3 * 86_400_000).toISOString()
  for (const keys of [[], [{ id: 'old', sha256: sha256('o'), expiresAt: '2020-01-01T00:00:00Z' }, { id: 'soon', sha256: sha256('s'), expiresAt: soon }, { id: 'none', key: 'plain-text-key', allow: [] }]]) {
    const file = tempFile(t, JSON.stringify({ keys }))
    const checked = keygate(['check', file])
    assert.equal(checked.code, 0)
    const warned = checked.stderr.trimEnd().split('\n').map((line) => line.replace(/^warning: /, ''))
    assert.equal(warned.length, keys.length === 0 ? 1 : 4, checked.stderr)
    const { child } = await startServerProcess(t, { API_KEYS_FILE: file }, SERVER_JS)
    const logged = logLines(child).filter((line) => line.level === 'warn').map((line) => line.msg)
    assert.deepEqual(warned, logged)
    assert.ok(!checked.stderr.includes('plain-text-key'))
  }
})

test('check: a missing file is exit 1', () => {
  const { code, stderr } = keygate(['check', '/nonexistent/keys.json'])
  assert.equal(code, 1)
  assert.equal(stderr, '/nonexistent/keys.json: file not found\n')
})

for (const args of [[], ['serve']]) {
  test(`keygate ${args.join(' ') || '(no command)'} runs the server`, async (t) => {
    const { url } = await startServerProcess(t, { API_KEY: 'cli-serve-key-0123456789' }, CLI_JS, undefined, args)
    const res = await fetch(`${url}/data`, { headers: { authorization: 'cli-serve-key-0123456789' } })
    assert.equal(res.status, 200)
    await res.arrayBuffer()
  })
}

for (const flag of ['--version', '-v']) {
  test(`keygate ${flag} prints the version`, () => {
    const { code, stdout } = keygate([flag])
    assert.equal(code, 0)
    assert.match(stdout, /^\d+\.\d+\.\d+\n$/)
  })
}

// Pretends to be an older Node: what a user with Node 20.11 would see.
const OLD_NODE = ['--import', 'data:text/javascript,Object.defineProperty(process,"version",{value:"v20.11.1"})']

for (const [name, script] of [['keygate', CLI_JS], ['dist/server.js', SERVER_JS]] as const) {
  test(`${name} on Node older than 20.12: exit 1 with one line naming the Node needed`, () => {
    const result = spawnSync(process.execPath, [...OLD_NODE, script, '--version'], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env.PATH ?? '', PORT: '0' } })
    assert.equal(result.status, 1)
    assert.equal(result.stderr, 'keygate: keygate needs Node.js 20.12.0 or later; this is Node.js v20.11.1\n')
    assert.equal(result.stdout, '')
  })
}

test('check: a file with 150,000 problems lists the first 100 and a count', (t) => {
  const file = tempFile(t, JSON.stringify({ keys: Array.from({ length: 150_000 }, (_, i) => ({ id: `k${i}`, hash: sha256(String(i)) })) }))
  const { code, stderr } = keygate(['check', file])
  assert.equal(code, 1)
  const lines = stderr.trimEnd().split('\n')
  assert.equal(lines.length, 101)
  assert.match(lines[100] ?? '', /and \d+ more problems \(\d+ in all\)$/)
})

test('check: summarises policies (keys with rules, keys that may do nothing, public rules) and reports bad rules', (t) => {
  const file = tempFile(t, JSON.stringify({
    public: ['GET /status', 'OPTIONS /**'],
    keys: [{ id: 'a', sha256: sha256('a'), allow: ['GET /v1/**'] }, { id: 'b', sha256: sha256('b'), allow: [] }, { id: 'c', sha256: sha256('c'), rateLimit: { limit: 5, windowS: 1 } }],
  }))
  const { code, stdout } = keygate(['check', file])
  assert.equal(code, 0)
  assert.match(stdout, /\n  keys with rules: 2\n  keys with rate limits: 1\n/)
  assert.match(stdout, /\n  keys that may make no request \("allow": \[\]\): b\n/)
  assert.match(stdout, /\n  public rules: 2\n$/)
  const bad = tempFile(t, JSON.stringify({ keys: [{ id: 'a', sha256: sha256('a'), allow: ['GET /v1/**/x'] }] }))
  const refused = keygate(['check', bad])
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /keys\[0\] \(id "a"\): allow\[0\]: "\*\*" may only be the last segment/)
})
