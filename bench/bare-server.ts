/**
 * The baselines keygate is measured against, each as its own process (PORT from the environment):
 *   node bare-server.js http      a bare node:http server answering the same JSON, with no auth
 *   node bare-server.js headers   the same, plus keygate's response headers (a fresh X-Request-Id too)
 *   node bare-server.js raw       a node:net server writing a canned answer: the generator's ceiling
 */
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { createServer as createNetServer } from 'node:net'

const BODY = '{"message":"Here is your data"}'
const port = Number(process.env.PORT)

if (process.argv[2] === 'raw') {
  const answer = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${BODY.length}\r\n\r\n${BODY}`)
  const REQUEST_END = Buffer.from('\r\n\r\n')
  createNetServer((socket) => {
    socket.setNoDelay(true)
    // The generator sends one small request and waits for its answer: each chunk holds whole requests.
    socket.on('data', (chunk: Buffer) => {
      for (let at = chunk.indexOf(REQUEST_END); at !== -1; at = chunk.indexOf(REQUEST_END, at + 4)) socket.write(answer)
    })
    socket.on('error', () => {})
  }).listen(port, '127.0.0.1')
} else if (process.argv[2] === 'headers') {
  const headers = ['content-type', 'application/json; charset=utf-8', 'content-length', String(BODY.length),
    'cache-control', 'no-store', 'x-content-type-options', 'nosniff', 'x-request-id', '']
  createServer((_req, res) => {
    headers[9] = randomUUID()
    res.writeHead(200, headers)
    res.end(BODY)
  }).listen(port, '127.0.0.1')
} else {
  createServer((_req, res) => {
    // The idiomatic minimal server: a string body, sent with the head in one write.
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': BODY.length })
    res.end(BODY)
  }).listen(port, '127.0.0.1')
}

// A clean exit on SIGTERM, like keygate's (and so that `node --cpu-prof` writes its profile).
process.on('SIGTERM', () => process.exit(0))
