/**
 * The shape of the code (DESIGN.md): rooms in layers, imports pointing down, no cycle, and the
 * process touched only at the top. The check is a script; here it runs on src/ and on small trees
 * that each break one rule, so that it is known to fail when it should.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const CHECK = fileURLToPath(new URL('../scripts/check-architecture.mjs', import.meta.url))
const SRC = fileURLToPath(new URL('../src', import.meta.url))

function check(dir: string) {
  const result = spawnSync(process.execPath, [CHECK, dir], { encoding: 'utf8', timeout: 30_000 })
  return { status: result.status, lines: result.stderr.split('\n').filter((line) => line !== '') }
}

/** A tree of source files (path -> text) in a temporary directory, removed after the test. */
function tree(t: { after(fn: () => void): void }, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-architecture-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true })
    writeFileSync(join(dir, path), text)
  }
  return dir
}

test("keygate's own src/ keeps every rule", () => {
  assert.deepEqual(check(SRC), { status: 0, lines: [] })
})

test('a tree that keeps the rules passes: imports down the layers, within a room, from an entry point', (t) => {
  const dir = tree(t, {
    'server.ts': "import { a } from './http/a.js'\nconst port = process.env.PORT\nprocess.on('SIGTERM', () => process.exit(0))\n",
    'http/a.ts': "import { b } from './b.js'\nimport type { K } from '../keys/k.js'\nexport const a = 1\n",
    'http/b.ts': "import { log } from '../observe/log.js'\nexport const b = 2\n",
    'keys/k.ts': 'export type K = string\n',
    'observe/log.ts': 'export const log = 3\n',
  })
  assert.deepEqual(check(dir), { status: 0, lines: [] })
})

for (const [rule, files, expected] of [
  ['a cycle of two files', { 'keys/a.ts': "import { b } from './b.js'\n", 'keys/b.ts': "import { a } from './a.js'\n" }, 'import cycle: keys/a.ts -> keys/b.ts -> keys/a.ts'],
  ['a cycle through a type-only import', { 'keys/a.ts': "import type { B } from './b.js'\n", 'keys/b.ts': "export { a } from './a.js'\n" }, 'import cycle: keys/a.ts -> keys/b.ts -> keys/a.ts'],
  ['an import up the layers', { 'limits/a.ts': "import { h } from '../http/h.js'\n", 'http/h.ts': '' }, 'limits/a.ts: imports http/h.ts, a layer above it (the request path over limits)'],
  ['a dynamic import up the layers', { 'redis/a.ts': "const m = await import('../limits/l.js')\n", 'limits/l.ts': '' }, 'redis/a.ts: imports limits/l.ts, a layer above it (limits over network clients)'],
  ['a file in no declared room', { 'misc/a.ts': '' }, 'misc/a.ts: in no room of the declared layers (scripts/check-architecture.mjs)'],
  ['process.env read below process/', { 'keys/a.ts': 'export const key = process.env.API_KEY\n' }, 'keys/a.ts: touches the process (process.env, exit or a signal) below process/'],
  ['a signal handler below process/', { 'http/a.ts': "process.on('SIGHUP', () => {})\n" }, 'http/a.ts: touches the process (process.env, exit or a signal) below process/'],
  ['an exit below process/', { 'limits/a.ts': 'process.exit(1)\n' }, 'limits/a.ts: touches the process (process.env, exit or a signal) below process/'],
  ['a file over 250 lines', { 'keys/a.ts': 'export const a = 1\n'.repeat(251) }, 'keys/a.ts: 251 lines, over 250'],
] as const) {
  test(`the check fails on ${rule}, naming it`, (t) => {
    const { status, lines } = check(tree(t, files))
    assert.equal(status, 1)
    assert.equal(lines[0], expected)
    assert.match(lines.at(-1) ?? '', /^1 breach\(es\) of the rules in /)
  })
}
