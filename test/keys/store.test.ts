import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test } from 'node:test'
import { isValidKey } from '../../dist/keys/entry-check.js'
import { createKeyStore } from '../../dist/index.js'

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')

test('finds a plain-text key and a sha256 entry by their key', () => {
  const store = createKeyStore([
    { id: 'plain', key: 'plain-key-value' },
    { id: 'hashed', sha256: sha256('hashed-key-value') },
  ])
  assert.equal(store.size, 2)
  assert.equal(store.lookup('plain-key-value')?.id, 'plain')
  assert.equal(store.lookup('hashed-key-value')?.id, 'hashed')
  assert.equal(store.lookup(sha256('hashed-key-value')), undefined, 'the digest itself is not a key')
})

for (const [name, presented] of [
  ['an empty string', ''],
  ['a prefix of the key', 'plain-key-valu'],
  ['the key plus one character', 'plain-key-valuee'],
  ['the key in another case', 'PLAIN-KEY-VALUE'],
  ['100 KB', 'x'.repeat(100_000)],
  ['4097 characters', 'a'.repeat(4097)],
  ['non-ASCII text', 'plain-key-välue'],
  ['a lone surrogate', '\ud800'],
  ['control characters', 'plain-key-value\n'],
] as const) {
  test(`lookup of ${name} finds nothing and does not throw`, () => {
    const store = createKeyStore([{ id: 'plain', key: 'plain-key-value' }])
    assert.equal(store.lookup(presented), undefined)
  })
}

test('lookup of a non-string finds nothing and does not throw', () => {
  const store = createKeyStore([{ id: 'plain', key: 'plain-key-value' }])
  assert.equal(store.lookup(undefined as unknown as string), undefined)
  assert.equal(store.lookup(42 as unknown as string), undefined)
})

test('a 4096-character key is accepted and found', () => {
  const long = 'k'.repeat(4096)
  assert.equal(createKeyStore([{ id: 'long', key: long }]).lookup(long)?.id, 'long')
})

test('records carry the expiry in milliseconds, Infinity when none', () => {
  const store = createKeyStore([
    { id: 'dated', key: 'dated-key', expiresAt: '2027-06-30T00:00:00Z' },
    { id: 'forever', key: 'forever-key' },
    { id: 'date-object', key: 'date-key', expiresAt: new Date(Date.UTC(2030, 0, 1)) },
  ])
  assert.equal(store.lookup('dated-key')?.expiresAtMs, Date.UTC(2027, 5, 30))
  assert.equal(store.lookup('forever-key')?.expiresAtMs, Infinity)
  assert.equal(store.lookup('date-key')?.expiresAtMs, Date.UTC(2030, 0, 1))
})

test('lookup works the same with 100,000 keys loaded', () => {
  const entries = Array.from({ length: 100_000 }, (_, i) => ({ id: `k${i}`, key: `key-number-${i}` }))
  const store = createKeyStore(entries)
  assert.equal(store.size, 100_000)
  assert.equal(store.lookup('key-number-0')?.id, 'k0')
  assert.equal(store.lookup('key-number-99999')?.id, 'k99999')
  assert.equal(store.lookup('key-number-100000'), undefined)
})

for (const [name, entries, message] of [
  ['a missing id', [{ key: 'abc' }], /keys\[0\]: id must be/],
  ['an id with spaces', [{ id: 'a b', key: 'abc' }], /keys\[0\]: id must be/],
  ['both key and sha256', [{ id: 'a', key: 'abc', sha256: sha256('abc') }], /keys\[0\] \(id "a"\): needs exactly one/],
  ['neither key nor sha256', [{ id: 'a' }], /keys\[0\] \(id "a"\): needs exactly one/],
  ['uppercase hex', [{ id: 'a', sha256: sha256('abc').toUpperCase() }], /sha256 must be 64 lowercase hex/],
  ['short hex', [{ id: 'a', sha256: 'abcd' }], /sha256 must be 64 lowercase hex/],
  ['a key with a space', [{ id: 'a', key: 'has space' }], /key must be 1 to 4096 visible ASCII/],
  ['an empty key', [{ id: 'a', key: '' }], /key must be 1 to 4096 visible ASCII/],
  ['a duplicate id', [{ id: 'a', key: 'abc' }, { id: 'a', key: 'def' }], /keys\[1\] \(id "a"\): id is used by an earlier entry/],
  ['the same key twice', [{ id: 'a', key: 'abc' }, { id: 'b', sha256: sha256('abc') }], /keys\[1\] \(id "b"\): same key as entry "a"/],
  ['an expiry that is no date', [{ id: 'a', key: 'abc', expiresAt: 'next tuesday' }], /expiresAt must be an ISO-8601 date/],
  ['an expiry on a day that does not exist', [{ id: 'a', key: 'abc', expiresAt: '2027-02-31T00:00:00Z' }], /expiresAt must be an ISO-8601 date/],
  ['an expiry at hour 24', [{ id: 'a', key: 'abc', expiresAt: '2027-02-01T24:00:00Z' }], /expiresAt must be an ISO-8601 date/],
  ['an expiry on February 29 of a common year', [{ id: 'a', key: 'abc', expiresAt: '2027-02-29' }], /expiresAt must be an ISO-8601 date/],
  ['an expiry without a time zone', [{ id: 'a', key: 'abc', expiresAt: '2027-06-30T00:00:00' }], /expiresAt must be an ISO-8601/],
] as const) {
  test(`createKeyStore rejects ${name}, naming the entry`, () => {
    assert.throws(() => createKeyStore(entries as never), { name: 'TypeError', message: message })
  })
}

test('error messages never contain the key', () => {
  try {
    createKeyStore([{ id: 'a', key: 'secret with space' }])
    assert.fail('expected a TypeError')
  } catch (error) {
    assert.ok(error instanceof TypeError)
    assert.doesNotMatch(error.message, /secret/)
  }
})

test('isValidKey accepts visible ASCII only, 1 to 4096 characters', () => {
  assert.equal(isValidKey('!~azAZ09'), true)
  assert.equal(isValidKey(''), false)
  assert.equal(isValidKey('a b'), false)
  assert.equal(isValidKey('a\tb'), false)
  assert.equal(isValidKey('ü'), false)
  assert.equal(isValidKey('a'.repeat(4097)), false)
})
