/**
 * The baselines keygate is measured against, each as its own process (PORT from the environment):
 *   node bare-server.js http      a bare node:http server answering the same JSON, with no auth
 *   node bare-server.js headers   the same, plus keygate's response headers (a fresh X-Request-Id too)
 *   node bare-server.js contract  the same, plus the one check the contract cannot do without: the
 *                                 SHA-256 of the Authorization header against one key's digest
 *   node bare-server.js raw       a node:net server writing a canned answer: the generator's ceiling
 */
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
} else if (process.argv[2] === 'headers' || process.argv[2] === 'contract') {
  // Loaded here, not at the top: the plain server's start-up time is a baseline too.
  const { hash } = await import('node:crypto')
  const { freshRequestId } = await import('../dist/http/respond.js')
  const headers = ['content-type', 'application/json; charset=utf-8', 'content-length', String(BODY.length),
    'cache-control', 'no-store', 'x-content-type-options', 'nosniff', 'x-request-id', '']
  const denied = '{"error":"Unauthorized"}'
  const deniedHeaders = ['content-type', 'application/json; charset=utf-8', 'content-length', String(denied.length),
    'cache-control', 'no-store', 'x-content-type-options', 'nosniff', 'www-authenticate', 'Bearer realm="keygate", error="invalid_token"', 'x-request-id', '']
  const digest = (value: string) => hash('sha256', value, 'binary')
  const keyDigest = digest(process.env.API_KEY ?? '')
  const checked = process.argv[2] === 'contract'
  createServer((req, res) => {
    if (checked && digest(req.headers.authorization ?? '') !== keyDigest) {
      deniedHeaders[11] = freshRequestId()
      res.writeHead(401, deniedHeaders)
      res.end(denied)
      return
    }
    headers[9] = freshRequestId()
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
