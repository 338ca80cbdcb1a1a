/** Shared test helpers: servers on port 0, the entry point as a child process, raw sockets. */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, request, type RequestListener, type Server } from 'node:http'
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import { createHandler, type HandlerOptions } from '../dist/index.js'
import { createKeyStore } from '../dist/index.js'

export const TEST_KEY = 'test-key-0123456789abcdef'
export const SERVER_JS = fileURLToPath(new URL('../dist/server.js', import.meta.url))
export const CLI_JS = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
export const DIST_DIR = fileURLToPath(new URL('../dist/', import.meta.url))

/** A port that was free a moment ago, for a process that must be told its port before it starts. */
export async function freePort(): Promise<number> {
  const probe = createNetServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as AddressInfo
  probe.close()
  await once(probe, 'close')
  return port
}

/** Listens on 127.0.0.1 port 0, closes after the test; returns the base URL. */
export async function listen(t: TestContext, listener: RequestListener): Promise<{ url: string; server: Server }> {
  const server = createServer(listener)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    server.closeAllConnections()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

/** A keygate handler with one test key (id `t`) on a fresh server; returns the base URL. */
export async function startKeygate(t: TestContext, options: Partial<HandlerOptions> = {}): Promise<string> {
  const keys = options.keys ?? createKeyStore([{ id: 't', key: TEST_KEY }])
  return (await listen(t, createHandler({ ...options, keys }))).url
}

/**
 * Sends raw bytes on a new socket and resolves with everything the server wrote until the
 * connection ended (a reset after the answer counts as an end). Rejects after `deadlineMs`.
 */
export async function rawRequest(url: string, bytes: string | Buffer, deadlineMs = 5000, halfClose = true): Promise<string> {
  const { port } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  let timedOut = false
  socket.setTimeout(deadlineMs, () => {
    timedOut = true
    socket.destroy()
  })
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.on('error', () => {}) // EPIPE or ECONNRESET once the server has answered and closed
  // Without halfClose the request must close the connection itself (`Connection: close`): Node
  // aborts a request whose client half-closed before an answer that comes later (as nginx does).
  if (halfClose) socket.end(bytes)
  else socket.write(bytes)
  await once(socket, 'close')
  if (timedOut) throw new Error(`the server did not close the connection within ${deadlineMs} ms`)
  return Buffer.concat(chunks).toString('latin1')
}

const mutantOf = (env: NodeJS.ProcessEnv) => (env.__STRYKER_ACTIVE_MUTANT__ === undefined ? {} : { __STRYKER_ACTIVE_MUTANT__: env.__STRYKER_ACTIVE_MUTANT__ })

export interface Child {
  process: ChildProcess
  stdout: () => string
  stderr: () => string
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>
}

/** Runs `node dist/server.js` (or `script`) with `env`; killed by PID after the test if still running. */
export function runNode(t: TestContext, env: Record<string, string>, script = SERVER_JS, cwd?: string, args: string[] = []): Child {
  const child = spawn(process.execPath, [script, ...args], {
    // A mutation run (npm run mutation) names its active mutant in the environment: the child must see it too.
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', ...mutantOf(process.env), ...env },
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = new Promise<number | string>((resolve) => {
    child.on('close', (code, signal) => resolve(code ?? signal ?? 'unknown'))
  })
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
  })
  return { process: child, stdout: () => stdout, stderr: () => stderr, exited }
}

/** Polls `check` every 10 ms until it returns a value, or fails after `deadlineMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  deadlineMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + deadlineMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** The JSON log lines a child wrote so far. */
export function logLines(child: Child): Array<Record<string, unknown>> {
  return child.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)
}

/** Starts the entry point and waits for its `listening` line; returns the URL it logged. */
export async function startServerProcess(t: TestContext, env: Record<string, string>, script?: string, cwd?: string, args?: string[]) {
  const child = runNode(t, { PORT: '0', ...env }, script, cwd, args)
  const url = await waitFor('the listening line', () => {
    if (child.process.exitCode !== null) throw new Error(`server exited early: ${child.stderr()}`)
    return logLines(child).find((line) => line.msg === 'listening')?.url as string | undefined
  })
  return { child, url }
}

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/** One request on a connection of its own: round robin then spreads requests over the workers. */
export function fresh(url: string, key?: string, path = '/data'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { agent: false, headers: key === undefined ? {} : { authorization: key } }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}
