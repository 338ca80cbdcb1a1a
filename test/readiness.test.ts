/** /readyz: 200 when the server can serve, 503 naming what cannot; /healthz stays liveness. */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { test } from 'node:test'
import { createHandler, createKeyStore } from '../dist/index.js'
import { freePort, listen, logLines, startServerProcess, TEST_KEY, waitFor } from './helpers.js'

test('createHandler: /readyz answers what readiness says, for GET and HEAD only', async (t) => {
  const keys = createKeyStore([{ id: 't', key: TEST_KEY }])
  let problems: string[] = []
  const { url } = await listen(t, createHandler({ keys, readiness: async () => problems }))
  const ready = await fetch(`${url}/readyz`)
  assert.deepEqual([ready.status, await ready.text()], [200, '{"status":"ready"}'])
  problems = ['limits store unreachable']
  const notReady = await fetch(`${url}/readyz`)
  assert.deepEqual([notReady.status, await notReady.json()], [503, { status: 'not ready', reasons: ['limits store unreachable'] }])
  assert.equal(notReady.headers.get('retry-after'), '1')
  assert.equal((await fetch(`${url}/readyz`, { method: 'HEAD' })).status, 503)
  assert.equal((await fetch(`${url}/readyz`, { method: 'POST' })).status, 405)
  assert.equal((await fetch(`${url}/healthz`)).status, 200, 'liveness is not readiness')
  assert.throws(() => createHandler({ keys, readiness: 'yes' as never }), /createHandler\(options\): readiness must be a function/)
})

test('proxy mode: /_keygate/readyz is 503 while the service refuses connections, 200 once it accepts them', async (t) => {
  const port = await freePort()
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, UPSTREAM_URL: `http://127.0.0.1:${port}` })
  const down = await fetch(`${url}/_keygate/readyz`)
  assert.equal(down.status, 503)
  assert.deepEqual(await down.json(), { status: 'not ready', reasons: ['service unreachable (ECONNREFUSED)'] })
  const service = createServer((_req, res) => res.end('up')).listen(port, '127.0.0.1')
  t.after(() => service.close())
  await once(service, 'listening')
  const up = await fetch(`${url}/_keygate/readyz`)
  assert.deepEqual([up.status, await up.text()], [200, '{"status":"ready"}'])
})

test('a server shutting down is not ready: a kept-alive connection asking during the drain gets 503', async (t) => {
  const { url, child } = await startServerProcess(t, { API_KEY: TEST_KEY, SHUTDOWN_TIMEOUT_MS: '8000' })
  const { port } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  t.after(() => socket.destroy())
  let received = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => (received += chunk))
  const ask = 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
  socket.write(ask)
  await waitFor('the first answer', () => (received.includes('{"status":"ready"}') ? true : undefined))
  child.process.kill('SIGTERM')
  await waitFor('the shutdown to begin', () => (logLines(child).some((line) => line.msg === 'shutting down') ? true : undefined))
  socket.write(ask)
  await waitFor('the second answer', () => (received.includes('"reasons":["shutting down"]') ? true : undefined))
  assert.match(received, /HTTP\/1\.1 503 Service Unavailable\r\n/)
})
