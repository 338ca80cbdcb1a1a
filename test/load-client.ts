/**
 * A load generator for the shutdown tests, run as its own process:
 *   node load-client.js URL KEY CONNECTIONS
 * Each connection is a keep-alive socket sending GET /data back to back. It prints "flowing" once
 * requests succeed, runs until a line arrives on stdin, then prints a JSON summary: every request
 * is completed (a whole 200 response), refused (failed before it was sent) or lost (sent, then no
 * whole response).
 */
import { Agent, request } from 'node:http'

const [url = '', key = '', connections = '16'] = process.argv.slice(2)
const EXPECTED = '{"message":"Here is your data"}'
const summary = { completed: 0, refused: 0, lost: 0, connectionClose: 0, lostErrors: [] as string[] }
let stopping = false
let announced = false

function once(agent: Agent): Promise<void> {
  return new Promise((resolve) => {
    let sent = false
    let settled = false
    const settle = (outcome: 'completed' | 'refused' | 'lost', detail?: string) => {
      if (settled) return
      settled = true
      summary[outcome]++
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
      if (!sent && error.code === 'ECONNREFUSED') settle('refused')
      else settle('lost', `${error.code ?? error.message} (${sent ? 'after' : 'before'} the request was written)`)
    })
    req.end()
  })
}

async function connection(): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
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
