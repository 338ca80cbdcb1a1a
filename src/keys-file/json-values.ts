/** Builds one JSON value from a `TokenReader` (json-reader.ts), without recursion: deep nesting cannot overflow the stack. */
import { CLOSE_ARRAY, CLOSE_OBJECT, OPEN_ARRAY, OPEN_OBJECT, QUOTE } from './json-bytes.js'

/** What the builder needs of the reader (json-reader.ts), which drives it: tokens, one at a time. */
export interface TokenReader {
  peek(): number
  advance(): void
  skipSpace(): void
  fail(message: string): never
  string(): string
  scalar(): number | boolean | null
  fieldName(seen: string[] | Set<string>): string
  afterMember(close: number): boolean
}

// Past this many fields an object's names go into a Set instead of an array searched in order.
const SMALL_OBJECT = 16

interface Frame {
  container: Record<string, unknown> | unknown[]
  /** Objects: the field names so far, and the one whose value is being read. */
  seen?: string[] | Set<string>
  name?: string
}

export class ValueBuilder {
  private readonly stack: Frame[] = []

  constructor(private readonly reader: TokenReader) {}

  build(): unknown {
    for (;;) {
      const value = this.open()
      if (value === OPENED) continue
      const done = this.deliver(value)
      if (done !== OPENED) return done
    }
  }

  /** Reads a scalar or string, or opens a container (OPENED; an empty one is returned whole). */
  private open(): unknown {
    const reader = this.reader
    reader.skipSpace()
    const c = reader.peek()
    if (c === -1) reader.fail('the text ends where a value should be')
    if (c === QUOTE) return reader.string()
    if (c !== OPEN_OBJECT && c !== OPEN_ARRAY) return reader.scalar()
    reader.advance()
    reader.skipSpace()
    const object = c === OPEN_OBJECT
    if (reader.peek() === (object ? CLOSE_OBJECT : CLOSE_ARRAY)) {
      reader.advance()
      return object ? {} : []
    }
    const frame: Frame = object ? { container: {}, seen: [] } : { container: [] }
    if (object) frame.name = reader.fieldName(frame.seen as string[])
    this.stack.push(frame)
    return OPENED
  }

  /**
   * Puts `value` into the innermost container; closes every container that ends with it. Returns
   * the finished top value, or OPENED when another member is to be read.
   */
  private deliver(value: unknown): unknown {
    for (;;) {
      const top = this.stack[this.stack.length - 1]
      if (top === undefined) return value
      if (Array.isArray(top.container)) top.container.push(value)
      else setField(top.container, top.name as string, value)
      if (!this.reader.afterMember(Array.isArray(top.container) ? CLOSE_ARRAY : CLOSE_OBJECT)) {
        if (top.seen !== undefined) {
          if (Array.isArray(top.seen) && top.seen.length >= SMALL_OBJECT) top.seen = new Set(top.seen)
          top.name = this.reader.fieldName(top.seen)
        }
        return OPENED
      }
      this.stack.pop()
      value = top.container
    }
  }
}

const OPENED = Symbol('opened')

/** As `JSON.parse` does: `__proto__` becomes an own field, not the object's prototype. */
function setField(object: Record<string, unknown>, name: string, value: unknown): void {
  if (name === '__proto__') Object.defineProperty(object, name, { value, enumerable: true, writable: true, configurable: true })
  else object[name] = value
}
