/**
 * The limit for a reverse proxy written on node:http: every request piped to UPSTREAM_URL over
 * kept-alive connections and the answer piped back, with no checks, no header rules, nothing
 * else. keygate's proxy mode is measured against it (PORT and UPSTREAM_URL from the environment).
 */
import { Agent, createServer, request } from 'node:http'

const upstream = new URL(process.env.UPSTREAM_URL ?? 'http://127.0.0.1:8080')
const agent = new Agent({ keepAlive: true })

createServer((req, res) => {
  const forward = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers)
    answer.pipe(res)
  })
  forward.on('error', () => {
    res.statusCode = 502
    res.end()
  })
  req.pipe(forward)
}).listen(Number(process.env.PORT), '127.0.0.1')

process.on('SIGTERM', () => process.exit(0))
