import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { createKeyStore } from '../dist/index.js'
import { createLogger } from '../dist/observe/log.js'
import { logLines, runNode, startKeygate, startServerProcess, waitFor, type Child } from './helpers.js'

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
const KEY_A = 'rotation-key-aaaaaaaaaaaaaaaa'
const KEY_B = 'rotation-key-bbbbbbbbbbbbbbbb'
const KEY_C = 'rotation-key-cccccccccccccccc'
const ENV_KEY = 'rotation-env-key-eeeeeeeeeeee'
const ALL_KEYS = [KEY_A, KEY_B, KEY_C, ENV_KEY]

type Entry = { id: string; sha256?: string; key?: string; expiresAt?: string }
const hashed = (id: string, key: string): Entry => ({ id, sha256: sha256(key) })
const keysJson = (...entries: Entry[]) => JSON.stringify({ keys: entries }, null, 2)

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-rotation-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Replaces `file` the safe way: write a temp file beside it, then rename over it. */
function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text)
  renameSync(`${file}.tmp`, file)
}

async function statusWith(url: string, key: string): Promise<number> {
  const res = await fetch(`${url}/data`, { headers: { authorization: `Bearer ${key}` } })
  await res.arrayBuffer()
  return res.status
}

const reloads = (child: Child, msg: string) => logLines(child).filter((line) => String(line.msg).startsWith(msg))

/** Waits until the child has logged its `count`-th line starting with `msg`, and returns it. */
function waitForLog(child: Child, msg: string, count = 1) {
  return waitFor(`log line #${count} "${msg}"`, () => reloads(child, msg)[count - 1])
}

function assertNoKeyMaterial(child: Child): void {
  const output = child.stdout() + child.stderr()
  for (const key of ALL_KEYS) {
    assert.ok(!output.includes(key), 'a key appeared in the output')
    assert.ok(!output.includes(sha256(key)), 'a key digest appeared in the output')
  }
}

test('serves the keys of the file plus API_KEY, and logs the count', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson(hashed('a', KEY_A), { id: 'b', key: KEY_B }))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file, API_KEY: ENV_KEY })
  assert.equal(await statusWith(url, KEY_A), 200)
  assert.equal(await statusWith(url, KEY_B), 200)
  assert.equal(await statusWith(url, ENV_KEY), 200)
  assert.equal(await statusWith(url, KEY_C), 401)
  assert.equal(logLines(child).find((line) => line.msg === 'listening')?.keys, 3)
  assertNoKeyMaterial(child)
})

for (const [name, text, expected] of [
  ['invalid JSON', '{"keys": [', /^keygate: API_KEYS_FILE \S+: is not valid JSON/],
  ['a duplicate id', keysJson(hashed('a', KEY_A), hashed('a', KEY_B)), /^keygate: API_KEYS_FILE \S+: keys\[1\] \(id "a"\): id is used by an earlier entry$/],
  ['a plain key with a space', keysJson({ id: 'a', key: `${KEY_A} x` }), /keys\[0\] \(id "a"\): key must be/],
  ['two problems', keysJson({ id: 'a', sha256: 'nothex' }, { id: 'b', key: KEY_B, expiresAt: 'never' }), /keys\[0\] \(id "a"\): sha256 must be 64 lowercase hex characters \(and 1 more problem\)$/],
] as const) {
  test(`a keys file with ${name} stops startup: exit 1, one line naming the file and entry`, async (t) => {
    const file = join(tempDir(t), 'keys.json')
    writeFileSync(file, text)
    const child = runNode(t, { PORT: '0', API_KEYS_FILE: file })
    assert.equal(await child.exited, 1)
    const lines = child.stderr().trimEnd().split('\n')
    assert.equal(lines.length, 1, child.stderr())
    assert.match(lines[0] ?? '', expected)
    assertNoKeyMaterial(child)
  })
}

test('a missing keys file stops startup with exit 1', async (t) => {
  const file = join(tempDir(t), 'nowhere.json')
  const child = runNode(t, { PORT: '0', API_KEYS_FILE: file })
  assert.equal(await child.exited, 1)
  assert.equal(child.stderr(), `keygate: API_KEYS_FILE ${file}: file not found\n`)
})

test('SIGHUP reloads the file: a new key works at once', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson(hashed('a', KEY_A)))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  assert.equal(await statusWith(url, KEY_B), 401)
  writeFileSync(file, keysJson(hashed('a', KEY_A), hashed('b', KEY_B)))
  child.process.kill('SIGHUP')
  const line = await waitFor('a SIGHUP reload', () => reloads(child, 'keys reloaded').find((l) => l.trigger === 'SIGHUP'))
  assert.equal(line.keys, 2)
  assert.equal(await statusWith(url, KEY_B), 200)
  assert.equal(await statusWith(url, KEY_A), 200)
  assertNoKeyMaterial(child)
})

test('SIGHUP without a keys file is logged and keeps serving', async (t) => {
  const { child, url } = await startServerProcess(t, { API_KEY: ENV_KEY })
  child.process.kill('SIGHUP')
  await waitForLog(child, 'SIGHUP: no API_KEYS_FILE')
  assert.equal(await statusWith(url, ENV_KEY), 200)
})

test('a file renamed over the old one is picked up without a signal', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson(hashed('a', KEY_A)))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  replaceFile(file, keysJson(hashed('b', KEY_B)))
  const line = await waitForLog(child, 'keys reloaded')
  assert.equal(line.trigger, 'change')
  assert.equal(line.keys, 1)
  assert.equal(await statusWith(url, KEY_B), 200)
  assert.equal(await statusWith(url, KEY_A), 401)
  assertNoKeyMaterial(child)
})

test('a Kubernetes-style symlink swap of ..data is picked up', async (t) => {
  const dir = tempDir(t)
  const publish = (version: string, text: string) => {
    mkdirSync(join(dir, version))
    writeFileSync(join(dir, version, 'keys.json'), text)
    symlinkSync(version, join(dir, '..data_tmp'))
    renameSync(join(dir, '..data_tmp'), join(dir, '..data')) // atomic, as the kubelet does
  }
  publish('..v1', keysJson(hashed('a', KEY_A)))
  symlinkSync(join('..data', 'keys.json'), join(dir, 'keys.json'))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: join(dir, 'keys.json') })
  assert.equal(await statusWith(url, KEY_A), 200)
  publish('..v2', keysJson(hashed('c', KEY_C)))
  const line = await waitForLog(child, 'keys reloaded')
  assert.equal(line.keys, 1)
  assert.equal(await statusWith(url, KEY_C), 200)
  assert.equal(await statusWith(url, KEY_A), 401)
})

test('an invalid new file keeps the previous keys serving and logs an error', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson(hashed('a', KEY_A)))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  for (const [count, bad] of [
    [1, `{"keys": [ {"id": "b", "key": ${KEY_B}} ]}`],
    [2, keysJson(hashed('a', KEY_A), hashed('a', KEY_B))],
  ] as const) {
    replaceFile(file, bad)
    const failure = await waitForLog(child, 'keys reload failed', count)
    assert.equal(failure.level, 'error')
    assert.equal(failure.keys, 1)
    assert.equal(await statusWith(url, KEY_A), 200)
    assert.equal(await statusWith(url, KEY_B), 401)
  }
  rmSync(file)
  child.process.kill('SIGHUP')
  const missing = await waitForLog(child, 'keys reload failed', 3)
  assert.match(String(missing.error), /file not found/)
  assert.equal(await statusWith(url, KEY_A), 200)
  assertNoKeyMaterial(child)
})

test('rotation under a stream of requests: add the new key, move clients, remove the old key; nothing fails', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson(hashed('old', KEY_A)))
  // The test polls with removed keys on purpose: those failures must not throttle the stream.
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file, AUTH_FAIL_LIMIT: '0' })
  const statuses = new Map<number, number>()
  let stop = false
  let currentKey = KEY_A
  const stream = (async () => {
    for (let i = 0; i < 20_000 && !stop; i++) {
      const status = await statusWith(url, currentKey)
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
    }
  })()
  replaceFile(file, keysJson(hashed('old', KEY_A), hashed('new', KEY_B)))
  await waitFor('the new key to work', () => answers(url, KEY_B, 200))
  currentKey = KEY_B
  replaceFile(file, keysJson(hashed('new', KEY_B)))
  await waitFor('the old key to stop working', () => answers(url, KEY_A, 401))
  for (let i = 0; i < 3; i++) {
    replaceFile(file, keysJson(hashed('new', KEY_B), hashed(`extra-${i}`, KEY_C)))
    await waitFor('the extra key', () => answers(url, KEY_C, 200))
    replaceFile(file, keysJson(hashed('new', KEY_B)))
    await waitFor('the extra key to go', () => answers(url, KEY_C, 401))
  }
  stop = true
  await stream
  assert.deepEqual([...statuses.keys()], [200], `statuses seen: ${JSON.stringify([...statuses])}`)
  t.diagnostic(`${statuses.get(200)} requests during 8 reloads, all 200`)
  assertNoKeyMaterial(child)
})

/** Resolves true once a request with `key` gets `status`; for `waitFor`. */
async function answers(url: string, key: string, status: number): Promise<true | undefined> {
  return (await statusWith(url, key)) === status || undefined
}

test('a key that expires a second from now stops working, and the log says expired with its id', async (t) => {
  const expiresAt = new Date(Date.now() + 1000).toISOString()
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(chunk) })
  const url = await startKeygate(t, { keys: createKeyStore([{ id: 'brief', key: KEY_A, expiresAt }]), log })
  assert.equal(await statusWith(url, KEY_A), 200)
  const refused = await waitFor('the key to expire', () => answers(url, KEY_A, 401), 5000)
  assert.equal(refused, true)
  assert.ok(Date.now() >= Date.parse(expiresAt))
  log.flush()
  const entries = lines.join('').trim().split('\n').map((line) => JSON.parse(line))
  const expired = entries.find((entry) => entry.reason === 'expired')
  assert.equal(expired?.keyId, 'brief')
  assert.equal(expired?.status, 401)
  assert.ok(!lines.join('').includes(KEY_A))
})

test('a bad keys file is reported once, however often the directory changes, and counted once', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'keys.json')
  writeFileSync(file, keysJson(hashed('a', KEY_A)))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  replaceFile(file, '{"keys": [ {"id": "b", "key": "x"}, ]}')
  await waitForLog(child, 'keys reload failed')
  // A log file in the same directory: before the fix, each write re-read and re-logged the bad file.
  for (let i = 0; i < 5; i++) {
    writeFileSync(join(dir, 'server.log'), `line ${i}\n`)
    await new Promise((resolve) => setTimeout(resolve, 150))
  }
  writeFileSync(file, '{"keys": [ {"id": "b", "key": "x"}, ]}') // the same bad text again
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(reloads(child, 'keys reload failed').length, 1)
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: KEY_A } })).text()
  assert.match(metrics, /keygate_key_reloads_total\{result="failure"\} 1\n/)
  assert.equal(await statusWith(url, KEY_A), 200)
})

test('a live reload of a file with 150,000 problems keeps the server up and logs one capped line', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson(hashed('a', KEY_A)))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  replaceFile(file, JSON.stringify({ keys: Array.from({ length: 150_000 }, (_, i) => ({ id: `k${i}`, hash: sha256(String(i)) })) }))
  const failure = await waitForLog(child, 'keys reload failed')
  assert.match(String(failure.error), /; and \d+ more problems$/)
  assert.ok(String(failure.error).length < 2000)
  assert.equal(await statusWith(url, KEY_A), 200)
  assert.equal(child.process.exitCode, null)
})

test('startup with a file of 150,000 problems: exit 1 and one line with the first problem and a count', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, JSON.stringify({ keys: Array.from({ length: 150_000 }, (_, i) => ({ id: `k${i}`, hash: sha256(String(i)) })) }))
  const child = runNode(t, { API_KEYS_FILE: file, PORT: '0' })
  assert.equal(await child.exited, 1)
  const lines = child.stderr().trimEnd().split('\n')
  assert.equal(lines.length, 1, child.stderr().slice(0, 500))
  assert.match(lines[0] ?? '', /^keygate: API_KEYS_FILE .*keys\[0\] \(id "k0"\): unknown field "hash".*\(and \d+ more problems\)$/)
})

test('startup warns, one line each, about expired, soon-expiring and plain-text keys, and logs its settings without secrets', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  const soon = new Date(Date.now() + 5 * 86_400_000).toISOString()
  writeFileSync(file, keysJson(
    hashed('fine', KEY_A),
    { id: 'old', sha256: sha256('old-key-value'), expiresAt: '2020-01-01T00:00:00Z' },
    { id: 'soon', sha256: sha256(KEY_B), expiresAt: soon },
    { id: 'plain', key: KEY_C },
  ))
  const { child } = await startServerProcess(t, { API_KEYS_FILE: file, API_KEY: ENV_KEY, TRUST_PROXY: '1', AUTH_FAIL_LIMIT: '7' })
  const warnings = logLines(child).filter((line) => line.level === 'warn').map((line) => String(line.msg))
  assert.equal(warnings.length, 3, warnings.join('\n'))
  assert.match(warnings[0] ?? '', /1 expired key\(s\), refused: old$/)
  assert.match(warnings[1] ?? '', /1 key\(s\) expire within 30 days: soon$/)
  assert.match(warnings[2] ?? '', /1 plain-text key\(s\), use sha256 instead: plain$/)
  const settings = logLines(child).filter((line) => line.msg === 'settings')
  assert.equal(settings.length, 1)
  assert.equal(settings[0]?.keys, `file ${file} + API_KEY`)
  assert.equal(settings[0]?.throttle, '7 failures per 60 s, 100000 clients tracked')
  assert.equal(settings[0]?.trustProxy, 1)
  assert.equal(settings[0]?.workers, 1)
  assertNoKeyMaterial(child)
})

test('startup warns about a keys file without keys', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  writeFileSync(file, keysJson())
  const { child } = await startServerProcess(t, { API_KEYS_FILE: file, API_KEY: ENV_KEY })
  assert.ok(logLines(child).some((line) => line.level === 'warn' && /has no keys/.test(String(line.msg))))
})

test('a reload that keeps a key with its rate limit keeps its state; a changed limit starts afresh', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  const limited = { id: 'metered', sha256: sha256(KEY_A), rateLimit: { limit: 1, windowS: 60, burst: 2 } }
  writeFileSync(file, JSON.stringify({ keys: [limited] }))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  assert.deepEqual([await statusWith(url, KEY_A), await statusWith(url, KEY_A)], [200, 200])
  replaceFile(file, JSON.stringify({ keys: [limited, hashed('b', KEY_B)] }))
  await waitForLog(child, 'keys reloaded')
  assert.equal(await statusWith(url, KEY_A), 429, 'the burst used before the reload is still used')
  replaceFile(file, JSON.stringify({ keys: [{ ...limited, rateLimit: { limit: 1, windowS: 60, burst: 3 } }] }))
  await waitForLog(child, 'keys reloaded', 2)
  assert.equal(await statusWith(url, KEY_A), 200, 'a new limit is a new state')
})

test('a reload of a big file keeps what did not change and swaps in what did, under requests; rate limits keep their state', async (t) => {
  const file = join(tempDir(t), 'keys.json')
  // 70,000 keys: above the size from which a reload keeps unchanged rows instead of building anew.
  const others = Array.from({ length: 70_000 }, (_, i) => hashed(`client-${i}`, `other-key-${i}`))
  const limited = { id: 'metered', sha256: sha256(KEY_A), rateLimit: { limit: 1, windowS: 60, burst: 2 } }
  writeFileSync(file, JSON.stringify({ keys: [...others, limited, hashed('b', KEY_B)] }))
  const { child, url } = await startServerProcess(t, { API_KEYS_FILE: file })
  assert.deepEqual([await statusWith(url, KEY_A), await statusWith(url, KEY_A)], [200, 200])
  let stop = false
  const failures: number[] = []
  const traffic = (async () => {
    for (let i = 0; i < 10_000 && !stop; i++) {
      const status = await statusWith(url, 'other-key-69999')
      if (status !== 200) failures.push(status)
    }
  })()
  // Rotate b's key, revoke client-5, add one: the rest stays as it was.
  replaceFile(file, JSON.stringify({ keys: [...others.filter((entry) => entry.id !== 'client-5'), limited, hashed('b', KEY_C), hashed('new', ENV_KEY)] }))
  const line = await waitForLog(child, 'keys reloaded')
  stop = true
  await traffic
  assert.equal(line.keys, 70_002)
  assert.deepEqual(failures, [])
  assert.equal(await statusWith(url, KEY_C), 200)
  assert.equal(await statusWith(url, KEY_B), 401)
  assert.equal(await statusWith(url, ENV_KEY), 200)
  assert.equal(await statusWith(url, 'other-key-5'), 401)
  assert.equal(await statusWith(url, 'other-key-6'), 200)
  assert.equal(await statusWith(url, KEY_A), 429, 'a kept key keeps its rate limit state')
})
