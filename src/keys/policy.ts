/**
 * Scopes: the rules of what a key may do, `"<methods> <path>"`, compiled once at load into a tree
 * of path segments, so that checking a request costs a walk down its segments whatever the number
 * of rules. `<methods>` is `*` or a comma list of upper-case method tokens (GET also allows HEAD);
 * `<path>` is matched segment by segment, anchored and case-sensitive: `*` is exactly one non-empty
 * segment, a last `**` zero or more segments, anything else only itself. Pure.
 */

/** Compiled rules: `allows(method, segments)` with the canonical segments of a request path. */
export interface Policy {
  readonly rules: number
  allows(method: string, segments: readonly string[]): boolean
}

/** Methods a rule allows: every one, or a set. */
type Methods = true | Set<string>

interface Node {
  literal: Map<string, Node>
  star?: Node
  /** Methods of rules that end here. */
  end?: Methods
  /** Methods of rules whose last segment `**` starts here. */
  rest?: Methods
}

const METHOD_TOKEN = /^[A-Z]+$/
// Deeper rules are refused: matching walks at most this many segments per `*` branch.
const MAX_RULE_SEGMENTS = 32

/** Compiles `rules`; throws a `TypeError` whose message names the rule's index and fault. */
export function compilePolicy(rules: readonly string[]): Policy {
  if (!Array.isArray(rules)) throw new TypeError('allow must be an array of rules such as "GET /v1/**"')
  const root = newNode()
  rules.forEach((rule, index) => {
    try {
      addRule(root, rule)
    } catch (error) {
      throw new TypeError(`allow[${index}]: ${(error as Error).message}`)
    }
  })
  return { rules: rules.length, allows: (method, segments) => matches(root, segments, 0, method) }
}

function newNode(): Node {
  return { literal: new Map() }
}

function addRule(root: Node, rule: unknown): void {
  if (typeof rule !== 'string') throw new TypeError('a rule must be a string such as "GET /v1/**"')
  const space = rule.indexOf(' ')
  if (space === -1 || rule.indexOf(' ', space + 1) !== -1) throw new TypeError('a rule is "<methods> <path>", such as "GET,POST /v1/reports/*"')
  const methods = parseMethods(rule.slice(0, space))
  const segments = parseRulePath(rule.slice(space + 1))
  let node = root
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string
    if (segment === '**') {
      node.rest = merge(node.rest, methods)
      return
    }
    if (segment === '*') node = node.star ??= newNode()
    else {
      let next = node.literal.get(segment)
      if (next === undefined) node.literal.set(segment, (next = newNode()))
      node = next
    }
  }
  node.end = merge(node.end, methods)
}

function parseMethods(text: string): Methods {
  if (text === '*') return true
  const methods = new Set<string>()
  for (const method of text.split(',')) {
    if (!METHOD_TOKEN.test(method)) throw new TypeError('methods must be "*" or upper-case method names separated by commas, such as "GET,POST"')
    methods.add(method)
    if (method === 'GET') methods.add('HEAD')
  }
  return methods
}

// What a rule's literal segment may hold: characters a canonical path keeps as they are (no escapes).
const RULE_SEGMENT = /^[A-Za-z0-9._~!$&'()*+,=:@-]*$/

/**
 * The rule's segments: a path in the form requests are matched in (see http/canonical-path.ts:
 * no empty segment but a final one, no `.` or `..`, no escapes, `;` or `\`), where `*` and a last
 * `**` stand alone in their segment.
 */
function parseRulePath(path: string): string[] {
  if (!path.startsWith('/')) throw new TypeError('the path must start with "/"')
  const segments = path.slice(1).split('/')
  segments.forEach((segment, i) => {
    if (segment === '' && i < segments.length - 1) throw new TypeError('the path must be canonical: no empty segment (//)')
    if (segment === '.' || segment === '..') throw new TypeError('the path must be canonical: no "." or ".." segment')
    if (!RULE_SEGMENT.test(segment)) throw new TypeError('the path must be canonical: no escapes, spaces, ";" or "\\", ASCII only')
  })
  if (segments.length > MAX_RULE_SEGMENTS) throw new TypeError(`a path has at most ${MAX_RULE_SEGMENTS} segments`)
  segments.forEach((segment, i) => {
    if (segment === '**' && i !== segments.length - 1) throw new TypeError('"**" may only be the last segment')
    if (segment !== '*' && segment !== '**' && segment.includes('*')) throw new TypeError('"*" must be a whole segment: no other wildcard, no regex')
  })
  return segments
}

function merge(a: Methods | undefined, b: Methods): Methods {
  if (a === undefined) return b instanceof Set ? new Set(b) : b
  if (a === true || b === true) return true
  for (const method of b) a.add(method)
  return a
}

function allowsMethod(methods: Methods | undefined, method: string): boolean {
  return methods === true || (methods !== undefined && methods.has(method))
}

/** Walks the tree: a literal child, then the `*` child (one non-empty segment), with `**` ending any walk. */
function matches(node: Node, segments: readonly string[], at: number, method: string): boolean {
  if (allowsMethod(node.rest, method)) return true
  if (at === segments.length) return allowsMethod(node.end, method)
  const segment = segments[at] as string
  const literal = node.literal.get(segment)
  if (literal !== undefined && matches(literal, segments, at + 1, method)) return true
  return segment !== '' && node.star !== undefined && matches(node.star, segments, at + 1, method)
}
