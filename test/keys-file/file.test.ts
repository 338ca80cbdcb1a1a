import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { test, type TestContext } from 'node:test'
import { createKeyStore } from '../../dist/index.js'
import { KeysFileError, loadKeysFile, parseKeysFile } from '../../dist/keys-file/file.js'
import { createSwappableKeyStore, watchKeysFile } from '../../dist/keys-file/reload.js'
import { waitFor } from '../helpers.js'

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
const FILE = 'keys.json'

function problemsOf(text: string, envKey?: string): readonly string[] {
  try {
    parseKeysFile(text, FILE, envKey)
  } catch (error) {
    assert.ok(error instanceof KeysFileError, String(error))
    assert.ok(error.message.startsWith(`API_KEYS_FILE ${FILE}: `), error.message)
    return error.problems
  }
  assert.fail('expected a KeysFileError')
}

test('parses sha256 and plain entries with and without expiry', () => {
  const { store, fileKeys } = parseKeysFile(
    JSON.stringify({
      keys: [
        { id: 'billing', sha256: sha256('billing-key'), expiresAt: '2099-06-30T00:00:00Z' },
        { id: 'local-dev', key: 'local-dev-key' },
      ],
    }),
    FILE,
  )
  assert.equal(fileKeys, 2)
  assert.equal(store.lookup('billing-key')?.id, 'billing')
  assert.equal(store.lookup('billing-key')?.expiresAtMs, Date.UTC(2099, 5, 30))
  assert.equal(store.lookup('local-dev-key')?.id, 'local-dev')
})

test('API_KEY and the file together give the union; the env key has id env', () => {
  const { store } = parseKeysFile(JSON.stringify({ keys: [{ id: 'a', key: 'file-key' }] }), FILE, 'env-key-value')
  assert.equal(store.size, 2)
  assert.equal(store.lookup('file-key')?.id, 'a')
  assert.equal(store.lookup('env-key-value')?.id, 'env')
})

for (const [name, text, envKey, expected] of [
  ['text that is not JSON', '{"keys": [ {"id": "a", "key": kg_secretvalue} ]}', undefined, /^is not valid JSON/],
  ['truncated JSON', '{"keys": [', undefined, /^is not valid JSON/],
  ['an array at the top', '[]', undefined, /must be a JSON object/],
  ['a missing keys array', '{}', undefined, /"keys" must be an array/],
  ['an unknown top-level field', '{"keys": [], "key": []}', undefined, /unknown top-level field "key"/],
  ['an entry that is not an object', '{"keys": ["abc"]}', undefined, /keys\[0\]: must be an object/],
  ['a typo in expiresAt', `{"keys": [{"id": "a", "key": "abcdef", "expiresat": "2020-01-01"}]}`, undefined, /keys\[0\] \(id "a"\): unknown field "expiresat"/],
  ['a missing id', '{"keys": [{"key": "abcdef"}]}', undefined, /keys\[0\]: id must be/],
  ['both key and sha256', `{"keys": [{"id": "a", "key": "abcdef", "sha256": "${sha256('x')}"}]}`, undefined, /keys\[0\] \(id "a"\): needs exactly one/],
  ['bad hex', '{"keys": [{"id": "a", "sha256": "xyz"}]}', undefined, /keys\[0\] \(id "a"\): sha256 must be 64 lowercase hex/],
  ['a duplicate id', '{"keys": [{"id": "a", "key": "abcdef"}, {"id": "a", "key": "ghijkl"}]}', undefined, /keys\[1\] \(id "a"\): id is used/],
  ['a bad expiry', '{"keys": [{"id": "a", "key": "abcdef", "expiresAt": "soon"}]}', undefined, /keys\[0\] \(id "a"\): expiresAt must be/],
  ['the id env while API_KEY is set', '{"keys": [{"id": "env", "key": "abcdef"}]}', 'another-key', /keys\[0\] \(id "env"\): id "env" is taken by API_KEY/],
  ['the API_KEY value also in the file', '{"keys": [{"id": "a", "key": "same-key"}]}', 'same-key', /API_KEY: same key as entry "a"/],
] as const) {
  test(`rejects ${name}, naming the file and the entry`, () => {
    const problems = problemsOf(text, envKey)
    assert.match(problems[0] ?? '', expected)
  })
}

test('lists every problem, not just the first', () => {
  const problems = problemsOf('{"keys": [{"id": "a", "key": "x y"}, {"id": "b", "sha256": "zz", "expiresat": "x"}], "extra": 1}')
  assert.equal(problems.length, 4)
})

test('no message quotes key material from the file', () => {
  for (const text of [
    '{"keys": [ {"id": "a", "key": kg_secretvalue} ]}',
    '{"keys": [ {"id": "a", "key": "kg secretvalue"} ]}',
    '{"keys": [ {"id": "a", "kg_secretvalue": true} ]}',
    '{"keys": [ {"id": "a", "key": "kg_secretvalue"}, {"id": "b", "key": "kg_secretvalue"} ]}',
  ]) {
    const problems = problemsOf(text)
    assert.ok(problems.length > 0)
    for (const problem of problems) assert.doesNotMatch(problem, /secretvalue/, problem)
  }
})

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-keys-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('a missing file is a KeysFileError saying so', (t) => {
  const file = join(tempDir(t), 'absent.json')
  assert.throws(() => loadKeysFile(file), { name: 'KeysFileError', message: `API_KEYS_FILE ${file}: file not found` })
})

test('loads 100,000 entries and authenticates against them', (t) => {
  const file = join(tempDir(t), 'big.json')
  const keys = Array.from({ length: 100_000 }, (_, i) => ({ id: `client-${i}`, sha256: sha256(`key-${i}`) }))
  writeFileSync(file, JSON.stringify({ keys }))
  const started = performance.now()
  const { store } = loadKeysFile(file)
  t.diagnostic(`loaded 100,000 sha256 entries in ${(performance.now() - started).toFixed(0)} ms`)
  assert.equal(store.size, 100_000)
  assert.equal(store.lookup('key-0')?.id, 'client-0')
  assert.equal(store.lookup('key-54321')?.id, 'client-54321')
  assert.equal(store.lookup('key-100000'), undefined)
})

test('a swappable store answers from the old set or the new, never a mix', () => {
  const store = createSwappableKeyStore(createKeyStore([{ id: 'old', key: 'old-key' }]))
  assert.equal(store.lookup('old-key')?.id, 'old')
  store.swap(createKeyStore([{ id: 'new', key: 'new-key' }, { id: 'x', key: 'x-key' }]))
  assert.equal(store.lookup('old-key'), undefined)
  assert.equal(store.lookup('new-key')?.id, 'new')
  assert.equal(store.size, 2)
})

test('invalid JSON names the line and column of the fault, for the usual mistakes, and never quotes the file', () => {
  for (const [text, expected] of [
    ['{"keys": [\n  {"id": "a", "key": "kg_secretvalue"},\n]}', /line 2, column 39: a trailing comma before "\]"/],
    ['{"keys": [\n  {"id": "a", "key": "kg_secretvalue",}\n]}', /line 2, column 38: a trailing comma before "}"/],
    ['{"keys": [\n  {"id": "a" "key": "kg_secretvalue"}\n]}', /line 2, column 14: expected "," or "}"/],
    ['{"keys": [\n  {"id": "a", "key": kg_secretvalue}\n]}', /line 2, column 22: expected a value/],
    ["{'keys': []}", /line 1, column 2: expected a field name in double quotes/],
    ['{"keys": [', /line 1, column 11: the text ends where a value should be/],
    ['{"keys": []} extra', /line 1, column 14: more text after the end/],
  ] as const) {
    const [problem] = problemsOf(text)
    assert.match(problem ?? '', /^is not valid JSON at line \d+, column \d+: /)
    assert.match(problem ?? '', expected)
    assert.doesNotMatch(problem ?? '', /secretvalue/)
  }
})

test('a field given twice in one object is refused, not silently the last one', () => {
  const [problem] = problemsOf('{"keys": [{"id": "a", "key": "abcdef", "expiresAt": "2020-01-01T00:00:00Z", "expiresAt": "2099-01-01T00:00:00Z"}]}')
  assert.match(problem ?? '', /line 1, column 77: field "expiresAt" given twice in one object/)
  const [pasted] = problemsOf('{"keys": [], "kg_secretvalue_long_0123": 1, "kg_secretvalue_long_0123": 2}')
  assert.doesNotMatch(pasted ?? '', /secretvalue/)
})

test('a UTF-8 byte order mark before the JSON is accepted', () => {
  const { store } = parseKeysFile(`\ufeff{"keys": [{"id": "a", "key": "bom-key-123"}]}`, FILE)
  assert.equal(store.lookup('bom-key-123')?.id, 'a')
})

test('150,000 bad entries are reported with a count, not a stack overflow', () => {
  const text = JSON.stringify({ keys: Array.from({ length: 150_000 }, (_, i) => ({ id: `k${i}`, hash: sha256(String(i)) })) })
  let error: unknown
  try {
    parseKeysFile(text, FILE)
  } catch (caught) {
    error = caught
  }
  assert.ok(error instanceof KeysFileError, String(error))
  assert.ok(error.problems.length >= 150_000)
  assert.match(error.message, /and \d+ more problems/)
})

test('a FIFO in place of the keys file is refused at once, without blocking on it', (t) => {
  const file = join(tempDir(t), 'keys.json')
  const made = spawnSync('mkfifo', [file])
  if (made.status !== 0) return t.skip('mkfifo (coreutils) is not available')
  assert.throws(() => loadKeysFile(file), (error: unknown) => error instanceof KeysFileError && /is not a regular file/.test(error.message))
})

test('the watch reacts to the keys file and to a ..data swap, not to other files in the directory', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  writeFileSync(file, '{"keys": []}')
  let changes = 0
  const stop = watchKeysFile(file, () => changes++, (error) => assert.fail(error))
  t.after(stop)
  for (let i = 0; i < 5; i++) writeFileSync(join(dir, 'server.log'), `line ${i}\n`)
  // Give the other file's events every chance to arrive (and the 100 ms settle to pass): none may count.
  await new Promise((resolve) => setTimeout(resolve, 400))
  assert.equal(changes, 0)
  writeFileSync(file, '{"keys": [] }')
  await waitFor('the change of the file', () => (changes === 1 ? true : undefined))
  mkdirSync(join(dir, '..2026_new'))
  symlinkSync('..2026_new', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  await waitFor('the ..data swap', () => (changes === 2 ? true : undefined))
})

test('a stream of events cannot postpone a reload beyond a second', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, '{"keys": []}')
  let changes = 0
  t.after(watchKeysFile(file, () => changes++, (error) => assert.fail(error)))
  // Writes every 20 ms for 2.5 s: the 100 ms quiet period never comes, the 1 s cap must.
  for (let i = 0; i < 125 && changes === 0; i++) {
    writeFileSync(file, `{"keys": [] ${' '.repeat(i % 2)}}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.ok(changes > 0, 'the reload happened while events kept coming')
})
