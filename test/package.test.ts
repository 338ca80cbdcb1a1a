/** The package as users get it: `npm pack`, installed into a fresh prefix, run as the `keygate` command. */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { VERSION } from '../dist/version.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string
  license: string
  bin: Record<string, string>
  scripts: Record<string, string>
}

function run(command: string, args: string[], cwd = ROOT) {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 60_000, env: { ...process.env, npm_config_update_notifier: 'false' } })
  assert.equal(result.status, 0, `${command} ${args.join(' ')}: ${result.stderr}`)
  return result.stdout
}

test('the version in the code is the package version', () => {
  assert.equal(VERSION, manifest.version)
})

test('LICENSE matches "license" and the package declares the keygate command', () => {
  assert.equal(manifest.license, 'MIT')
  assert.match(readFileSync(join(ROOT, 'LICENSE'), 'utf8'), /^MIT License/)
  assert.equal(manifest.bin.keygate, 'dist/cli.js')
  assert.ok((statSync(join(ROOT, 'dist/cli.js')).mode & 0o111) !== 0, 'dist/cli.js is executable')
  // `npm pack` and `npm publish` from a fresh clone must build what they ship.
  assert.match(manifest.scripts.prepack ?? '', /build/)
})

test('npm pack ships the built package, installs offline, and runs as `keygate`', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-pack-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  // dist/ is already built by `npm test`; building again here would rewrite files other tests are loading.
  const [packed] = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir])) as Array<{
    filename: string
    files: Array<{ path: string }>
  }>
  assert.ok(packed !== undefined)
  const files = new Set(packed.files.map((file) => file.path))
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/cli.js', 'dist/server.js', 'dist/server-bundle.js', 'dist/index.js', 'dist/index.d.ts']) {
    assert.ok(files.has(needed), `${needed} is in the tarball`)
  }
  for (const useless of ['dist/server.d.ts', 'dist/cli.d.ts', 'dist/cli-commands.d.ts']) assert.ok(!files.has(useless), `${useless} is left out`)
  assert.ok(![...files].some((file) => file.startsWith('dist-test/') || file.startsWith('src/')), 'no tests or sources')

  const prefix = join(dir, 'prefix')
  run('npm', ['install', '--global', '--offline', '--no-audit', '--no-fund', '--prefix', prefix, join(dir, packed.filename)], dir)
  const keygate = join(prefix, 'bin', 'keygate')
  assert.equal(run(keygate, ['--version'], dir).trim(), manifest.version)
  const [key, entry] = run(keygate, ['keygen', '--id', 'packed'], dir).split('\n')
  assert.match(key ?? '', /^kg_[0-9A-Za-z]{46}$/)
  const file = join(dir, 'keys.json')
  writeFileSync(file, `{ "keys": [${entry}] }`)
  assert.match(run(keygate, ['check', file], dir), /OK, 1 key/)
})

test('installing from git builds the package (prepare) and gives the keygate command', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-git-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  // A clone of what is committed, as `npm install github:owner/keygate` would fetch it.
  run('git', ['clone', '-q', ROOT, join(dir, 'repo')])
  writeFileSync(join(dir, 'package.json'), '{"name":"app","version":"1.0.0","private":true}')
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', `git+file://${join(dir, 'repo')}`], dir)
  assert.equal(run(join(dir, 'node_modules', '.bin', 'keygate'), ['--version']).trim(), VERSION)
})

test('the committed lockfile agrees with package.json (npm install would not rewrite it)', () => {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, Record<string, unknown>> }
  const root = lock.packages[''] ?? {}
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>
  for (const field of ['name', 'version', 'license', 'bin', 'devDependencies', 'engines']) assert.deepEqual(root[field], pkg[field], field)
  assert.equal(root.dependencies, undefined, 'no runtime dependency')
})
