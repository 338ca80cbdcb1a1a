// Build step: rewrites dist/server.js as one file holding every module the server can load, so
// that starting it reads and links one ES module instead of about fifteen. Each ES module costs
// Node 20 about half a millisecond to load, and the time to the first answer is part of what
// keygate promises. The library (dist/index.js and the rest) stays as tsc wrote it.
//
// Only the forms tsc writes for this code base are understood; anything else stops the build
// with a message, rather than producing a bundle that behaves differently:
//   import { a, b as c } from 'node:x' | './y.js';    import x from 'node:x';
//   export function|async function|class|const name ...;    await import('./y.js' | 'node:x')
// Each module becomes a function run on first use (so node:cluster and the TLS modules still load
// only when configured), builtins come from require(), and a module's exports are its return value.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const DIST = new URL('../dist/', import.meta.url).pathname
const ENTRY = './server.js'

const STATIC_IMPORT = /^import (?:\{([^}]*)\}|([A-Za-z_$][\w$]*)) from '([^']+)';$/
const EXPORT_DECLARATION = /^export (?:async function|function|class|const) ([A-Za-z_$][\w$]*)/
const DYNAMIC_IMPORT = /\bimport\('([^']+)'\)/g

function fail(file, message) {
  throw new Error(`bundle-server: ${file}: ${message}`)
}

/** `a, b as c` -> `a, b: c` (destructuring). */
function bindings(list) {
  return list.split(',').map((part) => part.trim()).filter(Boolean).map((part) => part.replace(/^(\S+) as (\S+)$/, '$1: $2')).join(', ')
}

/** Rewrites one module's text; returns the new text, its exported names and the relative modules it loads. */
function transform(file, text) {
  const exports = []
  const loads = new Set()
  const lines = text.split('\n').map((line, index) => {
    if (line.startsWith('#!')) return index === 0 ? '' : fail(file, 'a #! line that is not the first')
    if (line.startsWith('import ')) {
      const match = STATIC_IMPORT.exec(line) ?? fail(file, `unsupported import: ${line}`)
      const [, named, defaultName, from] = match
      if (from.startsWith('./')) {
        if (defaultName !== undefined) fail(file, `default import of a module of ours: ${line}`)
        loads.add(from)
        return `const { ${bindings(named)} } = __load('${from}');`
      }
      if (!from.startsWith('node:')) fail(file, `import of a package: ${line}`)
      return defaultName !== undefined ? `const ${defaultName} = require('${from}');` : `const { ${bindings(named)} } = require('${from}');`
    }
    if (line.startsWith('export ')) {
      const match = EXPORT_DECLARATION.exec(line) ?? fail(file, `unsupported export: ${line}`)
      exports.push(match[1])
      return line.slice('export '.length)
    }
    if (/\bimport\.meta\b/.test(line)) fail(file, 'import.meta means something else in a bundle')
    return line.replace(DYNAMIC_IMPORT, (_, from) => {
      if (from.startsWith('./')) {
        loads.add(from)
        return `Promise.resolve(__load('${from}'))`
      }
      if (!from.startsWith('node:')) fail(file, `dynamic import of a package: ${from}`)
      return `Promise.resolve(__builtin('${from}'))`
    })
  })
  return { text: lines.join('\n'), exports, loads: [...loads] }
}

/** Every module reachable from the entry, each once. */
function collect() {
  const modules = new Map()
  const pending = [ENTRY]
  while (pending.length > 0) {
    const name = pending.pop()
    if (modules.has(name)) continue
    const module = transform(name, readFileSync(join(DIST, name), 'utf8'))
    modules.set(name, module)
    pending.push(...module.loads)
  }
  return modules
}

const MARK = '// Built by scripts/bundle-server.mjs'
if (readFileSync(join(DIST, ENTRY), 'utf8').includes(MARK)) fail(ENTRY, 'already a bundle: run tsc first')
const modules = collect()
const entry = modules.get(ENTRY)
if (entry.exports.length > 0) fail(ENTRY, 'the entry exports something: the bundle cannot')
const factories = [...modules]
  .filter(([name]) => name !== ENTRY)
  .map(([name, module]) => `  '${name}': () => {\n${module.text}\nreturn { ${module.exports.join(', ')} };\n  },`)
const bundle = `#!/usr/bin/env node
${MARK} from the modules beside this file: see there why.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const __factories = {
${factories.join('\n')}
};
const __loaded = new Map();
function __load(name) {
  if (!__loaded.has(name)) __loaded.set(name, __factories[name]());
  return __loaded.get(name);
}
function __builtin(name) {
  const module = require(name);
  return { ...module, default: module };
}
${entry.text}
`
writeFileSync(join(DIST, 'server.js'), bundle)
