import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { test, type TestContext } from 'node:test'
import { createKeyStore } from '../dist/keys.js'
import { KeysFileError, createSwappableKeyStore, loadKeysFile, parseKeysFile } from '../dist/keys-file.js'

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
  const { store, entries } = parseKeysFile(
    JSON.stringify({
      keys: [
        { id: 'billing', sha256: sha256('billing-key'), expiresAt: '2099-06-30T00:00:00Z' },
        { id: 'local-dev', key: 'local-dev-key' },
      ],
    }),
    FILE,
  )
  assert.equal(entries.length, 2)
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
