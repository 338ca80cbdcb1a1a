/**
 * `keygate rotate` against a live server: the new key printed once, the old one an earlier key
 * for the grace period, the file rewritten in place (mode kept, no temporary file left), a file
 * with problems left alone, no old key ever printed.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { CLI_JS, logLines, startServerProcess, waitFor, type Child } from './helpers.js'

const OLD_KEY = 'rotate-old-key-0123456789abcdef'
const OTHER_KEY = 'rotate-other-key-0123456789abcdef'
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

function keysDir(t: TestContext, doc: unknown): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-rotate-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify(doc, null, 2))
  chmodSync(file, 0o640)
  return { dir, file }
}

function keygate(...args: string[]) {
  const result = spawnSync(process.execPath, [CLI_JS, ...args], { encoding: 'utf8', timeout: 20_000 })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

const reloads = (child: Child) => logLines(child).filter((line) => line.msg === 'keys reloaded').length
const waitForReload = (child: Child, count: number) => waitFor(`reload #${count}`, () => (reloads(child) >= count ? true : undefined))
const status = async (url: string, key: string) => (await fetch(`${url}/data`, { headers: { authorization: key } })).status

test('rotate prints the new key once; the live server takes it, and the old key works for the grace period as an earlier key', async (t) => {
  const doc = { defaults: { rateLimit: { limit: 100, windowS: 60 } }, keys: [{ id: 'a', key: OLD_KEY, quota: { limit: 1000, period: 'month' } }, { id: 'b', sha256: sha256(OTHER_KEY) }] }
  const { dir, file } = keysDir(t, doc)
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  const startedMs = Date.now()
  const rotated = keygate('rotate', file, '--id', 'a', '--grace', '1h')
  assert.equal(rotated.status, 0, rotated.stderr)
  assert.match(rotated.stdout, /^kg_[0-9A-Za-z]{46}\n$/, 'the new key, alone on stdout')
  assert.match(rotated.stderr, /the new key of "a", for the client only.*The old key works until 20\d\d-/)
  const newKey = rotated.stdout.trim()
  assert.ok(!(rotated.stdout + rotated.stderr).includes(OLD_KEY), 'the old key is never printed')
  assert.equal(statSync(file).mode & 0o777, 0o640, 'the mode is kept')
  assert.deepEqual(readdirSync(dir), ['keys.json'], 'no temporary file is left')
  const text = readFileSync(file, 'utf8')
  assert.ok(!text.includes(OLD_KEY) && !text.includes(newKey), 'the file holds digests only')
  const entry = JSON.parse(text).keys[0]
  assert.deepEqual(Object.keys(entry), ['id', 'sha256', 'quota', 'previous'], 'fields keep their order')
  assert.equal(entry.sha256, sha256(newKey))
  assert.equal(entry.previous[0].sha256, sha256(OLD_KEY))
  const untilMs = Date.parse(entry.previous[0].until)
  assert.ok(untilMs >= startedMs + 3_600_000 && untilMs <= Date.now() + 3_600_000, entry.previous[0].until)

  await waitForReload(child, 1)
  assert.equal(await status(url, newKey), 200)
  assert.equal(await status(url, OLD_KEY), 200, 'the old key, for the grace period')
  assert.equal(await status(url, OTHER_KEY), 200, 'the other entries are unchanged')
  const line = await waitFor('the old key\'s access line', () => logLines(child).find((l) => l.msg === 'request' && l.previousKey === true))
  assert.equal(line.keyId, 'a')

  const check = keygate('check', file)
  assert.equal(check.status, 0, check.stderr)
  assert.match(check.stdout, /keys with quotas: 1\n/)
  assert.match(check.stdout, /keys with rate limits: 2\n/)
  assert.match(check.stdout, /earlier keys still valid \(rotation\): a \(20\d\d-/)

  // Again without grace: the key of the first rotation goes at once; the first key keeps its hour.
  const again = keygate('rotate', file, '--id', 'a', '--grace', '0')
  assert.equal(again.status, 0, again.stderr)
  assert.match(again.stderr, /The old key no longer works/)
  await waitForReload(child, 2)
  assert.equal(await status(url, again.stdout.trim()), 200)
  assert.equal(await status(url, newKey), 401)
  assert.equal(await status(url, OLD_KEY), 200)
})

test('rotate leaves a file with problems as it is, and names them; an unknown id or a bad grace writes nothing', (t) => {
  const { dir, file } = keysDir(t, { keys: [{ id: 'a', key: OLD_KEY }, { id: 'b', sha256: 'not-hex' }] })
  const before = readFileSync(file, 'utf8')
  const refused = keygate('rotate', file, '--id', 'a')
  assert.equal(refused.status, 1)
  assert.match(refused.stderr, /keys\[1\] \(id "b"\): sha256 must be 64 lowercase hex characters/)
  assert.equal(readFileSync(file, 'utf8'), before)
  assert.equal(refused.stdout, '', 'no key printed for a rotation that did not happen')

  writeFileSync(file, JSON.stringify({ keys: [{ id: 'a', key: OLD_KEY }] }))
  const unknown = keygate('rotate', file, '--id', 'nobody')
  assert.equal(unknown.status, 1)
  assert.match(unknown.stderr, /no entry with id "nobody"/)
  assert.equal(unknown.stdout, '')
  const badGrace = keygate('rotate', file, '--id', 'a', '--grace', '1 week')
  assert.equal(badGrace.status, 2)
  assert.match(badGrace.stderr, /--grace must be a duration such as 30m, 24h or 7d/)
  const noId = keygate('rotate', file)
  assert.equal(noId.status, 2)
  assert.deepEqual(readdirSync(dir), ['keys.json'])
  assert.ok(!(refused.stderr + unknown.stderr + badGrace.stderr).includes(OLD_KEY))
})

test('keygate check reports allowlists and warns of earlier keys past their time', (t) => {
  const { file } = keysDir(t, { keys: [
    { id: 'office', key: OTHER_KEY, ips: ['203.0.113.0/24'], previous: [{ sha256: sha256(OLD_KEY), until: '2020-01-01T00:00:00Z' }] },
  ] })
  const check = keygate('check', file)
  assert.equal(check.status, 0, check.stderr)
  assert.match(check.stdout, /keys with address allowlists: 1\n/)
  assert.match(check.stderr, /1 earlier key\(s\) past their "until", refused \(remove them from "previous"\): office/)
})
