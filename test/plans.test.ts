/**
 * Per-key plans through a real server (the handler on port 0, its clock injected): quotas by
 * calendar period, address allowlists, earlier keys of a rotation.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { test, type TestContext } from 'node:test'
import { createGuard, createHandler, createKeyStore, createLogger, createProxy, createThrottle, parseKeysFile, type HandlerOptions, type KeyEntry } from '../dist/index.js'
import { listen, waitFor } from './helpers.js'

const KEY = 'plan-key-0123456789abcdef'
const OLD_KEY = 'plan-old-key-0123456789abcdef'
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')
const at = (iso: string) => Date.parse(iso)

interface Served {
  url: string
  /** The access line of an answer (found by its X-Request-Id). */
  lineOf(answer: Response): Promise<Record<string, unknown>>
  clock: { ms: number }
}

/** A handler over `entries` (the keys file's form), its clock at `startIso`, its access lines kept. */
async function serve(t: TestContext, entries: unknown[], startIso: string, options: Partial<HandlerOptions> = {}, defaults?: unknown): Promise<Served> {
  const clock = { ms: at(startIso) }
  let written = ''
  const log = createLogger({ level: 'info', write: (chunk: string) => void (written += chunk) })
  const { store: keys } = parseKeysFile(JSON.stringify({ keys: entries, ...(defaults !== undefined && { defaults }) }), 'keys.json')
  const { url } = await listen(t, createHandler({ keys, log, now: () => clock.ms, ...options }))
  const lineOf = (answer: Response) =>
    waitFor('the access line', () => {
      log.flush()
      const lines = written.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)
      return lines.find((line) => line.requestId === answer.headers.get('x-request-id'))
    })
  return { url, lineOf, clock }
}

const get = (url: string, key: string, headers: Record<string, string> = {}) => fetch(`${url}/data`, { headers: { authorization: key, ...headers } })

async function statuses(url: string, key: string, count: number, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < count; i++) out.push((await get(url, key, headers)).status)
  return out
}

test('a daily quota: the allowed requests count, the next one is 429 until midnight UTC, then the count starts again', async (t) => {
  const { url, lineOf, clock } = await serve(t, [{ id: 'q', sha256: sha256(KEY), quota: { limit: 3, period: 'day' } }], '2026-12-06T23:59:00Z')
  const first = await get(url, KEY)
  assert.equal(first.status, 200)
  assert.equal(first.headers.get('ratelimit-policy'), '"quota";q=3;w=86400')
  assert.equal(first.headers.get('ratelimit'), '"quota";r=2;t=60')
  assert.deepEqual(await statuses(url, KEY, 3), [200, 200, 429])
  const refused = await get(url, KEY)
  assert.equal(refused.status, 429)
  assert.deepEqual(await refused.json(), { error: 'Too Many Requests' })
  assert.equal(refused.headers.get('retry-after'), '60')
  assert.equal(refused.headers.get('ratelimit'), '"quota";r=0;t=60')
  const line = await lineOf(refused)
  assert.deepEqual([line.reason, line.keyId, line.status], ['quota_exceeded', 'q', 429])
  clock.ms = at('2026-12-06T23:59:59.999Z')
  assert.equal((await get(url, KEY)).status, 429, 'still the same day')
  clock.ms = at('2026-12-07T00:00:00Z')
  const next = await get(url, KEY)
  assert.equal(next.status, 200)
  assert.equal(next.headers.get('ratelimit'), '"quota";r=2;t=86400')
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: KEY } })).text()
  assert.match(metrics, /keygate_auth_failures_total\{reason="quota_exceeded"\} 3/)
})

test('periods follow the UTC calendar: an hour, an ISO week from Monday, a month of its own length', async (t) => {
  const entries = [
    { id: 'hour', key: 'hour-key-0123456789', quota: { limit: 1, period: 'hour' } },
    { id: 'week', key: 'week-key-0123456789', quota: { limit: 1, period: 'week' } },
    { id: 'month', key: 'month-key-0123456789', quota: { limit: 1, period: 'month' } },
  ]
  // Sunday 2027-01-31 23:30: the hour, the week (from Monday the 25th) and January all end at midnight.
  const { url, clock } = await serve(t, entries, '2027-01-31T23:30:00Z')
  const week = await get(url, 'week-key-0123456789')
  assert.equal(week.headers.get('ratelimit-policy'), '"quota";q=1;w=604800')
  assert.equal(week.headers.get('ratelimit'), '"quota";r=0;t=1800')
  const month = await get(url, 'month-key-0123456789')
  assert.equal(month.headers.get('ratelimit-policy'), '"quota";q=1;w=2678400', 'January has 31 days')
  assert.deepEqual(await statuses(url, 'hour-key-0123456789', 2), [200, 429])
  assert.deepEqual([(await get(url, 'week-key-0123456789')).status, (await get(url, 'month-key-0123456789')).status], [429, 429])
  clock.ms = at('2027-02-01T00:00:00Z') // Monday, and February
  assert.deepEqual(await statuses(url, 'hour-key-0123456789', 1), [200])
  assert.deepEqual(await statuses(url, 'week-key-0123456789', 1), [200])
  const february = await get(url, 'month-key-0123456789')
  assert.equal(february.status, 200)
  assert.equal(february.headers.get('ratelimit-policy'), '"quota";q=1;w=2419200', 'February 2027 has 28 days')
  clock.ms = at('2027-02-07T23:59:59Z') // Sunday: the same ISO week
  assert.equal((await get(url, 'week-key-0123456789')).status, 429)
})

test('refused requests never count: a 403 for the scope, a 429 for the rate limit, a 403 for the address, a 401', async (t) => {
  const entry = { id: 'q', sha256: sha256(KEY), allow: ['GET /data'], rateLimit: { limit: 1, windowS: 60, burst: 1 }, quota: { limit: 2, period: 'month' } }
  const { url, clock } = await serve(t, [{ ...entry, ips: ['127.0.0.0/8', '203.0.113.0/24'] }], '2026-12-06T12:00:00Z', { trustProxy: 1 })
  const forbidden = () => fetch(`${url}/auth`, { headers: { authorization: KEY, 'x-original-method': 'GET', 'x-original-uri': '/admin' } })
  assert.equal((await forbidden()).status, 403)
  assert.equal((await get(url, KEY, { 'x-forwarded-for': '198.51.100.1' })).status, 403, 'an address outside the list')
  assert.equal((await get(url, KEY)).status, 200) // the first of the quota
  assert.equal((await get(url, KEY)).status, 429, 'the rate limit refuses: the quota does not count it')
  assert.equal((await forbidden()).status, 403)
  clock.ms += 60_000
  const second = await get(url, KEY)
  assert.equal(second.status, 200)
  assert.equal(second.headers.get('ratelimit'), '"key";r=0;t=60, "quota";r=0;t=2203140', 'as close to refusing: the key limit first')
  clock.ms += 60_000
  const third = await get(url, KEY)
  assert.equal(third.status, 429)
  assert.equal(third.headers.get('retry-after'), '2203080', 'until the month ends')
})

test('both policies in the RateLimit fields, the one closer to refusing first', async (t) => {
  const entries = [
    { id: 'q', sha256: sha256(KEY), rateLimit: { limit: 10, windowS: 1 }, quota: { limit: 10000, period: 'month' } },
    { id: 'low', key: 'low-key-0123456789', rateLimit: { limit: 10, windowS: 1 }, quota: { limit: 2, period: 'month' } },
  ]
  const { url } = await serve(t, entries, '2026-12-01T00:00:00Z')
  const answer = await get(url, KEY)
  assert.equal(answer.headers.get('ratelimit-policy'), '"key";q=10;w=1, "quota";q=10000;w=2678400')
  assert.equal(answer.headers.get('ratelimit'), '"key";r=9;t=1, "quota";r=9999;t=2678400')
  const low = await get(url, 'low-key-0123456789')
  assert.equal(low.headers.get('ratelimit'), '"quota";r=1;t=2678400, "key";r=9;t=1')
})

test('a quota in defaults applies to every entry without its own; null means none, and costs no header', async (t) => {
  const entries = [{ id: 'a', key: 'default-key-0123456789' }, { id: 'free', key: 'free-key-0123456789', quota: null }]
  const { url } = await serve(t, entries, '2026-12-06T12:00:00Z', {}, { quota: { limit: 1, period: 'day' } })
  assert.deepEqual(await statuses(url, 'default-key-0123456789', 2), [200, 429])
  const free = await get(url, 'free-key-0123456789')
  assert.equal(free.status, 200)
  assert.equal(free.headers.get('ratelimit-policy'), null)
  assert.equal(free.headers.get('ratelimit'), null)
})

test('quotas count at decision time on /auth and for the guard of an app route', async (t) => {
  const { url } = await serve(t, [{ id: 'q', sha256: sha256(KEY), quota: { limit: 1, period: 'day' } }], '2026-12-06T12:00:00Z')
  const ask = () => fetch(`${url}/auth`, { headers: { authorization: KEY, 'x-original-method': 'GET', 'x-original-uri': '/reports' } })
  const allowed = await ask()
  assert.equal(allowed.status, 204)
  assert.equal(allowed.headers.get('ratelimit'), '"quota";r=0;t=43200')
  assert.equal((await ask()).status, 429)
})

test('address allowlists: IPv4, IPv6, IPv4-mapped IPv6 and X-Forwarded-For only with TRUST_PROXY; 403 is no failed attempt', async (t) => {
  const entries = [
    { id: 'v4', key: 'v4-key-0123456789', ips: ['203.0.113.0/24', '198.51.100.7'] },
    { id: 'v6', key: 'v6-key-0123456789', ips: ['2001:db8::/48'] },
    { id: 'mapped', key: 'mapped-key-0123456789', ips: ['::ffff:192.0.2.0/120'] },
  ]
  const throttle = createThrottle({ limit: 2, windowMs: 60_000 })
  const { url, lineOf } = await serve(t, entries, '2026-12-06T12:00:00Z', { trustProxy: 1, throttle })
  const from = (key: string, address: string) => get(url, key, { 'x-forwarded-for': address })
  assert.equal((await from('v4-key-0123456789', '203.0.113.77')).status, 200)
  assert.equal((await from('v4-key-0123456789', '198.51.100.7')).status, 200)
  assert.equal((await from('v4-key-0123456789', '::ffff:203.0.113.9')).status, 200, 'a mapped client address is its IPv4')
  for (let i = 0; i < 4; i++) assert.equal((await from('v4-key-0123456789', '198.51.100.8')).status, 403, 'no failed attempt: never throttled')
  const refused = await from('v4-key-0123456789', '203.0.114.1')
  assert.deepEqual(await refused.json(), { error: 'Forbidden' })
  assert.equal(refused.headers.get('www-authenticate'), null, 'no scope is missing')
  const line = await lineOf(refused)
  assert.deepEqual([line.reason, line.keyId, line.client], ['ip_not_allowed', 'v4', '203.0.114.1'])
  assert.equal((await from('v6-key-0123456789', '2001:db8:0:ffff::1')).status, 200)
  assert.equal((await from('v6-key-0123456789', '2001:0DB8::5')).status, 200, 'any spelling of the address')
  assert.equal((await from('v6-key-0123456789', '2001:db8:1::1')).status, 403)
  assert.equal((await from('v6-key-0123456789', '203.0.113.77')).status, 403)
  assert.equal((await from('mapped-key-0123456789', '192.0.2.200')).status, 200)
  assert.equal((await from('mapped-key-0123456789', '192.0.3.1')).status, 403)
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: 'v4-key-0123456789', 'x-forwarded-for': '203.0.113.1' } })).text()
  assert.match(metrics, /keygate_auth_failures_total\{reason="ip_not_allowed"\} 8/)
  assert.match(metrics, /keygate_throttle_clients 0/)
  const scrapeFromElsewhere = await fetch(`${url}/metrics`, { headers: { authorization: 'v4-key-0123456789', 'x-forwarded-for': '198.51.100.8' } })
  assert.equal(scrapeFromElsewhere.status, 403, 'the allowlist holds for a scrape too')
})

test('without TRUST_PROXY the socket peer is the address: X-Forwarded-For cannot claim an allowed one', async (t) => {
  const entries = [{ id: 'office', key: 'office-key-0123456789', ips: ['203.0.113.0/24'] }, { id: 'local', key: 'local-key-0123456789', ips: ['127.0.0.1', '::1'] }]
  const { url } = await serve(t, entries, '2026-12-06T12:00:00Z')
  assert.equal((await get(url, 'office-key-0123456789', { 'x-forwarded-for': '203.0.113.5' })).status, 403)
  assert.equal((await get(url, 'local-key-0123456789')).status, 200)
})

test('allowlists in defaults, null for any address; the check comes before the scope', async (t) => {
  const entries = [{ id: 'a', key: 'a-key-0123456789', allow: [] }, { id: 'any', key: 'any-key-0123456789', ips: null }]
  const { url, lineOf } = await serve(t, entries, '2026-12-06T12:00:00Z', {}, { ips: ['10.0.0.0/8'] })
  const refused = await get(url, 'a-key-0123456789')
  assert.equal(refused.status, 403)
  assert.equal((await lineOf(refused)).reason, 'ip_not_allowed', 'the address, not the empty scope')
  assert.equal((await get(url, 'any-key-0123456789')).status, 200)
})

test('a bad allowlist or quota is a file error naming the entry and the item', () => {
  const problemsOf = (entry: Record<string, unknown>) => {
    try {
      parseKeysFile(JSON.stringify({ keys: [{ id: 'ok', key: 'ok-key-0123456789' }, { id: 'x', key: 'x-key-0123456789', ...entry }] }), 'keys.json')
    } catch (error) {
      return (error as { problems: string[] }).problems
    }
    return []
  }
  for (const bad of ['10.0.0.0/33', '1.2.3', '2001:db8::/129', 'fe80::1%eth0', '10.0.0.0/', '10.0.0.0/8/8', '', 'localhost', '::ffff:1.2.3.4/95']) {
    assert.match(problemsOf({ ips: ['127.0.0.1', bad] })[0] ?? '', /^keys\[1\] \(id "x"\): ips\[1\]: must be an IPv4 or IPv6 address or CIDR range/, bad)
  }
  assert.match(problemsOf({ ips: '10.0.0.0/8' })[0] ?? '', /^keys\[1\] \(id "x"\): ips must be an array/)
  assert.match(problemsOf({ quota: { limit: 0, period: 'day' } })[0] ?? '', /^keys\[1\] \(id "x"\): quota.limit must be a positive integer/)
  assert.match(problemsOf({ quota: { limit: 5, period: 'year' } })[0] ?? '', /quota.period must be "hour", "day", "week" or "month"/)
  assert.match(problemsOf({ quota: { limit: 5, period: 'day', anchor: 1 } })[0] ?? '', /quota: unknown field/)
})

test('an earlier key works until its time with the same id, limits and plan; the access line and a metric say so', async (t) => {
  const entry: KeyEntry = {
    id: 'rolled', sha256: sha256(KEY), rateLimit: { limit: 1, windowS: 60, burst: 2 },
    previous: [{ sha256: sha256(OLD_KEY), until: '2026-12-07T00:00:00Z' }],
  }
  const { url, lineOf, clock } = await serve(t, [entry], '2026-12-06T12:00:00Z')
  const old = await get(url, OLD_KEY)
  assert.equal(old.status, 200)
  assert.deepEqual([(await lineOf(old)).keyId, (await lineOf(old)).previousKey], ['rolled', true])
  const current = await get(url, KEY)
  assert.equal(current.status, 200)
  assert.equal((await lineOf(current)).previousKey, undefined)
  const limited = await get(url, OLD_KEY)
  assert.equal(limited.status, 429, 'one rate limit for both keys')
  assert.deepEqual([(await lineOf(limited)).reason, (await lineOf(limited)).previousKey], ['rate_limited', true])
  clock.ms = at('2026-12-07T00:00:00Z')
  const late = await get(url, OLD_KEY)
  assert.equal(late.status, 401)
  const line = await lineOf(late)
  assert.deepEqual([line.reason, line.keyId, line.previousKey], ['expired', 'rolled', true])
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: KEY } })).text()
  assert.match(metrics, /keygate_previous_key_requests_total 3/)
})

test('an earlier key that is a current key, or is another entry\'s earlier key too, is a file error', () => {
  const problemsOf = (keys: unknown[]) => {
    try {
      parseKeysFile(JSON.stringify({ keys }), 'keys.json')
    } catch (error) {
      return (error as { problems: string[] }).problems
    }
    return []
  }
  const previous = [{ sha256: sha256(OLD_KEY), until: '2027-01-01T00:00:00Z' }]
  assert.deepEqual(problemsOf([{ id: 'a', sha256: sha256(KEY), previous }, { id: 'b', key: OLD_KEY }]), ['keys[0] (id "a"): an earlier key (previous) is the key of entry "b"'])
  assert.deepEqual(problemsOf([{ id: 'a', sha256: sha256(KEY), previous }, { id: 'b', key: 'b-key-0123456789', previous }]), ['keys[1] (id "b"): previous[0] is an earlier key of entry "a" too'])
  assert.match(problemsOf([{ id: 'a', key: KEY, previous: [{ sha256: 'ab', until: '2027-01-01' }] }])[0] ?? '', /^keys\[0\] \(id "a"\): previous\[0\]\.sha256 must be 64 lowercase hex/)
  assert.match(problemsOf([{ id: 'a', key: KEY, previous: [{ sha256: sha256(OLD_KEY), until: '2027-02-30' }] }])[0] ?? '', /previous\[0\]\.until must be an ISO-8601 date/)
  assert.match(problemsOf([{ id: 'a', key: KEY, previous: [{ sha256: sha256(OLD_KEY), until: '2027-01-01', key: OLD_KEY }] }])[0] ?? '', /previous\[0\]: unknown field/)
  assert.ok(problemsOf([{ id: 'a', key: KEY, previous: [{ sha256: sha256(OLD_KEY), until: '2027-01-01', key: OLD_KEY }] }]).every((problem) => !problem.includes(OLD_KEY)))
})

test('createKeyStore takes the plan fields too: an embedding app gets the same gate', async (t) => {
  const keys = createKeyStore([{ id: 'e', key: KEY, quota: { limit: 1, period: 'hour' }, ips: ['127.0.0.1'], previous: [{ sha256: sha256(OLD_KEY), until: new Date(Date.now() + 60_000) }] }])
  const { url } = await listen(t, createHandler({ keys }))
  assert.equal((await get(url, OLD_KEY)).status, 200)
  assert.equal((await get(url, KEY)).status, 429, 'one quota for the entry')
})

test('proxy mode: a request past its quota or from another address never reaches the service; the quota counts at decision time', async (t) => {
  let reached = 0
  const service = await listen(t, (_req, res) => {
    reached++
    res.end('from the service')
  })
  const entries = [{ id: 'p', sha256: sha256(KEY), quota: { limit: 2, period: 'day' }, ips: ['127.0.0.1'] }]
  const { store: keys } = parseKeysFile(JSON.stringify({ keys: entries }), 'keys.json')
  const { url } = await listen(t, createHandler({ keys, trustProxy: 1, proxy: createProxy({ upstream: new URL(service.url) }) }))
  const call = (headers: Record<string, string> = {}) => fetch(`${url}/v1/items`, { headers: { authorization: KEY, ...headers } })
  assert.equal((await call({ 'x-forwarded-for': '198.51.100.1' })).status, 403)
  assert.equal(reached, 0)
  const first = await call()
  assert.equal(first.status, 200)
  assert.equal(first.headers.get('ratelimit-policy'), '"quota";q=2;w=86400')
  assert.deepEqual([(await call()).status, (await call()).status], [200, 429])
  assert.equal(reached, 2)
})

test('the guard of an app route: the same quota and allowlist before the app runs', async (t) => {
  let reached = 0
  const guard = createGuard({ keys: createKeyStore([{ id: 'g', key: KEY, quota: { limit: 1, period: 'hour' }, ips: ['127.0.0.0/8'] }]) })
  t.after(() => guard.close())
  const { url } = await listen(t, (req, res) => guard(req, res, () => {
    reached++
    res.end('app')
  }))
  const call = () => fetch(`${url}/app/things`, { headers: { authorization: KEY } })
  assert.deepEqual([(await call()).status, (await call()).status], [200, 429])
  assert.equal(reached, 1)
})
