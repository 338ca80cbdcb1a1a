/** A real redis-server for the tests: a free port of 127.0.0.1, no persistence, a temp dir, stopped by PID. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { freePort, waitFor } from './helpers.js'

/** `skip` for tests that need Redis: false when installed, else the package to install. */
export const REDIS = spawnSync('sh', ['-c', 'command -v redis-server && command -v redis-cli']).status === 0 || 'redis-server is not installed: apt-get install redis-server'

export interface RedisOptions {
  /** `requirepass`: the default user's password. */
  password?: string
  /** An ACL user with this password, allowed everything (the default user then needs `password` too or stays open). */
  user?: { name: string; password: string; rules?: string[] }
  /** TLS only, on this certificate pair (the plain port is turned off). */
  tls?: { certFile: string; keyFile: string }
}

export interface RedisServer {
  port: number
  readonly pid: number
  /** `redis-cli` against it (as the default user with its password); its output, trimmed. */
  cli(...args: string[]): string
  /** SIGKILL and wait for the exit: the data is gone (no persistence). */
  kill(): Promise<void>
  /** A new redis-server on the same port. */
  restart(): Promise<void>
  freeze(): void
  thaw(): void
}

export async function startRedis(t: TestContext, options: RedisOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-redis-'))
  const port = await freePort()
  let child: ChildProcess = await launch(port, dir, options)
  const exitOf = (process: ChildProcess) => (process.exitCode !== null || process.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => process.once('exit', () => resolve())))
  const server: RedisServer = {
    port,
    get pid() {
      return child.pid as number
    },
    cli(...args) {
      const auth = options.password === undefined ? [] : ['--no-auth-warning', '-a', options.password]
      const tls = options.tls === undefined ? [] : ['--tls', '--cacert', options.tls.certFile]
      const result = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...tls, ...auth, ...args], { encoding: 'utf8', timeout: 5000 })
      return result.stdout.trim()
    },
    async kill() {
      const exited = exitOf(child)
      child.kill('SIGKILL')
      await exited
    },
    async restart() {
      child = await launch(port, dir, options)
    },
    freeze: () => void child.kill('SIGSTOP'),
    thaw: () => void child.kill('SIGCONT'),
  }
  t.after(async () => {
    child.kill('SIGCONT')
    await server.kill()
    rmSync(dir, { recursive: true, force: true })
  })
  return server
}

async function launch(port: number, dir: string, options: RedisOptions): Promise<ChildProcess> {
  const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', '', '--daemonize', 'no']
  if (options.tls === undefined) args.push('--port', String(port))
  else args.push('--port', '0', '--tls-port', String(port), '--tls-cert-file', options.tls.certFile, '--tls-key-file', options.tls.keyFile, '--tls-auth-clients', 'no')
  if (options.password !== undefined) args.push('--requirepass', options.password)
  if (options.user !== undefined) args.push('--user', options.user.name, 'on', `>${options.user.password}`, ...(options.user.rules ?? ['~*', '&*', '+@all']))
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  await waitFor('redis-server to accept connections', () => {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${output}`)
    return output.includes('Ready to accept connections') ? true : undefined
  })
  return child
}
