/**
 * A load generator for the shutdown tests, run as its own process:
 *   node load-client.js URL KEY CONNECTIONS [storm]
 * Each connection is a keep-alive socket sending GET /data back to back; with `storm`, each
 * request opens a connection of its own instead (a storm of new connections, one request each). It prints "flowing" once
 * requests succeed, runs until a line arrives on stdin, then prints a JSON summary: every request
 * is completed (a whole 200 response), refused (its connection failed before the request was
 * written to it: refused, or reset while connecting) or lost (written, then no whole response).
 * A loss on a keep-alive connection that had already served requests counts as `lost`; one on a
 * connection opened for this very request (it may never have reached the server: it can sit in
 * the kernel's accept queue as the listening socket closes) counts as `lostOnNewConnection`.
 */
import { Agent, request } from 'node:http'

const [url = '', key = '', connections = '16', mode = 'keepalive'] = process.argv.slice(2)
const EXPECTED = '{"message":"Here is your data"}'
const summary = { completed: 0, refused: 0, resetBeforeSent: 0, lost: 0, lostOnNewConnection: 0, connectionClose: 0, lostErrors: [] as string[] }
let stopping = false
let announced = false

function once(agent: Agent): Promise<void> {
  return new Promise((resolve) => {
    let sent = false
    let settled = false
    const settle = (outcome: 'completed' | 'refused' | 'lost', detail?: string) => {
      if (settled) return
      settled = true
      summary[outcome === 'lost' && !req.reusedSocket ? 'lostOnNewConnection' : outcome]++
      if (outcome === 'lost' && summary.lostErrors.length < 5) summary.lostErrors.push(detail ?? '')
      resolve()
    }
    const req = request(`${url}/data`, { agent, headers: { authorization: key } }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      res.on('end', () => {
        if (res.headers.connection === 'close') summary.connectionClose++
        if (res.statusCode === 200 && res.complete && body === EXPECTED) settle('completed')
        else settle('lost', `status ${res.statusCode}, ${body.length} bytes`)
      })
      res.on('aborted', () => settle('lost', 'response cut off'))
    })
    req.on('finish', () => (sent = true))
    req.on('error', (error: NodeJS.ErrnoException) => {
      // Not written yet: the server never received this request, and the client can safely retry it.
      if (!sent && error.code !== 'ECONNREFUSED') summary.resetBeforeSent++
      if (!sent) settle('refused')
      else settle('lost', `${error.code ?? error.message} after the request was written`)
    })
    req.end()
  })
}

async function connection(): Promise<void> {
  const agent = new Agent({ keepAlive: mode !== 'storm', maxSockets: 1 })
  while (!stopping) {
    const refusedBefore = summary.refused
    await once(agent)
    if (!announced && summary.completed >= 1000) {
      announced = true
      process.stdout.write('flowing\n')
    }
    // The server is gone: try again a little later rather than spin.
    if (summary.refused > refusedBefore) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  agent.destroy()
}

const running = Promise.all(Array.from({ length: Number(connections) }, connection))
process.stdin.once('data', async () => {
  stopping = true
  await running
  process.stdout.write(`${JSON.stringify(summary)}\n`)
  process.exit(0)
})
