/** A real upstream service for the proxy tests: records exactly what it received, answers as told. */
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { once } from 'node:events'

export interface Received {
  method: string
  url: string
  rawHeaders: string[]
  bodyBytes: number
}

export interface Upstream {
  url: string
  server: Server
  received: Received[]
  /** TCP connections the service accepted. */
  connections(): number
  /** Header value of the last request, by lower-case name (all values joined). */
  header(name: string, index?: number): string | undefined
}

export type Behaviour = (req: IncomingMessage, res: ServerResponse, received: Received) => void

const echo: Behaviour = (_req, res, received) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify(received))
}

/** Starts a `node:http` service on a free port of 127.0.0.1; it reads every body, then runs `behaviour`. */
export async function startUpstream(t: TestContext, behaviour: Behaviour = echo, upgrade?: (req: IncomingMessage, socket: Socket, head: Buffer) => void): Promise<Upstream> {
  const received: Received[] = []
  let connections = 0
  const server = createServer((req, res) => {
    const entry: Received = { method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, bodyBytes: 0 }
    received.push(entry)
    req.on('data', (chunk: Buffer) => (entry.bodyBytes += chunk.length))
    req.on('end', () => behaviour(req, res, entry))
  })
  server.on('connection', () => connections++)
  if (upgrade !== undefined) server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    received.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, bodyBytes: 0 })
    upgrade(req, socket, head)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    server.closeAllConnections()
    server.close()
  })
  const header = (name: string, index = received.length - 1) => {
    const raw = received[index]?.rawHeaders ?? []
    const values = raw.filter((_, i) => i % 2 === 1 && raw[i - 1]?.toLowerCase() === name)
    return values.length === 0 ? undefined : values.join(', ')
  }
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, received, connections: () => connections, header }
}

export const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/** A keys file in a temp dir, removed after the test. */
export function writeKeysFile(t: TestContext, content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-proxy-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify(content))
  return file
}
