/** What the benchmark's cases share: free ports, CPU pinning, first answers, /proc readings, stopping. */
import { spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect, createServer, type AddressInfo } from 'node:net'
import { cpus } from 'node:os'

export async function freePort(): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as AddressInfo
  probe.close()
  await once(probe, 'close')
  return port
}

/** Whether processes can be pinned to CPUs: two or more of them, and taskset at hand. */
export function canPin(): boolean {
  return cpus().length >= 2 && spawnSync('taskset', ['-c', '0', 'true']).status === 0
}

/** `node ARGS`, on CPU `cpu` when pinning. */
export function nodeCommand(args: string[], cpu: number | undefined, pin: boolean): [string, string[]] {
  return pin && cpu !== undefined ? ['taskset', ['-c', String(cpu), process.execPath, ...args]] : [process.execPath, args]
}

/** Sends `GET /data` on a raw socket until `status` comes back; resolves with the time since `startedAt`. */
export async function firstAnswer(port: number, headers: string, status: number, startedAt: bigint, deadlineMs = 10_000): Promise<number> {
  const request = `GET /data HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}Connection: close\r\n\r\n`
  for (const deadline = Date.now() + deadlineMs; Date.now() < deadline; ) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      let answer = ''
      socket.on('data', (chunk) => (answer += chunk))
      socket.on('error', () => resolve(false))
      socket.on('close', () => resolve(answer.startsWith(`HTTP/1.1 ${status} `)))
      // Not end(): Node aborts a request whose client half-closed before an answer that comes later
      // (a limit counted by the cluster primary or Redis) is written. The server closes (Connection: close).
      socket.write(request)
    })
    if (ok) return Number(process.hrtime.bigint() - startedAt) / 1e6
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
  throw new Error(`no ${status} on port ${port} within ${deadlineMs} ms`)
}

/** A field of /proc/PID/status in MB (VmRSS, VmHWM), or NaN where there is no /proc. */
export function statusMb(pid: number | undefined, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  try {
    return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024
  } catch {
    return NaN // not Linux
  }
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  await exited
}
