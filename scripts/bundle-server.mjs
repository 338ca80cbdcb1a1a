// Build step: makes dist/server.js start fast. Starting the server as tsc wrote it means Node 20
// loading about fifteen ES modules (about half a millisecond each) and V8 compiling every function
// on the first request; the time to the first answer is part of what keygate promises. So:
//
// - dist/server-bundle.js: every module the server can load, as one script (an async function of
//   `require`). Each module becomes a function run on first use (so node:cluster and the TLS
//   modules still load only when configured), builtins come from require(), and a module's
//   exports are its return value.
// - dist/server-bundle.cache: V8's code cache for that script, taken after it has started a server
//   and answered GET /data, so it holds the compiled functions of the whole path to a first answer.
//   V8 checks it against the source and its own version; with another Node it is rejected and
//   the script is compiled as usual.
// - dist/server.js: the loader of the two.
//
// The library (dist/index.js and the rest) stays as tsc wrote it. Only the forms tsc writes for
// this code base are understood; anything else stops the build with a message, rather than
// producing a bundle that behaves differently:
//   import { a, b as c } from 'node:x' | './y.js' | '../z/y.js';    import x from 'node:x';
//   export function|async function|class|const name ...;    await import('./y.js' | 'node:x')
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { join, posix } from 'node:path'
import { Script } from 'node:vm'

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

/** `from` as imported by `file`, named from dist/ (`./http/paths.js`); `undefined` for a builtin or package. */
function resolveLocal(file, from) {
  if (!from.startsWith('./') && !from.startsWith('../')) return undefined
  const name = posix.normalize(posix.join(posix.dirname(file), from))
  if (name.startsWith('..')) fail(file, `import from outside dist/: ${from}`)
  return `./${name}`
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
      const local = resolveLocal(file, from)
      if (local !== undefined) {
        if (defaultName !== undefined) fail(file, `default import of a module of ours: ${line}`)
        loads.add(local)
        return `const { ${bindings(named)} } = __load('${local}');`
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
      const local = resolveLocal(file, from)
      if (local !== undefined) {
        loads.add(local)
        return `Promise.resolve(__load('${local}'))`
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
if (readFileSync(join(DIST, ENTRY), 'utf8').includes(MARK)) fail(ENTRY, 'already the loader: run tsc first')
const modules = collect()
const entry = modules.get(ENTRY)
if (entry.exports.length > 0) fail(ENTRY, 'the entry exports something: the bundle cannot')
const factories = [...modules]
  .filter(([name]) => name !== ENTRY)
  .map(([name, module]) => `  '${name}': () => {\n${module.text}\nreturn { ${module.exports.join(', ')} };\n  },`)
const body = `(async function (require) {
${MARK}: the server and every module it can load, as one script. See there why.
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
})`

const LOADER = `#!/usr/bin/env node
${MARK}: loads server-bundle.js with its V8 code cache. See there why.
import { createRequire } from 'node:module';

// Builtins through require(): an ES import of node:fs builds a module facade of all its exports,
// which costs more than everything else this file does.
const require = createRequire(import.meta.url);
const { readFileSync } = require('node:fs');
const { Script } = require('node:vm');
const file = new URL('./server-bundle.js', import.meta.url);
let cachedData;
try {
  cachedData = readFileSync(new URL('./server-bundle.cache', import.meta.url));
} catch {
  // no cache: V8 compiles the script as it goes
}
const script = new Script(readFileSync(file, 'utf8'), { filename: file.pathname, cachedData });
await script.runInThisContext()(require);
`

writeFileSync(join(DIST, 'server-bundle.js'), body)
writeFileSync(join(DIST, ENTRY), LOADER)
await writeCodeCache()

/**
 * Runs the bundle in this process as the loader would, with a key and a small keys file on a free port, until it
 * has answered GET /data; then saves V8's code cache of it and exits.
 */
async function writeCodeCache() {
  const source = readFileSync(join(DIST, 'server-bundle.js'), 'utf8')
  const script = new Script(source, { filename: join(DIST, 'server-bundle.js') })
  const key = 'bundle-build-key-0123456789abcdef'
  // A small keys file too, so that the cache holds the code that reads one (both of its paths).
  const keysDir = mkdtempSync(join(tmpdir(), 'keygate-bundle-'))
  const keysFile = join(keysDir, 'keys.json')
  const digest = createHash('sha256').update('bundle-other-key-0123456789').digest('hex')
  writeFileSync(keysFile, JSON.stringify({ keys: [{ id: 'flat', sha256: digest }, { id: 'ruled', key: 'bundle-ruled-key-0123456789', allow: ['GET /data'] }] }))
  process.on('exit', () => rmSync(keysDir, { recursive: true, force: true }))
  Object.assign(process.env, { PORT: String(await freePort()), API_KEY: key, API_KEYS_FILE: keysFile, LOG_LEVEL: 'silent', WORKERS: '1' })
  for (const name of ['TLS_CERT_FILE', 'TLS_KEY_FILE', 'HOST']) delete process.env[name]
  const { createRequire } = await import('node:module')
  void script.runInThisContext()(createRequire(join(DIST, 'server.js')))
  for (let attempt = 0; attempt < 200; attempt++) {
    if ((await statusOf(Number(process.env.PORT), key)) === 200) {
      writeFileSync(join(DIST, 'server-bundle.cache'), script.createCachedData())
      process.exit(0)
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  // Without a cache the server only starts a few milliseconds slower: warn, do not fail the build.
  rmSync(join(DIST, 'server-bundle.cache'), { force: true })
  process.stderr.write('bundle-server: warning: the bundled server did not answer GET /data within 2 s; no code cache written\n')
  process.exit(0)
}

async function freePort() {
  const probe = createServer().listen(0, '127.0.0.1')
  await new Promise((resolve) => probe.once('listening', resolve))
  const { port } = probe.address()
  await new Promise((resolve) => probe.close(resolve))
  return port
}

/** The status of GET /data with `key`, or 0 while nothing answers. */
function statusOf(port, key) {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/data', headers: { authorization: key } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', () => resolve(0))
    req.end()
  })
}
