#!/usr/bin/env node
// node scripts/check-architecture.mjs [src-dir]
//
// The rules of DESIGN.md "Shape of the code", checked on the imports of every file under src/
// (static, dynamic and type-only: a type is a dependency too): each file belongs to a declared
// room; no import points up the layers; no import cycle; nothing below the entry points and
// process/ reads process.env, exits or registers a signal handler; and no file is over
// MAX_LINES lines (a longer one holds two things: split it by what each does). Prints each breach on one line
// and exits 1; prints nothing and exits 0 on a clean tree. Run by test/architecture.test.ts.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative, sep } from 'node:path'

// Top first. A file may import its own room, the other rooms of its layer, and any layer below.
const LAYERS = [
  { name: 'entry points', rooms: ['server.ts', 'cli.ts', 'cli-commands.ts', 'index.ts'] },
  { name: 'process', rooms: ['process'] },
  { name: 'configuration', rooms: ['config.ts', 'settings.ts'] },
  { name: 'forwarding', rooms: ['proxy'] },
  { name: 'the request path', rooms: ['http'] },
  { name: 'the keys file', rooms: ['keys-file'] },
  { name: 'the key table', rooms: ['key-table'] },
  { name: 'who a caller is', rooms: ['keys'] },
  { name: 'limits', rooms: ['limits'] },
  { name: 'network clients', rooms: ['redis'] },
  { name: 'the ground', rooms: ['observe', 'version.ts'] },
]
// Only a process decides about the process: below these layers, nothing touches it.
const PROCESS_LAYERS = 2
const MAX_LINES = 250
const PROCESS_CALLS = /\bprocess\.(env\b|exit\s*\(|on\s*\(|once\s*\(|addListener\s*\()/

const IMPORTS = [
  /\b(?:import|export)\s+(?:type\s+)?[^'"]*?\bfrom\s*['"](\.[^'"]+)['"]/g, // import x from './y.js', export { x } from './y.js'
  /\bimport\s*\(\s*['"](\.[^'"]+)['"]\s*\)/g, // import('./y.js'), typeof import('./y.js')
  /^\s*import\s*['"](\.[^'"]+)['"]/gm, // import './y.js'
]

export function checkArchitecture(srcDir) {
  const files = sourceFiles(srcDir)
  const problems = []
  const graph = new Map()
  for (const file of files) {
    const source = readFileSync(join(srcDir, file), 'utf8')
    const layer = layerOf(file)
    if (layer === -1) problems.push(`${file}: in no room of the declared layers (scripts/check-architecture.mjs)`)
    const lines = source.split('\n').length - (source.endsWith('\n') ? 1 : 0)
    if (lines > MAX_LINES) problems.push(`${file}: ${lines} lines, over ${MAX_LINES}`)
    if (layer >= PROCESS_LAYERS && PROCESS_CALLS.test(source)) problems.push(`${file}: touches the process (process.env, exit or a signal) below process/`)
    const targets = importsOf(file, source).filter((target) => files.includes(target))
    graph.set(file, targets)
    for (const target of targets) {
      const below = layerOf(target)
      if (layer !== -1 && below !== -1 && below < layer) problems.push(`${file}: imports ${target}, a layer above it (${LAYERS[below].name} over ${LAYERS[layer].name})`)
    }
  }
  for (const cycle of cyclesOf(graph)) problems.push(`import cycle: ${cycle.join(' -> ')}`)
  return problems
}

function sourceFiles(dir, prefix = '') {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((entry) => {
    const path = prefix === '' ? entry.name : `${prefix}/${entry.name}`
    if (entry.isDirectory()) return sourceFiles(dir, path)
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : []
  })
}

/** The layer of a file: by its folder, or by its own name at the top of src/. */
function layerOf(file) {
  const room = file.includes('/') ? file.slice(0, file.indexOf('/')) : file
  return LAYERS.findIndex((layer) => layer.rooms.includes(room))
}

function importsOf(file, source) {
  const targets = new Set()
  for (const pattern of IMPORTS) {
    for (const [, specifier] of source.matchAll(pattern)) {
      const path = normalize(join(dirname(file), specifier)).split(sep).join('/')
      targets.add(path.replace(/\.js$/, '.ts'))
    }
  }
  return [...targets]
}

/** One cycle per strongly connected group of files, found by depth-first search. */
function cyclesOf(graph) {
  const cycles = []
  const state = new Map() // file -> 'open' while on the path, 'done' after
  const path = []
  const visit = (file) => {
    state.set(file, 'open')
    path.push(file)
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') cycles.push([...path.slice(path.indexOf(next)), next])
      else if (!state.has(next)) visit(next)
    }
    path.pop()
    state.set(file, 'done')
  }
  for (const file of [...graph.keys()].sort()) if (!state.has(file)) visit(file)
  return cycles
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const srcDir = process.argv[2] ?? new URL('../src', import.meta.url).pathname
  const problems = checkArchitecture(srcDir)
  for (const problem of problems) console.error(problem)
  if (problems.length > 0) console.error(`${problems.length} breach(es) of the rules in ${relative(process.cwd(), srcDir) || '.'}`)
  process.exit(problems.length > 0 ? 1 : 0)
}
