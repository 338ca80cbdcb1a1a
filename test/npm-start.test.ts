/** `npm start` as Docker, systemd and supervisors run it: stopped by a signal to npm's own PID. */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { waitFor } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

test('npm start: SIGTERM to npm reaches the server, which drains and exits; only the server is built', async (t) => {
  // A copy of the project, so that this build does not rewrite the dist/ other tests are loading.
  const dir = mkdtempSync(join(tmpdir(), 'keygate-npm-start-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (const part of ['package.json', 'tsconfig.json', 'src', 'scripts']) cpSync(join(ROOT, part), join(dir, part), { recursive: true })
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
  const npm = spawn('npm', ['start'], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', HOME: dir, PORT: '0', API_KEY: 'npm-start-key-0123456789', npm_config_update_notifier: 'false' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  npm.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  npm.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const exited = new Promise<number | null>((resolve) => npm.on('close', (code) => resolve(code)))
  let serverPid: number | undefined
  t.after(() => {
    for (const pid of [npm.pid, serverPid]) if (pid !== undefined) try { process.kill(pid, 'SIGKILL') } catch {} // already gone
  })
  const lines = () => output.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>)
  const listening = await waitFor('the listening line', () => lines().find((line) => line.msg === 'listening'), 60_000)
  serverPid = listening.pid as number
  assert.notEqual(serverPid, npm.pid)
  const res = await fetch(`${listening.url}/data`, { headers: { authorization: 'npm-start-key-0123456789' } })
  assert.equal(res.status, 200)
  await res.arrayBuffer()

  npm.kill('SIGTERM')
  await exited
  assert.ok(lines().some((line) => line.msg === 'stopped' && line.signal === 'SIGTERM'), output)
  assert.throws(() => process.kill(serverPid as number, 0), { code: 'ESRCH' }, 'the server is gone, not orphaned')
  assert.ok(!output.includes('test/tsconfig.json'), 'npm start builds neither the tests nor the benchmark')
})
