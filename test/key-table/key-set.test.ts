import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { forEachCollision, radixOrder } from '../../dist/key-table/columns.js'
import { KeysFileError, loadKeysFile, parseKeysFile } from '../../dist/keys-file/file.js'
import type { KeyStore } from '../../dist/keys/store.js'
import { collectGarbage } from '../../dist/process/memory.js'

const sha256 = (key: string) => createHash('sha256').update(key).digest('hex')
const entries = (count: number, key = (i: number) => `key-${i}`) => Array.from({ length: count }, (_, i) => ({ id: `client-${i}`, sha256: sha256(key(i)) }))

function keysFile(t: TestContext): (document: unknown) => string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-keyset-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  return (document) => {
    writeFileSync(file, JSON.stringify(document))
    return file
  }
}

const problemsOf = (load: () => unknown): readonly string[] => {
  try {
    load()
  } catch (error) {
    if (error instanceof KeysFileError) return error.problems
    throw error
  }
  return assert.fail('expected a KeysFileError')
}

test('radixOrder sorts rows by key, stably; forEachCollision finds exactly the equal keys', () => {
  const keys = Uint32Array.from([5, 3, 0xffffffff, 3, 0, 5, 1 << 22, 0])
  assert.deepEqual([...radixOrder(keys, keys.length)], [4, 7, 1, 3, 0, 5, 6, 2])
  const groups: number[][] = []
  const withThree = Uint32Array.from([...keys, 3, 8])
  forEachCollision(withThree, withThree.length, (rows) => groups.push(rows))
  // 0, 8 and 1 << 22 share their low bits (the chains' buckets) but are not equal: no group of them.
  assert.deepEqual(groups.sort((a, b) => (a[0] as number) - (b[0] as number)), [[0, 5], [1, 3, 8], [4, 7]])
})

/** What a key's record means: its id, expiry, and what its rules allow of a few requests. */
const meaning = (store: KeyStore, credential: string) => {
  const record = store.lookup(credential)
  const requests: Array<[string, string[]]> = [['GET', ['data']], ['POST', ['data']], ['GET', ['v1', 'reports', 'x']], ['DELETE', ['admin']]]
  return record && { id: record.id, expiresAtMs: record.expiresAtMs, rules: record.policy?.rules, allows: requests.map(([method, path]) => record.policy?.allows(method, path) ?? 'all') }
}

const ALLOW_LISTS = [['GET /data'], ['GET,POST /data', 'GET /v1/reports/*'], []]

test('the fast path and the general path make the same store', () => {
  const plain = entries(500).map((entry, i) => ({
    ...entry,
    ...(i % 7 === 0 ? { expiresAt: '2099-01-02T03:04:05Z' } : {}),
    ...(i % 5 === 0 ? { allow: ALLOW_LISTS[i % 3] } : {}),
  }))
  // The same entries with an escape in each id: none of them can take the fast path.
  const text = JSON.stringify({ keys: plain }).replaceAll('"client-', '"client\\u002d')
  const fast = parseKeysFile(JSON.stringify({ keys: plain }), 'keys.json').store
  const general = parseKeysFile(text, 'keys.json').store
  for (let i = 0; i < 500; i++) assert.deepEqual(meaning(fast, `key-${i}`), meaning(general, `key-${i}`))
  assert.equal(fast.lookup('key-7')?.expiresAtMs, Date.UTC(2099, 0, 2, 3, 4, 5))
  assert.deepEqual(meaning(fast, 'key-10')?.allows, [true, true, true, false])
  assert.deepEqual(meaning(fast, 'key-15')?.allows, [true, false, false, false])
  assert.deepEqual(meaning(fast, 'key-5')?.allows, [false, false, false, false])
  assert.equal(fast.lookup('key-500'), undefined)
})

test('an allow list read on the fast path fails as on the general path, and an escape in it is decoded', () => {
  const bad = [...entries(3), { id: 'bad', sha256: sha256('b'), allow: ['GET /data', 'GET data'] }, { id: 'bad-too', sha256: sha256('c'), allow: ['GET /data', 'GET data'] }]
  assert.deepEqual(problemsOf(() => parseKeysFile(JSON.stringify({ keys: bad }), 'keys.json')), [
    'keys[3] (id "bad"): allow[1]: the path must start with "/"',
    'keys[4] (id "bad-too"): allow[1]: the path must start with "/"',
  ])
  const escaped = JSON.stringify({ keys: [{ id: 'a', sha256: sha256('a'), allow: ['GET /data'] }] }).replace('/data', '/dat\\u0061')
  assert.match(escaped, /dat\\u0061/)
  assert.deepEqual(meaning(parseKeysFile(escaped, 'keys.json').store, 'a')?.allows, [true, false, false, false])
})

test('repeated ids and keys are found among many entries, on either path, naming the later entry', () => {
  const many = entries(100_000)
  const withRepeats = [...many.slice(0, 50_000), { id: 'client-7', sha256: sha256('other') }, ...many.slice(50_000)]
  assert.deepEqual(problemsOf(() => parseKeysFile(JSON.stringify({ keys: withRepeats }), 'keys.json')), ['keys[50000] (id "client-7"): id is used by an earlier entry'])
  const sameKey = [...many, { id: 'late', sha256: sha256('key-99') }]
  assert.deepEqual(problemsOf(() => parseKeysFile(JSON.stringify({ keys: sameKey }), 'keys.json')), ['keys[100000] (id "late"): same key as entry "client-99"'])
})

test('100,000 keys take less than 100 bytes each once loaded', () => {
  const text = JSON.stringify({ keys: entries(100_000) })
  collectGarbage()
  const before = process.memoryUsage().arrayBuffers
  const { store } = parseKeysFile(text, 'keys.json')
  collectGarbage() // what building took is garbage now
  const perKey = (process.memoryUsage().arrayBuffers - before) / store.size
  // Digests (32), ids (about 13, plus 5 to find them) and the index (16, at least 6 MiB in all).
  assert.ok(perKey < 150, `${perKey.toFixed(1)} bytes per key`)
  assert.equal(store.lookup('key-99999')?.id, 'client-99999')
})

/** Loads `document` as a reload of `previous` would. */
const reload = (file: string, previous: KeyStore) => loadKeysFile(file, undefined, previous).store

test('a reload keeps unchanged entries where they are and builds only the rest', (t) => {
  const write = keysFile(t)
  const base: Array<{ id: string; sha256: string; allow?: string[] }> = entries(100_000).map((entry) => (entry.id === 'client-13' ? { ...entry, allow: ['POST /x'] } : entry))
  const first = loadKeysFile(write({ keys: base })).store
  const changed = base
    .filter((entry) => entry.id !== 'client-3')
    .map((entry) => (entry.id === 'client-7' ? { id: 'client-7', sha256: sha256('rotated') } : entry.id === 'client-9' ? { ...entry, expiresAt: '2099-01-01T00:00:00Z' } : entry.id === 'client-11' ? { ...entry, allow: ['GET /v1/reports/*'] } : entry))
  const second = reload(write({ keys: [...changed, { id: 'new', sha256: sha256('new-key') }], defaults: { allow: ['GET /data'] } }), first)
  assert.equal(second.constructor.name, 'LayeredKeyStore')
  assert.equal(second.size, 100_000)
  assert.equal(second.lookup('key-3'), undefined, 'removed')
  assert.equal(second.lookup('key-7'), undefined, 'rotated away')
  assert.equal(second.lookup('rotated')?.id, 'client-7')
  assert.equal(second.lookup('new-key')?.id, 'new')
  assert.equal(second.lookup('key-9')?.expiresAtMs, Date.UTC(2099, 0, 1))
  assert.equal(second.lookup('key-5')?.policy?.allows('GET', ['data']), true, 'kept rows take the new defaults')
  assert.equal(second.lookup('key-5')?.policy?.allows('GET', ['other']), false)
  assert.deepEqual([second.lookup('key-11')?.policy?.allows('GET', ['v1', 'reports', 'q']), second.lookup('key-11')?.policy?.allows('GET', ['data'])], [true, false], 'new rules')
  assert.deepEqual([second.lookup('key-13')?.policy?.allows('POST', ['x']), second.lookup('key-13')?.policy?.allows('GET', ['data'])], [true, false], 'kept rules')
  // A reload of a reload: the first set is still the base.
  const third = reload(write({ keys: [...changed, { id: 'newer', sha256: sha256('newer-key') }] }), second)
  assert.equal(third.lookup('new-key'), undefined)
  assert.equal(third.lookup('newer-key')?.id, 'newer')
  assert.equal(third.lookup('key-5')?.policy, undefined)
  assert.equal(third.lookup('key-3'), undefined)
})

test('a reload finds repeats across what it keeps and what it adds, as a whole load would', (t) => {
  const write = keysFile(t)
  const base: Array<{ id: string; sha256: string; allow?: string[] }> = entries(100_000).map((entry) => (entry.id === 'client-13' ? { ...entry, allow: ['POST /x'] } : entry))
  const first = loadKeysFile(write({ keys: base })).store
  for (const [keys, problem] of [
    [[...base, { id: 'client-5', sha256: sha256('another') }], 'keys[100000] (id "client-5"): id is used by an earlier entry'],
    [[...base, { id: 'copy', sha256: sha256('key-5') }], 'keys[100000] (id "copy"): same key as entry "client-5"'],
    [[{ id: 'copy', sha256: sha256('key-5') }, ...base], 'keys[6] (id "client-5"): same key as entry "copy"'],
    [[...base, base[8]], 'keys[100000] (id "client-8"): id is used by an earlier entry'],
  ] as const) {
    const file = write({ keys })
    assert.deepEqual(problemsOf(() => reload(file, first)), [problem])
    assert.deepEqual(problemsOf(() => loadKeysFile(file)), [problem], 'the same as a whole load')
  }
})

test('a reload that changes more than a quarter of the keys builds a whole new set', (t) => {
  const write = keysFile(t)
  const first = loadKeysFile(write({ keys: entries(100_000) })).store
  const next = reload(write({ keys: entries(100_000, (i) => (i % 3 === 0 ? `fresh-${i}` : `key-${i}`)) }), first)
  assert.equal(next.constructor.name, 'DigestKeyStore')
  assert.equal(next.lookup('fresh-3')?.id, 'client-3')
  assert.equal(next.lookup('key-3'), undefined)
})

test('a rate limit shared by many keys counts each key on its own', () => {
  const limit = { limit: 5, windowS: 60 }
  const { store } = parseKeysFile(JSON.stringify({ keys: [{ id: 'a', key: 'key-a-0123', rateLimit: limit }, { id: 'b', key: 'key-b-0123', rateLimit: limit }, { id: 'c', key: 'key-c-0123' }], defaults: { rateLimit: { limit: 1, windowS: 1 } } }), 'keys.json')
  assert.equal(store.lookup('key-a-0123')?.rateLimit?.stateKey, 'a\n5/60/5')
  assert.equal(store.lookup('key-b-0123')?.rateLimit?.stateKey, 'b\n5/60/5')
  assert.equal(store.lookup('key-c-0123')?.rateLimit?.stateKey, 'c\n1/1/1')
})

test('a reload of a big set: plan fields make an entry changed, earlier keys resolve, and an earlier key that is a kept key is refused', (t) => {
  const write = keysFile(t)
  const base = entries(100_000)
  const first = loadKeysFile(write({ keys: base })).store
  const withPlans = base.map((entry) =>
    entry.id === 'client-5' ? { ...entry, quota: { limit: 10, period: 'day' }, ips: ['10.0.0.0/8'] }
    : entry.id === 'client-7' ? { id: 'client-7', sha256: sha256('rotated'), previous: [{ sha256: entry.sha256, until: '2099-01-01T00:00:00Z' }] }
    : entry)
  const second = reload(write({ keys: withPlans, defaults: { quota: { limit: 5, period: 'hour' } } }), first)
  assert.equal(second.constructor.name, 'LayeredKeyStore')
  assert.deepEqual([second.lookup('key-5')?.quota?.limit, second.lookup('key-5')?.addresses?.allows('10.1.2.3')], [10, true], 'new plan fields')
  assert.equal(second.lookup('key-6')?.quota?.limit, 5, 'kept rows take the new defaults')
  assert.deepEqual([second.lookup('key-7')?.id, second.lookup('key-7')?.previous, second.lookup('key-7')?.expiresAtMs], ['client-7', true, Date.UTC(2099, 0, 1)])
  assert.equal(second.lookup('rotated')?.previous, undefined)
  const clash = [...base.filter((entry) => entry.id !== 'client-7'), { id: 'late', sha256: sha256('late-key'), previous: [{ sha256: sha256('key-9'), until: '2099-01-01T00:00:00Z' }] }]
  const file = write({ keys: clash })
  const problem = 'keys[99999] (id "late"): an earlier key (previous) is the key of entry "client-9"'
  assert.deepEqual(problemsOf(() => reload(file, first)), [problem])
  assert.deepEqual(problemsOf(() => loadKeysFile(file)), [problem], 'the same as a whole load')
})
