/** The checks of one key entry, field by field, and their byte-level twins of the fast path. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { digestOfEntry, FLAT_NAMES, idOf, isIdBytes, isName, isRealDate, parseExpiry, policyOf, rateLimitOf, type KeyEntry } from '../../dist/keys/entry-check.js'

const HEX = 'ab'.repeat(32)
const refuses = (run: () => unknown, message: RegExp) => assert.throws(run, (error: unknown) => error instanceof TypeError && message.test(error.message))

test('an entry must be an object with a valid id', () => {
  for (const bad of [null, 'x', 5]) refuses(() => idOf(bad as never, 0), /^keys\[0\]: must be an object$/)
  refuses(() => idOf({ id: 7 } as never, 3), /^keys\[3\]: id must be 1 to 128 characters/)
  assert.equal(idOf({ id: 'a.b_c:d@e-f', key: 'k' }, 0), 'a.b_c:d@e-f')
})

test('a key must be a string of visible ASCII; a digest exactly 64 lowercase hex characters, as a string', () => {
  refuses(() => digestOfEntry({ id: 'a', key: 12345 } as never, 0), /^keys\[0\] \(id "a"\): key must be 1 to 4096 visible ASCII/)
  for (const sha256 of [`${HEX}a`, `x${HEX}`, HEX.slice(1), HEX.toUpperCase(), [HEX]]) {
    refuses(() => digestOfEntry({ id: 'a', sha256 } as never, 0), /sha256 must be 64 lowercase hex characters$/)
  }
  assert.equal(digestOfEntry({ id: 'a', sha256: HEX }, 0), Buffer.from(HEX, 'hex').toString('latin1'))
  refuses(() => digestOfEntry({ id: 'a', key: 'k', sha256: HEX } as never, 0), /needs exactly one of "key" or "sha256"/)
})

for (const [value, ok] of [
  ['2027-06-30', true],
  ['2027-06-30T12:30Z', true],
  ['2027-06-30T12:30', false], // a time needs its zone
  ['2027-06-30T00:00:00Z', true],
  ['2027-06-30T00:00:00.123Z', true],
  ['2027-06-30T00:00:00.123456789Z', true],
  ['2027-06-30T00:00:00+02:00', true],
  ['2027-06-30T00:00:00-23:59', true],
  ['2027-06-30T00:00:00+24:00', false],
  ['2027-06-30T00:00:00+02:60', false],
  ['2027-06-30T00:00:00.1234567890Z', false],
  ['2027-06-30T24:00:00Z', false],
  ['x2027-06-30', false],
  ['2027-06-30x', false],
  ['2027-02-29', false], // not a leap year: Date.parse would roll it into March
  ['2028-02-29', true],
  ['2027-13-01', false],
  ['2027-00-10', false],
  ['2027-04-31', false],
] as const) {
  test(`expiresAt ${JSON.stringify(value)} is ${ok ? 'accepted' : 'refused'}`, () => {
    assert.equal(isRealDate(value), ok)
    if (ok) assert.equal(parseExpiry(value, 0, 'a'), Date.parse(value))
    else refuses(() => parseExpiry(value, 0, 'a'), /^keys\[0\] \(id "a"\): expiresAt must be an ISO-8601 date/)
  })
}

test('expiresAt: absent is never, a Date is taken as is, anything else is refused', () => {
  assert.equal(parseExpiry(undefined, 0, 'a'), Infinity)
  assert.equal(parseExpiry(new Date(5), 0, 'a'), 5)
  refuses(() => parseExpiry(['2027-06-30'] as never, 0, 'a'), /expiresAt must be an ISO-8601 date/)
})

test('policy and rate limit: absent (or a null limit) is none; a bad one names the entry', () => {
  assert.equal(policyOf(undefined, 0, 'a'), undefined)
  assert.equal(rateLimitOf(undefined, 0, 'a'), undefined)
  assert.equal(rateLimitOf(null, 0, 'a'), undefined)
  assert.equal(policyOf(['GET /x'], 0, 'a')?.allows('GET', ['x']), true)
  refuses(() => policyOf(['get /x'], 2, 'b'), /^keys\[2\] \(id "b"\): allow\[0\]: methods must be/)
  refuses(() => rateLimitOf({ limit: 0, windowS: 1 }, 2, 'b'), /^keys\[2\] \(id "b"\): rateLimit\.limit must be a positive integer/)
  // Compiled for any id: the key's id is put in front of this state key at lookup (rateLimitFor).
  assert.equal(rateLimitOf({ limit: 5, windowS: 60, burst: 7 }, 0, 'a')?.stateKey, '\n5/60/7')
})

test('the fast path\'s byte checks: field names and ids', () => {
  assert.deepEqual(Object.values(FLAT_NAMES).map(String), ['id', 'sha256', 'expiresAt', 'allow'])
  const bytes = Buffer.from('"id""ix""sha256""expiresAt""allow"')
  assert.equal(isName(bytes, 1, FLAT_NAMES.id), true)
  assert.equal(isName(bytes, 5, FLAT_NAMES.id), false)
  assert.equal(isName(bytes, 9, FLAT_NAMES.sha256), true)
  assert.equal(isName(bytes, 17, FLAT_NAMES.expiresAt), true)
  assert.equal(isName(bytes, 28, FLAT_NAMES.allow), true)
  const id = (text: string) => isIdBytes(Buffer.from(`"${text}"`, 'latin1'), 1, text.length + 1)
  assert.equal(id(''), false)
  assert.equal(id('a'.repeat(128)), true)
  assert.equal(id('a'.repeat(129)), false)
  assert.equal(id('a b'), false)
  assert.equal(id('ABCXYZabcxyz0189._:@-'), true)
  for (const c of '/\\"%é,;') assert.equal(id(`a${c}`), false, c)
})

test('every check agrees with its byte-level twin on the ids a keys file may hold', () => {
  for (const text of ['a', 'svc-1', 'x'.repeat(128), 'x'.repeat(129), 'a b', 'a/b', 'é']) {
    const entry = { id: text, key: 'k' } as KeyEntry
    let general = true
    try {
      idOf(entry, 0)
    } catch {
      general = false
    }
    assert.equal(isIdBytes(Buffer.from(text, 'latin1'), 0, Buffer.byteLength(text, 'latin1')), general, text)
  }
})
