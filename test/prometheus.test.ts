/**
 * keygate with the real Prometheus of Debian's `prometheus` package: the example scrape config and
 * alert rules pass promtool, keygate's output passes `promtool check metrics`, and a Prometheus
 * started here scrapes a running keygate with a key read from a file.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { freePort, startServerProcess, waitFor } from './helpers.js'

const EXAMPLES = fileURLToPath(new URL('../examples/', import.meta.url))
const PROMETHEUS = spawnSync('sh', ['-c', 'command -v prometheus && command -v promtool']).status === 0 || 'prometheus is not installed: apt-get install prometheus'
const SKIP = { skip: PROMETHEUS === true ? false : PROMETHEUS }
const KEY = 'prometheus-key-0123456789abcdef'

function promtool(args: string[], input?: string) {
  return spawnSync('promtool', args, { encoding: 'utf8', input, timeout: 30_000 })
}

/** The examples in a directory of their own, the key path pointing at a key file there, scraping `target`. */
function exampleConfig(t: TestContext, target = '127.0.0.1:3000', interval = '15s'): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-prometheus-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'keygate.key'), KEY)
  const config = readFileSync(join(EXAMPLES, 'prometheus.yml'), 'utf8')
    .replace('/etc/prometheus/keygate.key', join(dir, 'keygate.key'))
    .replace('"127.0.0.1:3000"', JSON.stringify(target))
    .replace('scrape_interval: 15s', `scrape_interval: ${interval}`)
  writeFileSync(join(dir, 'prometheus.yml'), config)
  writeFileSync(join(dir, 'keygate-alerts.yml'), readFileSync(join(EXAMPLES, 'keygate-alerts.yml')))
  return dir
}

test('examples/prometheus.yml and examples/keygate-alerts.yml pass promtool', SKIP, (t) => {
  const dir = exampleConfig(t)
  const config = promtool(['check', 'config', join(dir, 'prometheus.yml')])
  assert.equal(config.status, 0, config.stdout + config.stderr)
  const rules = promtool(['check', 'rules', join(EXAMPLES, 'keygate-alerts.yml')])
  assert.equal(rules.status, 0, rules.stdout + rules.stderr)
  assert.match(rules.stdout, /SUCCESS: 7 rules found/)
})

test("keygate's /metrics passes promtool check metrics, after traffic of every kind", SKIP, async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: KEY })
  for (const [path, key] of [['/data', KEY], ['/data', 'wrong-key-0123456789abcdef'], ['/data', undefined], ['/nowhere', undefined], ['/readyz', undefined]] as const) {
    await (await fetch(`${url}${path}`, { headers: key === undefined ? {} : { authorization: key } })).text()
  }
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: KEY } })).text()
  const checked = promtool(['check', 'metrics'], text)
  assert.equal(checked.status, 0, checked.stdout + checked.stderr)
  assert.equal(checked.stdout + checked.stderr, '', 'no lint problem')
})

test('a real Prometheus scrapes keygate with the example config: up == 1 and keygate series', SKIP, async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: KEY })
  const dir = exampleConfig(t, new URL(url).host, '1s')
  const port = await freePort()
  const prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' })
  t.after(() => {
    if (prometheus.exitCode === null && prometheus.pid !== undefined) process.kill(prometheus.pid, 'SIGKILL')
  })
  const query = async (expr: string) => {
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`).catch(() => undefined)
    if (res === undefined || !res.ok) return undefined
    const body = (await res.json()) as { data: { result: Array<{ value: [number, string] }> } }
    return body.data.result[0]?.value[1]
  }
  assert.equal(await waitFor('up == 1', async () => ((await query('up{job="keygate"}')) === '1' ? '1' : undefined), 30_000), '1')
  assert.equal(await waitFor('a keygate series', () => query('keygate_keys_loaded'), 10_000), '1')
})
