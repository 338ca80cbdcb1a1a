/**
 * The keys file's fast path at the level of bytes: FlatObject.scan and plainStrings, directly.
 * Through the reader their failures are invisible (the general path takes over and gives the same
 * result, only slower), so each is checked here field by field against what JSON.parse makes.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isArrayValue, plainStrings } from '../../dist/key-table/flat-entry.js'
import { FlatObject } from '../../dist/keys-file/json-bytes.js'

// The object is scanned where it lies in the file, after the entry before it: offsets are the
// file's, and a scan that stops short of the object must not find the brace of that entry.
const BEFORE = ' },'

/** What scan found, as text: the end offset, each field as [name, raw value], the newlines seen. */
function scan(text: string, end = text.length) {
  const buf = Buffer.from(BEFORE + text, 'latin1')
  const flat = new FlatObject()
  const found = flat.scan(buf, BEFORE.length, BEFORE.length + end)
  if (found === -1) return -1
  const after = found - BEFORE.length
  const fields: Array<[string, string]> = []
  for (let m = 0; m < flat.count * 4; m += 4) {
    const value = buf.toString('latin1', flat.members[m + 2], flat.members[m + 3])
    fields.push([buf.toString('latin1', flat.members[m], flat.members[m + 1]), isArrayValue(buf, flat.members, m) ? `array ${value}` : value])
  }
  return { after, fields, newlines: flat.newlines, lastNewline: flat.newlines === 0 ? -1 : flat.lastNewline - BEFORE.length }
}

for (const [text, fields] of [
  ['{"id":"a","sha256":"b"}', [['id', 'a'], ['sha256', 'b']]],
  ['{ "a" : "b" }', [['a', 'b']]],
  ['{\t"a"\r\n:\t"b" ,"c":"d"}', [['a', 'b'], ['c', 'd']]],
  ['{"allow":[]}', [['allow', 'array []']]],
  ['{"allow":[ "a" , "b" ]}', [['allow', 'array [ "a" , "b" ]']]],
  ['{"id":"a","allow":["GET /x","POST /y/*"],"expiresAt":"2030"}', [['id', 'a'], ['allow', 'array ["GET /x","POST /y/*"]'], ['expiresAt', '2030']]],
  ['{"ab":"1","ac":"2"}', [['ab', '1'], ['ac', '2']]], // same length, different names
  ['{"ab":"1","a":"2"}', [['ab', '1'], ['a', '2']]], // one name the start of another
  ['{"a":"1","ab":"2"}', [['a', '1'], ['ab', '2']]],
  ['{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6","g":"7","h":"8"}', ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((name, i) => [name, String(i + 1)])],
] as const) {
  test(`FlatObject.scan reads ${JSON.stringify(text)} as JSON.parse does`, () => {
    const found = scan(text)
    assert.notEqual(found, -1)
    if (found === -1) return
    assert.equal(found.after, text.length, 'the offset just past the object')
    assert.deepEqual(found.fields, fields)
    assert.deepEqual(Object.keys(JSON.parse(text)), fields.map(([name]) => name))
  })
}

for (const [name, text] of [
  ['an empty object (no entry of the keys file is one)', '{}'],
  ['a number value', '{"id":1}'],
  ['a nested object', '{"rateLimit":{"limit":1}}'],
  ['an array of anything but strings', '{"allow":["a",1]}'],
  ['an array with a trailing comma', '{"allow":["x",]}'],
  ['a field given twice', '{"id":"a","id":"b"}'],
  ['a trailing comma', '{"id":"a",}'],
  ['no colon', '{"id" "a"}'],
  ['a name that is not a string', '{id:"a"}'],
  ['nine fields', `{${Array.from({ length: 9 }, (_, i) => `"f${i}":"v"`).join(',')}}`],
  ['two values without a comma', '{"a":"b" "c":"d"}'],
  ['an unclosed array', '{"allow":["a"'],
  ['an array closed by a brace', '{"allow":["a"}'],
  // One byte off the grammar where each check is: read without that check, each would pass.
  ['a name without its opening quote', '{x":"a"}'],
  ['another byte in place of the colon', '{"id"x"a"}'],
  ['a value that is neither a string nor an array', '{"id":x"}'],
  ['a value that is neither, before an array\'s end', '{"id":x"a"]}'],
  ['another byte in place of the comma', '{"a":"b";"c":"d"}'],
  ['an array holding something before a quote', '{"allow":["a",x"]}'],
  ['another byte in place of a comma in an array', '{"allow":["a";"b"]}'],
] as const) {
  test(`FlatObject.scan gives up on ${name}: the general path reads it`, () => {
    assert.equal(scan(text), -1)
  })
}

for (const text of ['{"id":"a","allow":["x","y"],"sha256":"b"}', '{ "id" : "a" ,\n "allow" : [ ] , "scopes" : [ "x" , "y" ]\t}']) {
  test(`FlatObject.scan gives up at the end of its window, wherever ${JSON.stringify(text)} is cut`, () => {
    // The bytes past the window are the rest of the object: a scan reading them would succeed.
    for (let end = 1; end < text.length; end++) assert.equal(scan(text, end), -1, `window ending at ${end}`)
    assert.notEqual(scan(text, text.length), -1)
  })
}

test('FlatObject.scan counts the newlines in white space and the offset of the last (for line numbers)', () => {
  const text = '{\n  "id": "a",\n  "sha256": "b"\n}'
  const found = scan(text)
  assert.notEqual(found, -1)
  if (found === -1) return
  assert.equal(found.newlines, 3)
  assert.equal(found.lastNewline, text.lastIndexOf('\n'))
  const flat = scan('{"id":"a"}')
  assert.equal(flat !== -1 && flat.newlines, 0, 'a new scan starts counting again')
})

for (const [text, expected] of [
  ['[]', []],
  ['["GET /x","POST /y/*"]', ['GET /x', 'POST /y/*']],
  ['[ "a" , "b" ]', ['a', 'b']],
  ['["~ !"]', ['~ !']], // the printable edges
  ['["a\\\\b"]', undefined], // an escape: the general path decodes it
  ['["a\u0001"]', undefined],
  ['["a\u001f"]', undefined],
  ['["a\u007f"]', undefined],
  ['["caf\u00e9"]', undefined],
] as const) {
  test(`plainStrings(${JSON.stringify(text)}) is ${JSON.stringify(expected)}`, () => {
    // As in the keys file, bytes follow the array; plainStrings stops at its `]`.
    assert.deepEqual(plainStrings(Buffer.from(`${text},"x":"y"}`, 'latin1'), 0), expected)
  })
}
