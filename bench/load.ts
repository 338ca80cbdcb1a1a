/**
 * The load generator, run as its own process so that it never shares a core's time with the
 * server it drives:
 *   node load.js PORT CONNECTIONS WARMUP_MS DURATION_MS REQUEST_BASE64 [SERVER_PIDS]
 * Each connection is a raw keep-alive socket that writes the fixed request, reads the answer by
 * its Content-Length, and writes the next. Prints one JSON line: requests/s, p50, p99, errors,
 * and, given the server's process ids (comma-separated), the CPU time they used per request.
 */
import { readFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'

const [port, connections, warmupMs, durationMs, requestBase64, serverPids = ''] = process.argv.slice(2)
const REQUEST = Buffer.from(requestBase64 ?? '', 'base64')
const HEADER_END = Buffer.from('\r\n\r\n')
const LENGTH_LOWER = Buffer.from('content-length:')
const LENGTH_TITLE = Buffer.from('Content-Length:')
// Latency histogram: 1 µs slots up to 100 ms; slower answers land in the last slot.
const latencies = new Uint32Array(100_001)
let measuring = false
let completed = 0
let errors = 0

function contentLength(head: Buffer, end: number): number {
  let at = head.indexOf(LENGTH_LOWER)
  if (at === -1 || at > end) at = head.indexOf(LENGTH_TITLE)
  if (at === -1 || at > end) return 0
  let value = 0
  for (let i = at + LENGTH_LOWER.length; i < end; i++) {
    const c = head[i] as number
    if (c >= 48 && c <= 57) value = value * 10 + c - 48
    else if (c !== 32) break
  }
  return value
}

function drive(socket: Socket): void {
  let pending: Buffer = Buffer.alloc(0)
  let sentAt = process.hrtime.bigint()
  const send = () => {
    sentAt = process.hrtime.bigint()
    socket.write(REQUEST)
  }
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    for (;;) {
      const end = pending.indexOf(HEADER_END)
      if (end === -1) return
      const total = end + 4 + contentLength(pending, end)
      if (pending.length < total) return
      pending = pending.subarray(total)
      if (measuring) {
        completed++
        const slot = Math.min(100_000, Number((process.hrtime.bigint() - sentAt) / 1000n))
        latencies[slot] = (latencies[slot] as number) + 1
      }
      send()
    }
  })
  socket.on('error', () => errors++)
  send()
}

const TICKS_PER_SECOND = 100 // USER_HZ, 100 on every Linux that matters

/**
 * User plus system CPU seconds used so far by the processes (Linux /proc; NaN elsewhere). CPU time,
 * unlike requests/s, leaves out the time a shared machine gives to others: a steadier measure.
 */
function cpuSeconds(pids: string[]): number {
  if (pids.length === 0) return NaN
  let ticks = 0
  for (const pid of pids) {
    try {
      // The command name (field 2) may hold spaces: count fields from the closing parenthesis.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
      ticks += Number(fields[11]) + Number(fields[12]) // utime, stime: fields 14 and 15 of the line
    } catch {
      return NaN
    }
  }
  return ticks / TICKS_PER_SECOND
}

function percentile(p: number): number {
  const total = latencies.reduce((sum, n) => sum + n, 0)
  let seen = 0
  for (let us = 0; us < latencies.length; us++) {
    seen += latencies[us] as number
    if (seen >= total * p) return us
  }
  return latencies.length - 1
}

const sockets = new Set<Socket>()
let measuringDone = false
/** One connection; one the server closes is replaced, so that the load stays at CONNECTIONS. */
function open(): void {
  const socket = connect(Number(port), '127.0.0.1')
  sockets.add(socket)
  socket.setNoDelay(true).once('connect', () => drive(socket))
  socket.once('close', () => {
    sockets.delete(socket)
    if (!measuringDone) open()
  })
}
for (let i = 0; i < Number(connections); i++) open()
setTimeout(() => {
  const pids = serverPids.split(',').filter((pid) => pid !== '')
  const cpuAtStart = cpuSeconds(pids)
  measuring = true
  const started = process.hrtime.bigint()
  setTimeout(() => {
    measuring = false
    measuringDone = true
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const cpuUsPerRequest = ((cpuSeconds(pids) - cpuAtStart) * 1e6) / completed
    process.stdout.write(`${JSON.stringify({ rps: completed / seconds, requests: completed, p50Us: percentile(0.5), p99Us: percentile(0.99), cpuUsPerRequest, errors })}\n`)
    for (const socket of sockets) socket.destroy()
    process.exit(0)
  }, Number(durationMs))
}, Number(warmupMs))
