/**
 * A strict JSON checker for files people edit by hand: it finds the first syntax error with its
 * offset and a description that never quotes the text (a keys file may hold secrets), and refuses
 * an object with a field given twice (`JSON.parse` silently keeps the last). Builds no values;
 * iterative, so deep nesting cannot overflow the stack. Pure.
 */

export interface JsonProblem {
  /** Index in the text where the problem is. */
  offset: number
  message: string
  /** For a duplicate field: its name, for the caller to quote or not. */
  duplicate?: string
}

const enum Expect {
  Value,
  Field,
  Next,
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
// Past this many fields an object's names go into a Set instead of an array searched in order.
const SMALL_OBJECT = 16

interface Frame {
  object: boolean
  fields: string[] | Set<string> | undefined
}

/** The first problem of `text` as JSON, or `undefined` when `JSON.parse` will accept it and no field repeats. */
export function checkJson(text: string): JsonProblem | undefined {
  const stack: Frame[] = []
  let expect = Expect.Value
  let i = 0
  for (;;) {
    i = skipSpace(text, i)
    const c = text.charCodeAt(i)
    const top = stack[stack.length - 1]
    if (expect === Expect.Value) {
      if (i >= text.length) return { offset: i, message: 'the text ends where a value should be' }
      if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
        const object = c === OPEN_OBJECT
        stack.push({ object, fields: object ? [] : undefined })
        i = skipSpace(text, i + 1)
        if (text.charCodeAt(i) === (object ? CLOSE_OBJECT : CLOSE_ARRAY)) {
          stack.pop()
          i++
          expect = Expect.Next
        } else expect = object ? Expect.Field : Expect.Value
        continue
      }
      const end = c === QUOTE ? stringEnd(text, i) : scalarEnd(text, i)
      if (end < 0) return { offset: i, message: c === QUOTE ? BAD_STRING : 'expected a value (object, array, string, number, true, false or null)' }
      i = end
      expect = Expect.Next
    } else if (expect === Expect.Field) {
      if (c !== QUOTE) return { offset: i, message: i >= text.length ? 'the text ends inside an object' : 'expected a field name in double quotes' }
      const end = stringEnd(text, i)
      if (end < 0) return { offset: i, message: BAD_STRING }
      const name = fieldName(text, i, end)
      if (!addField(top as Frame, name)) return { offset: i, message: 'a field given twice in one object', duplicate: name }
      i = skipSpace(text, end)
      if (text.charCodeAt(i) !== COLON) return { offset: i, message: 'expected ":" after the field name' }
      i++
      expect = Expect.Value
    } else {
      if (top === undefined) return i < text.length ? { offset: i, message: 'more text after the end of the JSON document' } : undefined
      const close = top.object ? CLOSE_OBJECT : CLOSE_ARRAY
      if (c === close) {
        stack.pop()
        i++
      } else if (c === COMMA) {
        const comma = i
        i = skipSpace(text, i + 1)
        if (text.charCodeAt(i) === close) return { offset: comma, message: `a trailing comma before "${top.object ? '}' : ']'}"` }
        expect = top.object ? Expect.Field : Expect.Value
      } else {
        if (i >= text.length) return { offset: i, message: `the text ends inside an ${top.object ? 'object' : 'array'}` }
        return { offset: i, message: `expected "," or "${top.object ? '}' : ']'}"` }
      }
    }
  }
}

const BAD_STRING = 'a string with a control character, an escape JSON does not have, or no closing quote'

/** Line and column (both from 1) of `offset`, for messages. */
export function lineAndColumnOf(text: string, offset: number): { line: number; column: number } {
  let line = 1
  let lineStart = 0
  for (let at = text.indexOf('\n'); at !== -1 && at < offset; at = text.indexOf('\n', at + 1)) {
    line++
    lineStart = at + 1
  }
  return { line, column: offset - lineStart + 1 }
}

function skipSpace(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i)
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i
    i++
  }
}

/** The index after the string starting at `start` (a quote), or -1 when it is not a valid JSON string. */
function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) return i + 1
    if (c < 0x20) return -1
    if (c !== BACKSLASH) continue
    const next = text.charCodeAt(++i)
    if (next === 0x75 /* u */) {
      if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) return -1
      i += 4
    } else if ('"\\/bfnrt'.indexOf(text[i] ?? '') === -1) return -1
  }
  return -1
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const LITERAL = /true|false|null/y

/** The index after the number or literal at `start`, or -1. */
function scalarEnd(text: string, start: number): number {
  for (const pattern of [NUMBER, LITERAL]) {
    pattern.lastIndex = start
    if (pattern.test(text)) return pattern.lastIndex
  }
  return -1
}

function fieldName(text: string, start: number, end: number): string {
  const raw = text.slice(start + 1, end - 1)
  return raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw
}

/** Records `name` in the object's fields; false when it was there already. */
function addField(frame: Frame, name: string): boolean {
  const fields = frame.fields as string[] | Set<string>
  if (fields instanceof Set) {
    if (fields.has(name)) return false
    fields.add(name)
    return true
  }
  if (fields.includes(name)) return false
  fields.push(name)
  if (fields.length > SMALL_OBJECT) frame.fields = new Set(fields)
  return true
}
