#!/usr/bin/env node
// npm run instructions [-- --dist ../other/dist] [--requests 3000,9000] [--paths data,proxy]
//
// Instructions per request, counted by valgrind's callgrind: no neighbour on a shared machine can
// disturb a count, where requests/s moves by 10-20 % between rounds. For each path (`GET /data`
// authorized, and the same request proxied to a service) dist/server.js runs twice under
// callgrind, once for each number of keep-alive requests; the difference over the difference in
// requests leaves start-up, compilation and exit out. A tool for developers, not part of `npm test`.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

const { values: flags } = parseArgs({ options: { dist: { type: 'string', default: 'dist' }, requests: { type: 'string', default: '3000,9000' }, paths: { type: 'string', default: 'data,proxy' } } })
const SERVER = resolve(flags.dist, 'server.js')
const [FEW, MANY] = flags.requests.split(',').map(Number)
const KEY = 'instructions-key-0123456789abcdef'
const REQUEST = `GET /data HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${KEY}\r\n\r\n`

if (spawnSync('valgrind', ['--version']).status !== 0) {
  console.error('valgrind is not installed: apt-get install valgrind')
  process.exit(2)
}

/** Total instructions (all threads) of one run of the server that answers `count` requests. */
async function countRun(env, count) {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-callgrind-'))
  const port = await freePort()
  const child = spawn('valgrind', ['-q', '--tool=callgrind', `--callgrind-out-file=${dir}/out.%p`, process.execPath, SERVER], {
    env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: String(port), API_KEY: KEY, LOG_LEVEL: 'silent', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  try {
    await connectable(port)
    await sendRequests(port, count)
    child.kill('SIGTERM')
    await once(child, 'exit')
    return readdirSync(dir).reduce((sum, file) => sum + totalOf(readFileSync(join(dir, file), 'utf8')), 0)
  } finally {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}

async function freePort() {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  await new Promise((done) => server.close(done))
  return port
}

/** Resolves once the server accepts connections, within a minute (valgrind starts node slowly). */
async function connectable(port) {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((done) => setTimeout(done, 200))) {
    const socket = connect(port, '127.0.0.1')
    const ok = await once(socket, 'connect').then(() => true, () => false)
    socket.destroy()
    if (ok) return
  }
  throw new Error(`nothing listens on ${port} after a minute`)
}

/** `count` requests on one keep-alive connection, each sent once the answer before it is complete. */
async function sendRequests(port, count) {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  let answered = 0
  let buffered = ''
  socket.write(REQUEST)
  for await (const chunk of socket) {
    buffered += chunk.toString('latin1')
    for (let end = answerEnd(buffered); end !== -1; end = answerEnd(buffered)) {
      if (!buffered.startsWith('HTTP/1.1 200')) throw new Error(`unexpected answer: ${buffered.slice(0, 200)}`)
      buffered = buffered.slice(end)
      if (++answered === count) return socket.destroy()
      socket.write(REQUEST)
    }
  }
  throw new Error(`the connection closed after ${answered} answers`)
}

function answerEnd(text) {
  const head = text.indexOf('\r\n\r\n')
  if (head === -1) return -1
  const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, head))
  const end = head + 4 + Number(length?.[1] ?? 0)
  return text.length >= end ? end : -1
}

function totalOf(callgrindOut) {
  const match = /^summary: (\d+)/m.exec(callgrindOut) ?? /^totals: (\d+)/m.exec(callgrindOut)
  return match ? Number(match[1]) : 0
}

async function perRequest(name, env) {
  const few = await countRun(env, FEW)
  const many = await countRun(env, MANY)
  const value = (many - few) / (MANY - FEW)
  console.log(`| ${name} | ${Math.round(value).toLocaleString('en')} |`)
}

const service = createServer((req, res) => res.end('{"message":"from the service"}'))
service.listen(0, '127.0.0.1')
await once(service, 'listening')
console.log(`${SERVER}, ${FEW} and ${MANY} requests\n\n| path | instructions per request |\n|---|--:|`)
const paths = flags.paths.split(',')
if (paths.includes('data')) await perRequest('GET /data, authorized', {})
if (paths.includes('proxy')) await perRequest('GET /data proxied to a service', { UPSTREAM_URL: `http://127.0.0.1:${service.address().port}` })
service.close()
