#!/usr/bin/env node
// npm run mutation -- src/keys/policy.ts [src/... ...] [--tests test/a.test.ts,test/b.test.ts] [--concurrency N]
//
// How much of a module the tests would notice breaking: StrykerJS mutates the module and runs the
// test files that import it (or --tests) against each mutant. A tool for developers, not part of
// `npm test`. Stryker is fetched with npm into a cache directory outside the project, so that
// package.json keeps no devDependency beyond typescript and @types/node.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, relative } from 'node:path'
import { parseArgs } from 'node:util'

// Stryker reads tsconfig files with the TypeScript API (5.x; the project's own TypeScript 7 has none).
const STRYKER = ['@stryker-mutator/core@9.6.1', 'typescript@5']
const ROOT = new URL('..', import.meta.url).pathname
const CACHE = join(tmpdir(), 'keygate-stryker-9.6.1')

const { values: flags, positionals: modules } = parseArgs({
  options: { tests: { type: 'string' }, concurrency: { type: 'string', default: '2' }, timeout: { type: 'string', default: '10000' } },
  allowPositionals: true,
})
if (modules.length === 0 || !modules.every((m) => /^src\/.+\.ts$/.test(m) && existsSync(join(ROOT, m)))) {
  console.error('usage: npm run mutation -- src/<module>.ts [...] [--tests test/x.test.ts,...] [--concurrency N]')
  process.exit(2)
}

/** Stryker in a cache directory of its own (installed once). */
function stryker() {
  const bin = join(CACHE, 'node_modules', '.bin', 'stryker')
  if (existsSync(bin)) return bin
  mkdirSync(CACHE, { recursive: true })
  console.error(`installing ${STRYKER.join(' and ')} into ${CACHE} (once)`)
  const done = spawnSync('npm', ['install', '--prefix', CACHE, '--no-audit', '--no-fund', '--silent', ...STRYKER], { stdio: 'inherit' })
  if (done.status !== 0) throw new Error(`npm install ${STRYKER.join(' ')} failed`)
  return bin
}

/** The test files whose source imports the module's compiled file. */
function testsImporting(module) {
  const compiled = module.replace(/^src\//, 'dist/').replace(/\.ts$/, '.js')
  const files = []
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.test.ts') && readFileSync(path, 'utf8').includes(compiled.slice('dist/'.length))) files.push(relative(ROOT, path))
    }
  }
  walk(join(ROOT, 'test'))
  return files
}

const toCompiled = (test) => test.replace(/^test\//, 'dist-test/').replace(/\.ts$/, '.js')

function run(module) {
  const tests = flags.tests?.split(',') ?? testsImporting(module)
  if (tests.length === 0) throw new Error(`no test file imports ${module}: name them with --tests`)
  const name = basename(module, '.ts')
  const report = join('reports', 'mutation', `${name}.json`)
  const config = {
    testRunner: 'command',
    commandRunner: { command: `node --test ${tests.map(toCompiled).join(' ')}` },
    buildCommand: 'npm run build',
    mutate: [module],
    coverageAnalysis: 'off',
    reporters: ['clear-text', 'progress', 'json'],
    jsonReporter: { fileName: report },
    concurrency: Number(flags.concurrency),
    timeoutMS: Number(flags.timeout),
    tempDirName: '.stryker-tmp',
    ignorePatterns: ['dist', 'dist-test', 'dist-bench', 'reports', '.stryker-tmp'],
  }
  const file = join(ROOT, '.stryker-tmp', `${name}.conf.json`)
  mkdirSync(join(ROOT, '.stryker-tmp'), { recursive: true })
  writeFileSync(file, JSON.stringify(config, null, 2))
  console.error(`${module}: ${tests.join(', ')}`)
  const done = spawnSync(stryker(), ['run', file], { cwd: ROOT, stdio: 'inherit' })
  if (done.status !== 0) throw new Error(`stryker failed on ${module}`)
  return summarize(module, join(ROOT, report))
}

/** Detected (killed or timed out) over all mutants, and where the survivors are. */
function summarize(module, reportFile) {
  const report = JSON.parse(readFileSync(reportFile, 'utf8'))
  const mutants = Object.values(report.files).flatMap((f) => f.mutants)
  const count = (status) => mutants.filter((m) => m.status === status).length
  const detected = count('Killed') + count('Timeout')
  const survivors = mutants.filter((m) => m.status === 'Survived' || m.status === 'NoCoverage')
  return { module, mutants: mutants.length, detected, score: (100 * detected) / mutants.length, survivors }
}

const results = modules.map(run)
console.log('\n| module | mutants | detected | survived | score |\n|---|--:|--:|--:|--:|')
for (const r of results) console.log(`| ${r.module} | ${r.mutants} | ${r.detected} | ${r.survivors.length} | ${r.score.toFixed(1)} % |`)
for (const r of results) {
  for (const m of r.survivors) console.log(`${r.module}:${m.location.start.line} #${m.id} ${m.mutatorName}: ${(m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 100)}`)
}
