import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isArrayValue } from '../../dist/key-table/flat-entry.js'
import { bytesSource, JsonSyntaxError, type ByteSource } from '../../dist/keys-file/byte-window.js'
import { readDocument } from '../../dist/keys-file/json-reader.js'

/** A source that hands over one byte per read: every token then crosses a window boundary. */
const oneByteAtATime = (bytes: Buffer): ByteSource => {
  let offset = 0
  return (into, at) => {
    if (offset >= bytes.length) return 0
    into[at] = bytes[offset++] as number
    return 1
  }
}

/** The document as the reader hands it over, put back together. */
function read(text: string, source: (bytes: Buffer) => ByteSource, flat = false): unknown {
  const out: Record<string, unknown> = {}
  const entries: unknown[] = []
  let whole: unknown
  readDocument(source(Buffer.from(text)), {
    onNotObject: (value) => (whole = value),
    onField: (name, value) => (out[name] = value),
    onEntry: (value) => entries.push(value),
    onFlatEntry: flat
      ? (bytes, members, count) => {
          // As the contract of onFlatEntry asks: accept only what has been checked byte by byte.
          for (let m = 0; m < count * 4; m += 2) {
            for (let i = members[m] as number; i < (members[m + 1] as number); i++) if ((bytes[i] as number) < 0x20 || bytes[i] === 0x5c || (bytes[i] as number) > 0x7e) return false
          }
          const entry: Record<string, unknown> = {}
          for (let m = 0; m < count * 4; m += 4) {
            const value = bytes.toString('latin1', members[m + 2], members[m + 3])
            entry[bytes.toString('latin1', members[m], members[m + 1])] = isArrayValue(bytes, members, m) ? JSON.parse(value) : value
          }
          entries.push(entry)
          return true
        }
      : undefined,
    onKeysEnd: () => (out.keys = entries),
  })
  return whole ?? out
}

const DOCUMENTS = [
  '{"keys":[{"id":"a","sha256":"x","n":[1,2.5e3,-0,true,false,null,{"q":"\\u00e9\\n\\"x"}]}],"defaults":{"allow":["GET /x"]}}',
  '  {"keys": [] , "public": ["é", "\\ud83d\\ude00"]}\n',
  '{}',
  '[1,2]',
  '"text"',
  '{"a":{"b":{"c":[[[]],{}]}}}',
  '{"keys":[{"__proto__":1}]}',
  '{\n  "keys": [\n    {\n      "id": "a",\n      "sha256": "b"\n    },\n    {"id": "c", "expiresAt": "d"}\n  ]\n}',
  // Arrays of strings are flat too; an array of anything else is not.
  '{"keys":[{"id":"a","allow":["GET /x","POST /y/*"]},{"allow":[],"id":"b"},{"id":"c","allow":[ "[" , "]" ]},{"id":"d","allow":["x",1]},{"id":"e","allow":[["x"]]}]}',
  '{"keys":[\n  {"id": "a", "allow": [\n    "GET /x",\n    "GET /y"\n  ], "sha256": "b"}\n]}',
]

test('builds what JSON.parse builds, whatever the window boundaries', () => {
  for (const text of DOCUMENTS) {
    for (const source of [bytesSource, oneByteAtATime]) {
      for (const flat of [false, true]) assert.deepEqual(read(text, source, flat), JSON.parse(text), `${text} (flat: ${flat})`)
    }
  }
})

test('__proto__ becomes a field, as JSON.parse makes it, not the prototype', () => {
  const document = read('{"keys":[{"__proto__":{"polluted":true}}]}', bytesSource) as { keys: Array<Record<string, unknown>> }
  const entry = document.keys[0] as Record<string, unknown>
  assert.deepEqual(Object.keys(entry), ['__proto__'])
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
})

test('a string longer than the reading window is read whole', () => {
  const long = 'k'.repeat(3 << 20)
  assert.deepEqual(read(JSON.stringify({ keys: [{ id: 'a', key: long }] }), bytesSource), { keys: [{ id: 'a', key: long }] })
})

test('a long number reads the same wherever the reading window ends (its position never changes the verdict)', () => {
  const long = `1${'0'.repeat(600)}.5e-600`
  for (const shift of [0, 100, 300, 450, 599, 700, 1000]) {
    // Padding puts the number's start `shift` bytes before the end of the first 1 MiB window.
    const head = '{"keys":[],"pad":"'
    const pad = 'p'.repeat((1 << 20) - shift - head.length - '","n":'.length)
    const text = `${head}${pad}","n":${long}}`
    assert.equal(text.indexOf(long), (1 << 20) - shift)
    assert.deepEqual(read(text, bytesSource), JSON.parse(text), `number starting ${shift} bytes before the window's end`)
  }
})

const FAULTS: Array<[string, number, number, RegExp]> = [
  ['{"keys": [\n  {"id": "a", "key": "kg_secretvalue"},\n]}', 2, 39, /trailing comma before "\]"/],
  ['{"keys": [\n  {"id": "a" "key": "kg_secretvalue"}\n]}', 2, 14, /expected "," or "}"/],
  ['{"keys": [\n  {"id": "a", "key": kg_secretvalue}\n]}', 2, 22, /expected a value/],
  ['{"keys": [', 1, 11, /ends where a value should be/],
  ['{"keys": []} extra', 1, 14, /more text after the end/],
  ['{"keys":[{"x":"\\q"}]}', 1, 15, /control character, an escape/],
  ['{"keys":["a\u0001b"]}', 1, 10, /control character/],
  ['{"keys":[01]}', 1, 11, /expected "," or "\]"/],
  ['{"keys":[1.]}', 1, 10, /expected a value/],
  ['{"k":"\\u12"}', 1, 6, /control character, an escape/],
  ['', 1, 1, /ends where a value should be/],
  ['{"keys":[{"id":"a",\n"id":"b"}]}', 2, 1, /a field given twice/],
  // Lines inside entries read on the fast path count too.
  ['{"keys":[\n {"id": "a",\n  "sha256": "b"},\n x]}', 4, 2, /expected a value/],
  ['{"keys":[\n {"id": "a", "allow": [\n  "GET /x"\n ]},\n x]}', 5, 2, /expected a value/],
  ['{"keys":[{"id":"a","allow":["x",]}]}', 1, 32, /trailing comma before "\]"/],
]

test('a fault is a JsonSyntaxError with its line and column, the same at any window boundary', () => {
  for (const [text, line, column, message] of FAULTS) {
    for (const source of [bytesSource, oneByteAtATime]) {
      for (const flat of [false, true]) {
        assert.throws(() => read(text, source, flat), (error: unknown) => error instanceof JsonSyntaxError && error.line === line && error.column === column && message.test(error.message), `${JSON.stringify(text)} (flat: ${flat})`)
      }
    }
  }
})

test('deep nesting is a syntax error or a value, never a stack overflow', () => {
  assert.throws(() => read('['.repeat(200_000), bytesSource), JsonSyntaxError)
  const deep = `{"keys":[${'['.repeat(100_000)}${']'.repeat(100_000)}]}`
  assert.equal((read(deep, bytesSource) as { keys: unknown[] }).keys.length, 1)
})

test('a repeated field names itself for the caller to quote or not', () => {
  assert.throws(() => read('{"keys":[{"id":"a","id":"b"}]}', bytesSource, true), (error: unknown) => error instanceof JsonSyntaxError && error.duplicate === 'id')
})
