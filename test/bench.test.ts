/** `npm run bench -- --quick` is a smoke run: every case runs, no ratio is judged on it. */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const RUN = fileURLToPath(new URL('../dist-bench/run.js', import.meta.url))

test('bench --quick reports its ratios as not judged, never FAIL', () => {
  const args = ['--quick', '--only', 'bare,authorized', '--duration', '0.3', '--warmup', '0', '--connections', '4', '--no-pin']
  const result = spawnSync(process.execPath, [RUN, ...args], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(result.status, 0, result.stderr)
  assert.doesNotMatch(result.stdout, /FAIL/)
  const rows = result.stdout.split('\n').filter((line) => line.includes('GET /data authorized / bare |'))
  assert.equal(rows.length, 1, result.stdout)
  assert.match(rows[0] ?? '', /\| not judged \(--quick\) \|$/)
})
