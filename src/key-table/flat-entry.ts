/**
 * A flat entry as the keys file's fast scan hands it over (keys-file/json-bytes.ts, FlatObject):
 * per field, the byte offsets of its name and value. What the builder needs to read such a value.
 */
const QUOTE = 0x22
const BACKSLASH = 0x5c
const CLOSE_ARRAY = 0x5d

/** Whether member `m`'s value (see FlatObject) is an array: a string's range starts after its quote. */
export function isArrayValue(buf: Buffer, members: Int32Array, m: number): boolean {
  return buf[(members[m + 2] as number) - 1] !== QUOTE
}

/**
 * The strings of an array value that FlatObject scanned (from its `[`), or undefined when one holds
 * a byte outside printable ASCII or an escape: the general path reads those. Outside its strings,
 * such an array holds no `]` but its last byte.
 */
export function plainStrings(bytes: Buffer, start: number): string[] | undefined {
  const strings: string[] = []
  for (let i = start; bytes[i] !== CLOSE_ARRAY; i++) {
    if (bytes[i] !== QUOTE) continue
    const from = i + 1
    for (i = from; bytes[i] !== QUOTE; i++) if ((bytes[i] as number) < 0x20 || (bytes[i] as number) > 0x7e || bytes[i] === BACKSLASH) return undefined
    strings.push(bytes.toString('latin1', from, i))
  }
  return strings
}
