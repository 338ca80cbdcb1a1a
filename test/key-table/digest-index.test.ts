import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { createDigestIndex } from '../../dist/key-table/digest-index.js'

const randomDigest = () => randomBytes(32).toString('latin1')

test('finds every digest it holds, at its position, and nothing else', () => {
  const digests = Array.from({ length: 1000 }, randomDigest)
  const index = createDigestIndex(digests)
  digests.forEach((digest, position) => assert.equal(index.find(digest), position))
  for (let i = 0; i < 1000; i++) assert.equal(index.find(randomDigest()), -1)
})

test('an empty index finds nothing', () => {
  assert.equal(createDigestIndex([]).find(randomDigest()), -1)
})

/** Indexes `count` random digests; every `step`-th and the last are found where they are, random ones nowhere. */
function assertFindsSample(count: number, step: number): string[] {
  const digests = Array.from({ length: count }, randomDigest)
  const index = createDigestIndex(digests)
  for (let position = 0; position < digests.length; position += step) assert.equal(index.find(digests[position] as string), position)
  assert.equal(index.find(digests.at(-1) as string), digests.length - 1)
  for (let i = 0; i < 1000; i++) assert.equal(index.find(randomDigest()), -1)
  return digests
}

test('grows past its minimum size and still finds everything (200,000 digests)', () => {
  assertFindsSample(200_000, 997)
})

test('past 8 MiB of table the digests are placed in bucket order, and still all found (600,000 digests)', () => {
  const digests = assertFindsSample(600_000, 499)
  assert.throws(() => createDigestIndex([...digests.slice(0, 300_000), digests[123_456] as string, ...digests.slice(300_000)]), /digest .* repeats digest/)
})

test('a digest that differs in one byte is not found', () => {
  const digest = randomDigest()
  const index = createDigestIndex([digest])
  const last = digest.charCodeAt(31)
  assert.equal(index.find(digest.slice(0, 31) + String.fromCharCode(last ^ 1)), -1)
  assert.equal(index.find(String.fromCharCode(digest.charCodeAt(0) ^ 1) + digest.slice(1)), -1)
})

test('zero bytes are nothing special: an all-zero digest or tag is found only when held', () => {
  const zeros = '\0'.repeat(32)
  const zeroTag = randomDigest().slice(0, 8) + '\0\0\0\0' + randomDigest().slice(12)
  const other = randomDigest()
  // Rows and slots no digest is in are zero: they must never pass for an all-zero digest.
  assert.equal(createDigestIndex([other]).find(zeros), -1)
  assert.equal(createDigestIndex([other]).find(zeroTag), -1)
  const index = createDigestIndex([other, zeros, zeroTag])
  assert.deepEqual([index.find(other), index.find(zeros), index.find(zeroTag)], [0, 1, 2])
})

test('findWords (a reload asks it for the file\'s own entries) finds what find finds, and only that', () => {
  const asWords = (digest: string) => {
    const bytes = Buffer.from(digest, 'latin1')
    return Int32Array.from({ length: 8 }, (_, w) => bytes.readInt32LE(w * 4))
  }
  const digests = Array.from({ length: 200_000 }, randomDigest)
  const index = createDigestIndex(digests)
  for (let position = 0; position < digests.length; position += 991) assert.equal(index.findWords(asWords(digests[position] as string)), position)
  const wrongLastByte = (digests[7] as string).slice(0, 31) + String.fromCharCode((digests[7] as string).charCodeAt(31) ^ 1)
  assert.equal(index.findWords(asWords(wrongLastByte)), -1)
  assert.equal(index.findWords(new Int32Array(8)), -1) // empty slots are zero: no match for an all-zero digest
  for (let i = 0; i < 1000; i++) assert.equal(index.findWords(asWords(randomDigest())), -1)
})
