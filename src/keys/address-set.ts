/**
 * Client addresses: their normal form, and the allowlists of keys (`"ips"`), compiled once into a
 * binary prefix tree per family, so that checking an address costs at most 32 (IPv4) or 128
 * (IPv6) steps down the tree whether the list holds 1 range or 1,000. Pure.
 */
import { isIP } from 'node:net'

// The longest IPv6 text form (with an embedded IPv4) is 45 characters; anything longer is no address.
const MAX_ADDRESS_LENGTH = 45
const IPV4_MAPPED_HEX = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/
/** A list longer than this is a mistake (or an attack on the load), not an allowlist. */
const MAX_RANGES = 10_000

/**
 * The address as a new, short string (never a slice that keeps a 12 KB header alive): IPv4 as
 * dotted decimal, IPv4-mapped IPv6 in any spelling as IPv4, other IPv6 in its canonical lowercase
 * form, zone ids (`%eth0`) dropped. `undefined` when `text` is no IP address.
 */
export function normalizeAddress(text: string): string | undefined {
  const zone = text.indexOf('%')
  const address = zone === -1 ? text : text.slice(0, zone)
  if (address.length > MAX_ADDRESS_LENGTH) return undefined
  const family = isIP(address)
  if (family === 4) return address.split('.').map(Number).join('.')
  if (family !== 6) return undefined
  // The URL parser prints IPv6 canonically (RFC 5952), IPv4-mapped ones as hex groups.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1)
  const mapped = IPV4_MAPPED_HEX.exec(canonical)
  if (mapped === null) return canonical
  const high = parseInt(mapped[1] as string, 16)
  const low = parseInt(mapped[2] as string, 16)
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
}

/** The addresses a key may be used from. */
export interface AddressSet {
  readonly ranges: number
  /** Whether `address` (in normal form, as `normalizeAddress` gives it) is in one of the ranges. */
  allows(address: string): boolean
}

/** A node of the prefix tree: its two children by the next bit; `true` ends a range (all below is in). */
type Node = { 0?: Node | true; 1?: Node | true }

/** Compiles `["203.0.113.0/24", "2001:db8::/48", "198.51.100.7"]`; throws a `TypeError` naming the bad item. */
export function compileAddressSet(list: readonly string[]): AddressSet {
  if (!Array.isArray(list)) throw new TypeError('ips must be an array of addresses or CIDR ranges, such as ["203.0.113.0/24"]')
  if (list.length > MAX_RANGES) throw new TypeError(`ips holds at most ${MAX_RANGES} ranges`)
  const v4: Node = {}
  const v6: Node = {}
  list.forEach((item, index) => {
    const range = parseRange(item)
    if (range === undefined) throw new TypeError(`ips[${index}]: must be an IPv4 or IPv6 address or CIDR range, such as "203.0.113.0/24" or "2001:db8::/48"`)
    insert(range.bytes.length === 4 ? v4 : v6, range.bytes, range.prefix)
  })
  return { ranges: list.length, allows: (address) => (address.includes(':') ? contains(v6, bytesOf(address)) : containsV4(v4, ipv4Number(address))) }
}

/** `address[/prefix]` as its bytes and prefix length; an IPv4-mapped IPv6 range is the IPv4 one. */
function parseRange(item: unknown): { bytes: Uint8Array; prefix: number } | undefined {
  if (typeof item !== 'string') return undefined
  const slash = item.indexOf('/')
  const text = slash === -1 ? item : item.slice(0, slash)
  if (text.includes('%')) return undefined
  const mappedText = isIP(text) === 6 && normalizeAddress(text)?.includes(':') === false
  const address = normalizeAddress(text)
  if (address === undefined) return undefined
  const bytes = bytesOf(address)
  if (bytes === undefined) return undefined
  const bits = bytes.length * 8
  if (slash === -1) return { bytes, prefix: bits }
  const prefixText = item.slice(slash + 1)
  if (!/^\d{1,3}$/.test(prefixText)) return undefined
  // "::ffff:192.0.2.0/120" is 192.0.2.0/24: the mapped range, counted in IPv4 bits.
  const prefix = Number(prefixText) - (mappedText ? 96 : 0)
  if (prefix < 0 || prefix > bits) return undefined
  return { bytes, prefix }
}

/** The bytes of an address in normal form: 4 for IPv4, 16 for IPv6; undefined for anything else. */
function bytesOf(address: string): Uint8Array | undefined {
  if (!address.includes(':')) {
    const parts = address.split('.')
    if (parts.length !== 4) return undefined
    return Uint8Array.from(parts, Number)
  }
  const halves = address.split('::')
  if (halves.length > 2) return undefined
  const groups = (half: string | undefined) => (half === undefined || half === '' ? [] : half.split(':'))
  const head = groups(halves[0])
  const tail = groups(halves[1])
  const missing = 8 - head.length - tail.length
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return undefined
  const all = [...head, ...Array<string>(missing).fill('0'), ...tail]
  const bytes = new Uint8Array(16)
  all.forEach((group, i) => {
    const value = parseInt(group, 16)
    bytes[i * 2] = value >> 8
    bytes[i * 2 + 1] = value & 255
  })
  return bytes
}

function bitAt(bytes: Uint8Array, bit: number): 0 | 1 {
  return (((bytes[bit >> 3] as number) >> (7 - (bit & 7))) & 1) as 0 | 1
}

function insert(root: Node, bytes: Uint8Array, prefix: number): void {
  if (prefix === 0) {
    root[0] = true
    root[1] = true
    return
  }
  let node = root
  for (let bit = 0; bit < prefix - 1; bit++) {
    const next = node[bitAt(bytes, bit)]
    if (next === true) return // a wider range holds this one already
    node = next ?? (node[bitAt(bytes, bit)] = {})
  }
  node[bitAt(bytes, prefix - 1)] = true
}

/** Dotted decimal (normal form) as an unsigned 32-bit number, without allocating; -1 for anything else. */
function ipv4Number(address: string): number {
  let value = 0
  let part = 0
  let dots = 0
  for (let i = 0; i < address.length; i++) {
    const c = address.charCodeAt(i)
    if (c === 46) {
      value = value * 256 + part
      part = 0
      dots++
    } else if (c >= 48 && c <= 57) part = part * 10 + c - 48
    else return -1
  }
  return dots === 3 && part <= 255 ? value * 256 + part : -1
}

// The usual client, IPv4, is walked from a number: no bytes are made per request.
function containsV4(root: Node, address: number): boolean {
  if (address < 0) return false
  let node: Node | true | undefined = root
  for (let bit = 31; bit >= 0; bit--) {
    node = node[((address / 2 ** bit) & 1) as 0 | 1]
    if (node === undefined) return false
    if (node === true) return true
  }
  return false
}

function contains(root: Node, bytes: Uint8Array | undefined): boolean {
  if (bytes === undefined) return false
  let node: Node | true | undefined = root
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    node = node[bitAt(bytes, bit)]
    if (node === undefined) return false
    if (node === true) return true
  }
  return false
}
