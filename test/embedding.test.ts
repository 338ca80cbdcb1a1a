import assert from 'node:assert/strict'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { test } from 'node:test'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  authenticate, createHandler, createKeyStore, createKeysFileStore, createLogger, createMetrics, createThrottle,
  KeysFileError, renderMetrics, THROTTLE_DEFAULTS, type KeyStore,
} from '../dist/index.js'
import { DIST_DIR, TEST_KEY, listen, startKeygate, waitFor } from './helpers.js'

const keys = createKeyStore([{ id: 'svc', key: TEST_KEY }])

test('mounted beside host routes: unmatched paths go to next(), keygate paths do not', async (t) => {
  const keygate = createHandler({ keys })
  const reachedNext: string[] = []
  const { url } = await listen(t, (req, res) => {
    keygate(req, res, () => {
      reachedNext.push(req.url ?? '')
      res.writeHead(200, { 'content-type': 'text/plain' }).end('host route')
    })
  })
  assert.equal(await (await fetch(`${url}/app/home`)).text(), 'host route')
  const refused = await fetch(`${url}/data`)
  assert.equal(refused.status, 401)
  await refused.arrayBuffer()
  const wrongMethod = await fetch(`${url}/data`, { method: 'POST' })
  assert.equal(wrongMethod.status, 405)
  await wrongMethod.arrayBuffer()
  assert.deepEqual(reachedNext, ['/app/home'])
})

/** The smallest Connect/Express-like app: middleware in order, each calling next(). */
function createApp() {
  const stack: Array<(req: IncomingMessage, res: ServerResponse, next: () => void) => void> = []
  const app = (req: IncomingMessage, res: ServerResponse) => {
    let index = 0
    const next = () => {
      const layer = stack[index++]
      if (layer) layer(req, res, next)
      else res.writeHead(404).end('app 404')
    }
    next()
  }
  app.use = (layer: (typeof stack)[number]) => stack.push(layer)
  return app
}

test('app.use(createHandler()) serves /data and falls through for other paths', async (t) => {
  const app = createApp()
  app.use(createHandler({ keys }))
  app.use((req, res, next) => (req.url === '/mine' ? res.writeHead(200).end('mine') : next()))
  const { url } = await listen(t, app)
  const data = await fetch(`${url}/data`, { headers: { 'x-api-key': TEST_KEY } })
  assert.equal(data.status, 200)
  assert.deepEqual(await data.json(), { message: 'Here is your data' })
  assert.equal(await (await fetch(`${url}/mine`)).text(), 'mine')
  const missing = await fetch(`${url}/nowhere`)
  assert.equal(missing.status, 404)
  assert.equal(await missing.text(), 'app 404')
})

test('authenticate() protects a route of the host application', async (t) => {
  const { url } = await listen(t, (req, res) => {
    const result = authenticate(keys, req)
    if (!result.ok) return void res.writeHead(403).end(result.reason)
    res.writeHead(200).end(`hello ${result.keyId}`)
  })
  assert.equal(await (await fetch(`${url}/x`, { headers: { authorization: `Bearer ${TEST_KEY}` } })).text(), 'hello svc')
  const refused = await fetch(`${url}/x`)
  assert.equal(refused.status, 403)
  assert.equal(await refused.text(), 'missing')
})

test('an exception inside a route answers 500 and the server keeps serving', async (t) => {
  let calls = 0
  const failing: KeyStore = {
    size: 1,
    lookup: (credential) => {
      calls++
      if (credential === 'boom') throw new Error('store exploded')
      return credential === TEST_KEY ? { id: 'svc', expiresAtMs: Infinity } : undefined
    },
  }
  const lines: string[] = []
  const log = createLogger({ level: 'error', write: (chunk) => lines.push(chunk) })
  const base = await startKeygate(t, { keys: failing, log })
  const res = await fetch(`${base}/data`, { headers: { authorization: 'boom' } })
  assert.equal(res.status, 500)
  assert.deepEqual(await res.json(), { error: 'Internal Server Error' })
  assert.equal(res.headers.get('cache-control'), 'no-store')
  const after = await fetch(`${base}/data`, { headers: { authorization: TEST_KEY } })
  assert.equal(after.status, 200)
  await after.arrayBuffer()
  assert.equal(calls, 2)
  log.flush()
  assert.match(lines.join(''), /"msg":"route failed".*store exploded/)
})

test('createHandler validates its options with messages naming the field', () => {
  assert.throws(() => createHandler(undefined as never), /options must be an object/)
  assert.throws(() => createHandler({} as never), /keys must be a key store/)
  assert.throws(() => createHandler({ keys, log: {} as never }), /log must be a logger/)
})

test('createHandler does not mutate its options', () => {
  const options = Object.freeze({ keys })
  createHandler(options)
  assert.deepEqual(Object.keys(options), ['keys'])
})

test('the access log has one line per request, with key id or reason, and never a key or query', async (t) => {
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(chunk) })
  const base = await startKeygate(t, { keys, log })
  for (const [path, headers] of [
    [`/data?token=${TEST_KEY}`, { authorization: TEST_KEY }],
    ['/data', { authorization: 'wrong-secret-guess' }],
    ['/data', {}],
    ['/healthz', { 'x-request-id': 'req-7' }],
  ] as const) {
    await (await fetch(`${base}${path}`, { headers })).arrayBuffer()
  }
  log.flush()
  const entries = lines.join('').trim().split('\n').map((line) => JSON.parse(line))
  assert.equal(entries.length, 4)
  assert.deepEqual(entries.map((e) => [e.msg, e.method, e.path, e.status, e.keyId, e.reason]), [
    ['request', 'GET', '/data', 200, 'svc', undefined],
    ['request', 'GET', '/data', 401, undefined, 'invalid'],
    ['request', 'GET', '/data', 401, undefined, 'missing'],
    ['request', 'GET', '/healthz', 200, undefined, undefined],
  ])
  assert.equal(entries[3].requestId, 'req-7')
  assert.equal(entries[0].client, '127.0.0.1')
  assert.equal(typeof entries[0].ms, 'number')
  const text = lines.join('')
  assert.ok(!text.includes(TEST_KEY), 'a key reached the log')
  assert.ok(!text.includes('wrong-secret-guess'), 'a presented credential reached the log')
})

test('spellings a lenient host router would take for /data never reach next(): keygate answers 404', async (t) => {
  const keygate = createHandler({ keys })
  const reachedNext: string[] = []
  const { url } = await listen(t, (req, res) => keygate(req, res, () => {
    reachedNext.push(req.url ?? '')
    res.writeHead(200).end('host route without a key')
  }))
  for (const path of ['/DATA', '/data/', '/Data?x=1', '/data//', '/%64ata', '/METRICS', '/Healthz/']) {
    const res = await fetch(`${url}${path}`)
    assert.equal(res.status, 404, path)
    assert.deepEqual(await res.json(), { error: 'Not Found' })
  }
  assert.deepEqual(reachedNext, [])
})

test('routes: built-in routes can move or be left to the host app', async (t) => {
  const keygate = createHandler({ keys, routes: { healthz: '/_keygate/healthz', metrics: false } })
  const { url } = await listen(t, (req, res) => keygate(req, res, () => res.writeHead(200).end(`host ${req.url}`)))
  assert.equal(await (await fetch(`${url}/metrics`)).text(), 'host /metrics')
  assert.equal(await (await fetch(`${url}/healthz`)).text(), 'host /healthz')
  assert.deepEqual(await (await fetch(`${url}/_keygate/healthz`)).json(), { status: 'ok' })
  assert.equal((await fetch(`${url}/data`, { headers: { authorization: TEST_KEY } })).status, 200)
})

for (const [routes, message] of [
  [{ data: 'data' }, /routes\.data must be a path/],
  [{ metrics: '/data' }, /routes\.metrics: \/data is already the path of another route/],
  [{ auth: 42 }, /routes\.auth must be a path/],
] as const) {
  test(`createHandler refuses routes ${JSON.stringify(routes)} with a TypeError naming it`, () => {
    assert.throws(() => createHandler({ keys, routes: routes as never }), { name: 'TypeError', message: message })
  })
}

test('authenticate never throws, whatever the headers hold', () => {
  const fake = (headers: unknown) => ({ headers }) as IncomingMessage
  assert.deepEqual(authenticate(keys, fake({ authorization: ['a', 'b'] })), { ok: false, reason: 'missing' })
  assert.deepEqual(authenticate(keys, fake({ authorization: 42 })), { ok: false, reason: 'missing' })
  assert.deepEqual(authenticate(keys, fake(undefined)), { ok: false, reason: 'missing' })
  assert.deepEqual(authenticate(keys, fake({ authorization: 42, 'x-api-key': TEST_KEY })), { ok: true, keyId: 'svc' })
})

test('createThrottle() has the server defaults: 20 failures per 60 s', () => {
  const throttle = createThrottle()
  for (let i = 0; i < 19; i++) throttle.recordFailure('10.0.0.1', 0)
  assert.equal(throttle.retryAfterS('10.0.0.1', 0), 0)
  throttle.recordFailure('10.0.0.1', 0)
  assert.equal(throttle.retryAfterS('10.0.0.1', 0), 60)
  assert.deepEqual(THROTTLE_DEFAULTS, { limit: 20, windowMs: 60_000, maxClients: 100_000 })
  assert.throws(() => createThrottle({ maxClients: -1 }), { name: 'TypeError', message: /maxClients/ })
})

test('the library exports what the server uses: metrics, the keys file store with reloads', async (t) => {
  const metrics = createMetrics()
  const keygate = createHandler({ keys, metrics })
  const { url } = await listen(t, keygate)
  await (await fetch(`${url}/data`)).arrayBuffer()
  assert.match(renderMetrics(metrics.snapshot()), /keygate_requests_total\{route="data",status="401"\} 1\n/)

  const dir = mkdtempSync(join(tmpdir(), 'keygate-embed-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys.json')
  writeFileSync(file, JSON.stringify({ keys: [{ id: 'one', key: 'embedded-key-one-0123' }] }))
  const store = createKeysFileStore(file)
  t.after(() => store.close())
  assert.equal(store.lookup('embedded-key-one-0123')?.id, 'one')
  writeFileSync(file, JSON.stringify({ keys: [{ id: 'two', key: 'embedded-key-two-0123' }] }))
  await waitFor('the reload', () => store.lookup('embedded-key-two-0123'))
  assert.equal(store.lookup('embedded-key-one-0123'), undefined)
  assert.throws(() => createKeysFileStore(join(dir, 'absent.json')), KeysFileError)
})

test('CommonJS can require() the package on this Node (>= 20.19)', () => {
  const script = `const k = require(${JSON.stringify(join(DIST_DIR, 'index.js'))}); console.log(typeof k.createHandler, typeof k.createKeysFileStore)`
  const result = spawnSync(process.execPath, ['--no-warnings', '-e', script], { encoding: 'utf8', timeout: 10_000 })
  assert.equal(result.stdout.trim(), 'function function', result.stderr)
})
