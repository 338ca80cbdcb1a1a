import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createKeyStore } from '../dist/index.js'
import { createLogger } from '../dist/observe/log.js'
import { createThrottle, type Throttle } from '../dist/limits/throttle.js'
import { TEST_KEY, startKeygate, startServerProcess, waitFor } from './helpers.js'

const keys = createKeyStore([{ id: 't', key: TEST_KEY }])

async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { headers, method })
  const body = await res.text()
  return { status: res.status, body, headers: res.headers }
}

function throttled(limit: number, windowMs = 60_000, maxClients = 1000): Throttle {
  return createThrottle({ limit, windowMs, maxClients })
}

test('after N failures a client gets 429 with Retry-After, even with the right key', async (t) => {
  const url = await startKeygate(t, { keys, throttle: throttled(5) })
  for (let i = 0; i < 5; i++) assert.equal((await get(`${url}/data`, { authorization: `wrong-${i}` })).status, 401)
  const blocked = await get(`${url}/data`, { authorization: TEST_KEY })
  assert.equal(blocked.status, 429)
  assert.equal(blocked.body, '{"error":"Too Many Requests"}')
  assert.equal(blocked.headers.get('content-type'), 'application/json; charset=utf-8')
  const retryAfter = Number(blocked.headers.get('retry-after'))
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${retryAfter}`)
  assert.equal((await get(`${url}/auth`, { authorization: TEST_KEY }, 'POST')).status, 429)
})

test('/healthz and OPTIONS are never throttled', async (t) => {
  const url = await startKeygate(t, { keys, throttle: throttled(2) })
  for (let i = 0; i < 3; i++) await get(`${url}/data`, { authorization: 'wrong' })
  assert.equal((await get(`${url}/data`)).status, 429)
  assert.equal((await get(`${url}/healthz`)).status, 200)
  assert.equal((await get(`${url}/data`, {}, 'OPTIONS')).status, 204)
})

test('requests without any credential do not count as failures', async (t) => {
  const url = await startKeygate(t, { keys, throttle: throttled(3) })
  for (let i = 0; i < 10; i++) assert.equal((await get(`${url}/data`)).status, 401)
  assert.equal((await get(`${url}/data`, { authorization: TEST_KEY })).status, 200)
})

test('a throttled client recovers when its window ends', async (t) => {
  const url = await startKeygate(t, { keys, throttle: throttled(2, 1000) })
  await get(`${url}/data`, { authorization: 'wrong' })
  await get(`${url}/data`, { authorization: 'wrong' })
  const blocked = await get(`${url}/data`, { authorization: TEST_KEY })
  assert.equal(blocked.status, 429)
  assert.equal(blocked.headers.get('retry-after'), '1')
  const started = Date.now()
  await waitFor('the window to end', async () => ((await get(`${url}/data`, { authorization: TEST_KEY })).status === 200 ? true : undefined), 5000)
  assert.ok(Date.now() - started <= 1500, 'free again within about one window')
})

test('with TRUST_PROXY=1 forged addresses are throttled separately; without it they are one client', async (t) => {
  const proxied = await startKeygate(t, { keys, throttle: throttled(3), trustProxy: 1 })
  for (let i = 0; i < 3; i++) await get(`${proxied}/data`, { authorization: 'wrong', 'x-forwarded-for': '198.51.100.1' })
  assert.equal((await get(`${proxied}/data`, { authorization: TEST_KEY, 'x-forwarded-for': '198.51.100.1' })).status, 429)
  assert.equal((await get(`${proxied}/data`, { authorization: TEST_KEY, 'x-forwarded-for': '198.51.100.2' })).status, 200)

  const direct = await startKeygate(t, { keys, throttle: throttled(3) })
  for (let i = 0; i < 3; i++) await get(`${direct}/data`, { authorization: 'wrong', 'x-forwarded-for': `198.51.100.${i}` })
  assert.equal((await get(`${direct}/data`, { authorization: TEST_KEY, 'x-forwarded-for': '198.51.100.99' })).status, 429)
})

test('the access log says throttled, with the client address', async (t) => {
  const lines: string[] = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(chunk) })
  const url = await startKeygate(t, { keys, log, throttle: throttled(1), trustProxy: 1 })
  await get(`${url}/data`, { authorization: 'wrong', 'x-forwarded-for': '198.51.100.5' })
  await get(`${url}/data`, { authorization: TEST_KEY, 'x-forwarded-for': '198.51.100.5' })
  log.flush()
  const entries = lines.join('').trim().split('\n').map((line) => JSON.parse(line))
  assert.deepEqual(entries.map((e) => [e.status, e.reason, e.client]), [
    [401, 'invalid', '198.51.100.5'],
    [429, 'throttled', '198.51.100.5'],
  ])
})

test('20,000 failures from distinct forged addresses keep the tracked clients at the cap', async (t) => {
  const maxClients = 1000
  const throttle = throttled(5, 60_000, maxClients)
  const url = await startKeygate(t, { keys, throttle, trustProxy: 1 })
  let peak = 0
  let next = 0
  const worker = async () => {
    while (next < 20_000) {
      const i = next++
      const forged = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
      const { status } = await get(`${url}/data`, { authorization: 'guess', 'x-forwarded-for': forged })
      assert.equal(status, 401)
      peak = Math.max(peak, throttle.size)
    }
  }
  await Promise.all(Array.from({ length: 32 }, worker))
  assert.equal(throttle.size, maxClients)
  assert.equal(peak, maxClients)
  t.diagnostic(`peak tracked clients: ${peak}`)
})

test('AUTH_FAIL_LIMIT=0 disables throttling in the server', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, AUTH_FAIL_LIMIT: '0' })
  for (let i = 0; i < 30; i++) assert.equal((await get(`${url}/data`, { authorization: 'wrong' })).status, 401)
  assert.equal((await get(`${url}/data`, { authorization: TEST_KEY })).status, 200)
})

test('AUTH_FAIL_LIMIT and AUTH_FAIL_WINDOW_S configure the server throttle', async (t) => {
  const { url } = await startServerProcess(t, { API_KEY: TEST_KEY, AUTH_FAIL_LIMIT: '3', AUTH_FAIL_WINDOW_S: '30' })
  for (let i = 0; i < 3; i++) assert.equal((await get(`${url}/data`, { authorization: 'wrong' })).status, 401)
  const blocked = await get(`${url}/data`, { authorization: TEST_KEY })
  assert.equal(blocked.status, 429)
  assert.ok(Number(blocked.headers.get('retry-after')) > 1 && Number(blocked.headers.get('retry-after')) <= 30)
})
