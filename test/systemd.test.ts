/** examples/keygate.service passes systemd's own check, and keeps the hardening the docs promise. */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const UNIT = fileURLToPath(new URL('../examples/keygate.service', import.meta.url))
const SYSTEMD = spawnSync('sh', ['-c', 'command -v systemd-analyze']).status === 0 || 'systemd-analyze is not installed: apt-get install systemd'

test('examples/keygate.service passes systemd-analyze verify', { skip: SYSTEMD === true ? false : SYSTEMD }, () => {
  const result = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(result.status, 0, result.stderr)
  assert.equal(result.stderr.split('\n').filter((line) => line.includes('keygate.service')).join('\n'), '', 'no warning about the unit')
})

test('the unit runs keygate as its own user, read-only, reloads with SIGHUP and restarts on failure', () => {
  const unit = readFileSync(UNIT, 'utf8')
  for (const line of ['User=keygate', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'ExecReload=/bin/kill -HUP $MAINPID', 'Restart=on-failure', 'CapabilityBoundingSet=']) {
    assert.ok(unit.split('\n').includes(line), line)
  }
})
