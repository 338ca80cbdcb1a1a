import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { test, type TestContext } from 'node:test'
import { freePort, listen, logLines, startServerProcess, waitFor, type Child } from './helpers.js'

const KEY = 'gateway-key-0123456789abcdef'
const example = (name: string) => readFileSync(fileURLToPath(new URL(`../examples/${name}`, import.meta.url)), 'utf8')
const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0
const NGINX = has('nginx') || 'nginx is not installed: apt-get install nginx-light'
const CADDY = has('caddy') || 'caddy is not installed: apt-get install caddy'

interface Gateway {
  proxy: string
  keygate: Child
  /** Headers the upstream received, one entry per request that reached it. */
  seen: Array<Record<string, string | string[] | undefined>>
}

const SCOPED_KEY = 'gateway-scoped-key-0123456789'
const LIMITED_KEY = 'gateway-limited-key-0123456789'

async function startBackends(t: TestContext, env: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-gateway-keys-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const keysFile = join(dir, 'keys.json')
  writeFileSync(keysFile, JSON.stringify({ public: ['GET /status'], keys: [
    { id: 'billing', key: SCOPED_KEY, allow: ['GET /orders/**'] },
    { id: 'metered', key: LIMITED_KEY, rateLimit: { limit: 1, windowS: 60, burst: 2 } },
  ] }))
  const { child: keygate, url } = await startServerProcess(t, { API_KEY: KEY, API_KEYS_FILE: keysFile, TRUST_PROXY: '1', AUTH_FAIL_LIMIT: '3', ...env })
  const seen: Gateway['seen'] = []
  const upstream = await listen(t, (req, res) => {
    seen.push(req.headers)
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"from":"upstream"}')
  })
  return { keygate, keygatePort: Number(new URL(url).port), upstreamPort: Number(new URL(upstream.url).port), seen }
}

/** Runs a proxy in the foreground, stopped by its PID after the test; resolves when it answers. */
async function runProxy(t: TestContext, command: string, args: string[], proxy: string, env: Record<string, string> = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '', ...env } })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  child.stderr.on('data', (chunk) => (output += chunk))
  t.after(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
  })
  await waitFor(`${command} to answer`, async () => {
    if (child.exitCode !== null) throw new Error(`${command} exited: ${output}`)
    return fetch(`${proxy}/`).then((res) => res.arrayBuffer().then(() => true), () => undefined)
  })
}

async function startNginx(t: TestContext, env: Record<string, string> = {}): Promise<Gateway> {
  const { keygate, keygatePort, upstreamPort, seen } = await startBackends(t, env)
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'keygate-nginx-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const site = example('nginx.conf')
    .replace('server 127.0.0.1:3000;', `server 127.0.0.1:${keygatePort};`)
    .replace('server 127.0.0.1:8080;', `server 127.0.0.1:${upstreamPort};`)
    .replace('listen 80;', `listen 127.0.0.1:${port};`)
  writeFileSync(join(dir, 'site.conf'), site)
  writeFileSync(join(dir, 'nginx.conf'), [
    'daemon off;', 'master_process off;', `pid ${dir}/nginx.pid;`, `error_log ${dir}/error.log warn;`,
    'events { worker_connections 256; }',
    `http { access_log off; client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;`,
    `  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
    `  include ${dir}/site.conf; }`,
  ].join('\n'))
  const proxy = `http://127.0.0.1:${port}`
  await runProxy(t, 'nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], proxy)
  seen.length = 0
  return { proxy, keygate, seen }
}

async function startCaddy(t: TestContext): Promise<Gateway> {
  const { keygate, keygatePort, upstreamPort, seen } = await startBackends(t)
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'keygate-caddy-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  // The example as written; the environment turns its admin endpoint off and binds it to loopback.
  writeFileSync(join(dir, 'Caddyfile'), example('Caddyfile'))
  const proxy = `http://127.0.0.1:${port}`
  await runProxy(t, 'caddy', ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], proxy, {
    HOME: dir,
    XDG_DATA_HOME: dir,
    XDG_CONFIG_HOME: dir,
    KEYGATE_SITE: `http://127.0.0.1:${port}`,
    KEYGATE_BIND: '127.0.0.1',
    CADDY_ADMIN: 'off',
    KEYGATE_ADDRESS: `127.0.0.1:${keygatePort}`,
    APP_ADDRESS: `127.0.0.1:${upstreamPort}`,
  })
  seen.length = 0
  return { proxy, keygate, seen }
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers })
  return { status: res.status, headers: res.headers, body: await res.text() }
}

for (const [name, start, skip] of [['nginx', startNginx, NGINX], ['Caddy', startCaddy, CADDY]] as const) {
  test(`behind ${name}: keygate decides, the upstream never sees a key`, { skip: skip === true ? false : skip }, async (t) => {
    const { proxy, keygate, seen } = await start(t)

    await t.test('no key: 401 with the Bearer challenge, and the upstream is not reached', async () => {
      const res = await get(`${proxy}/orders?page=2`)
      assert.equal(res.status, 401)
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="keygate"')
      assert.deepEqual(JSON.parse(res.body), { error: 'Unauthorized' })
      assert.equal(seen.length, 0)
    })

    await t.test('a wrong key: 401 invalid_token', async () => {
      const res = await get(`${proxy}/orders`, { authorization: 'Bearer wrong-key' })
      assert.equal(res.status, 401)
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="keygate", error="invalid_token"')
      assert.equal(seen.length, 0)
    })

    await t.test('a valid key: the upstream answers, knows the key id and sees no credential', async () => {
      for (const headers of [{ authorization: `Bearer ${KEY}` }, { authorization: KEY }, { 'x-api-key': KEY }] as Record<string, string>[]) {
        const res = await get(`${proxy}/orders/7?secret=query-value`, { ...headers, 'x-keygate-key-id': 'forged' })
        assert.equal(res.status, 200)
        assert.equal(res.body, '{"from":"upstream"}')
      }
      assert.equal(seen.length, 3)
      for (const headers of seen) {
        assert.equal(headers['x-keygate-key-id'], 'env')
        assert.equal(headers.authorization, undefined)
        assert.equal(headers['x-api-key'], undefined)
      }
    })

    await t.test('a scoped key reaches what it may, and gets 403 insufficient_scope elsewhere', async () => {
      seen.length = 0
      const allowed = await get(`${proxy}/orders/7`, { authorization: `Bearer ${SCOPED_KEY}` })
      assert.equal(allowed.status, 200)
      assert.equal(seen[0]?.['x-keygate-key-id'], 'billing')
      const refused = await get(`${proxy}/admin`, { authorization: `Bearer ${SCOPED_KEY}` })
      assert.equal(refused.status, 403)
      assert.deepEqual(JSON.parse(refused.body), { error: 'Forbidden' })
      assert.equal(refused.headers.get('www-authenticate'), 'Bearer realm="keygate", error="insufficient_scope"')
      assert.equal(seen.length, 1, 'the refused request never reached the upstream')
    })

    await t.test('a public path passes without a key, and the upstream gets no key id, not even a forged one', async () => {
      seen.length = 0
      const res = await get(`${proxy}/status`, { 'x-keygate-key-id': 'forged', 'x_keygate_key_id': 'forged' })
      assert.equal(res.status, 200)
      assert.equal(seen.length, 1)
      assert.equal(seen[0]?.['x-keygate-key-id'], undefined)
      assert.deepEqual(Object.keys(seen[0] ?? {}).filter((name) => name.includes('_')), [], 'no underscore spelling either (CGI-style services read it as the key id)')
      assert.equal((await get(`${proxy}/status/more`)).status, 401)
    })

    await t.test('a client naming another original request (either header family) cannot move the check', async () => {
      seen.length = 0
      for (const family of [['x-original-method', 'x-original-uri'], ['x-forwarded-method', 'x-forwarded-uri']] as const) {
        const [method, uri] = family
        const open = await get(`${proxy}/users/admin`, { [method]: 'GET', [uri]: '/status' })
        assert.equal(open.status, 401, `${uri}: the public path named by the client is not the request`)
        const scoped = await get(`${proxy}/admin`, { authorization: `Bearer ${SCOPED_KEY}`, [method]: 'GET', [uri]: '/orders/7' })
        assert.equal(scoped.status, 403, `${uri}: the scoped key stays in its scope`)
      }
      assert.equal(seen.length, 0)
    })

    await t.test('an encoded slash in the path is refused with 400 before any key or rule', async () => {
      seen.length = 0
      const res = await get(`${proxy}/orders%2F..%2Fadmin`, { authorization: `Bearer ${SCOPED_KEY}` })
      assert.equal(res.status, 400)
      assert.deepEqual(JSON.parse(res.body), { error: 'Bad Request' })
      assert.equal(seen.length, 0)
    })

    await t.test('a rate-limited key gets its burst, then 429 with Retry-After and the RateLimit headers', async () => {
      const answers = [await get(`${proxy}/orders`, { authorization: LIMITED_KEY }), await get(`${proxy}/orders`, { authorization: LIMITED_KEY })]
      assert.deepEqual(answers.map((a) => a.status), [200, 200])
      const refused = await get(`${proxy}/orders`, { authorization: LIMITED_KEY })
      assert.equal(refused.status, 429)
      assert.deepEqual(JSON.parse(refused.body), { error: 'Too Many Requests' })
      assert.equal(refused.headers.get('retry-after'), '60')
      assert.equal(refused.headers.get('ratelimit-policy'), '"key";q=1;w=60')
      assert.equal(refused.headers.get('ratelimit'), '"key";r=0;t=120')
    })

    await t.test("keygate's /healthz is not reachable through the proxy without a key", async () => {
      const res = await get(`${proxy}/healthz`)
      assert.equal(res.status, 401)
    })

    await t.test('the access log has the original method and path, never the query or key', async () => {
      const lines = await waitFor('auth lines', () => {
        const auth = logLines(keygate).filter((line) => line.path === '/auth' && line.status === 204)
        return auth.length >= 3 ? auth : undefined
      })
      assert.equal(lines[0]?.originalMethod, 'GET')
      assert.equal(lines[0]?.originalPath, '/orders/7')
      assert.equal(lines[0]?.client, '127.0.0.1')
      assert.ok(!keygate.stdout().includes('query-value') && !keygate.stdout().includes(KEY))
    })

    await t.test('a throttled client gets 429 with Retry-After; a forged X-Forwarded-For does not help', async () => {
      // AUTH_FAIL_LIMIT=3, and the wrong key above counted already: forged addresses change nothing.
      const statuses: number[] = []
      for (let i = 0; i < 3; i++) {
        statuses.push((await get(`${proxy}/`, { authorization: 'guess', 'x-forwarded-for': `203.0.113.${i}` })).status)
      }
      assert.deepEqual(statuses, [401, 401, 429])
      const res = await get(`${proxy}/`, { authorization: `Bearer ${KEY}`, 'x-forwarded-for': '203.0.113.99' })
      assert.equal(res.status, 429)
      assert.ok(Number(res.headers.get('retry-after')) >= 1)
      assert.deepEqual(JSON.parse(res.body), { error: 'Too Many Requests' })
      const throttled = logLines(keygate).filter((line) => line.reason === 'throttled')
      assert.ok(throttled.every((line) => line.client === '127.0.0.1'), 'counted by the address the proxy saw')
    })
  })
}

/** Just enough YAML to check the Traefik example: block maps and lists, quoted or plain scalars. */
test('behind nginx: keygate\'s 503 (limits store away, closed mode) reaches the client with Retry-After; the service gets the Host asked for', { skip: NGINX === true ? false : NGINX }, async (t) => {
  // A Redis that never answers: every keyed request is 503 in closed mode.
  const { proxy, seen } = await startNginx(t, { REDIS_URL: `redis://127.0.0.1:${await freePort()}`, REDIS_TIMEOUT_MS: '50', LIMITS_ON_REDIS_FAILURE: 'closed' })
  const refused = await get(`${proxy}/orders/1`, { authorization: `Bearer ${KEY}` })
  assert.deepEqual([refused.status, refused.body, refused.headers.get('retry-after')], [503, '{"error":"Service Unavailable"}', '1'])
  const open = await get(`${proxy}/status`) // a public path needs no limits store
  assert.equal(open.status, 200)
  assert.equal(seen.at(-1)?.host, '127.0.0.1')
})

function parseYamlSubset(text: string): unknown {
  const lines = text.split('\n').map((raw, i) => ({ raw, n: i + 1 })).filter(({ raw }) => raw.trim() !== '' && !raw.trim().startsWith('#'))
  let index = 0
  const scalar = (value: string, n: number): string => {
    const quoted = /^"((?:[^"\\]|\\.)*)"$/.exec(value)
    if (quoted) return JSON.parse(`"${quoted[1]}"`)
    assert.ok(!/^["'[{]/.test(value) && !value.includes(': '), `line ${n}: unsupported or broken scalar ${value}`)
    return value
  }
  const block = (indent: number): unknown => {
    const first = lines[index]
    if (first === undefined) return null
    const isList = first.raw.slice(indent).startsWith('- ')
    const out: Record<string, unknown> | unknown[] = isList ? [] : {}
    while (index < lines.length) {
      const { raw, n } = lines[index] as { raw: string; n: number }
      assert.ok(!raw.includes('\t'), `line ${n}: tab`)
      const own = raw.length - raw.trimStart().length
      if (own < indent) break
      assert.equal(own, indent, `line ${n}: bad indentation`)
      index++
      if (isList) {
        assert.ok(raw.trimStart().startsWith('- '), `line ${n}: expected a list item`)
        const item = raw.trimStart().slice(2)
        const pair = /^([A-Za-z0-9_-]+): (.+)$/.exec(item)
        ;(out as unknown[]).push(pair ? { [pair[1] ?? '']: scalar(pair[2] ?? '', n) } : scalar(item, n))
        continue
      }
      const pair = /^([A-Za-z0-9_-]+):(?: (.+))?$/.exec(raw.trim())
      assert.ok(pair, `line ${n}: expected "key: value"`)
      const key = pair[1] ?? ''
      assert.ok(!(key in out), `line ${n}: duplicate key ${key}`)
      ;(out as Record<string, unknown>)[key] = pair[2] !== undefined ? scalar(pair[2], n) : block(indent + 2)
    }
    return out
  }
  return block(0)
}

test('the Traefik example parses and wires keygate as forwardAuth (syntax check only: no Traefik here)', () => {
  const config = parseYamlSubset(example('traefik.yml')) as any
  const forwardAuth = config.http.middlewares.keygate.forwardAuth
  assert.equal(forwardAuth.address, 'http://127.0.0.1:3000/auth')
  assert.deepEqual(forwardAuth.authResponseHeaders, ['X-Keygate-Key-Id'])
  assert.deepEqual(config.http.middlewares['strip-credentials'].headers.customRequestHeaders, { Authorization: '', 'X-API-Key': '' })
  assert.deepEqual(config.http.middlewares['strip-original'].headers.customRequestHeaders, { 'X-Original-Method': '', 'X-Original-URI': '' })
  assert.deepEqual(config.http.routers.app.middlewares, ['strip-original', 'keygate', 'strip-credentials'])
  assert.equal(config.http.services.app.loadBalancer.servers[0].url, 'http://127.0.0.1:8080')
})

test('examples/Caddyfile binds its admin endpoint to loopback and its site to a named interface, not to Caddy defaults', { skip: CADDY === true ? false : CADDY }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-caddy-adapt-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const adapt = (env: Record<string, string>) => {
    const result = spawnSync('caddy', ['adapt', '--config', fileURLToPath(new URL('../examples/Caddyfile', import.meta.url)), '--adapter', 'caddyfile'],
      { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH ?? '', HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir, ...env } })
    assert.equal(result.status, 0, result.stderr)
    const config = JSON.parse(result.stdout.split('\n')[0] ?? '')
    return { admin: config.admin, listen: Object.values(config.apps.http.servers as Record<string, { listen: string[] }>).flatMap((server) => server.listen) }
  }
  assert.deepEqual(adapt({}), { admin: { listen: '127.0.0.1:2019' }, listen: ['0.0.0.0:80'] })
  assert.deepEqual(adapt({ CADDY_ADMIN: 'off', KEYGATE_BIND: '127.0.0.1' }), { admin: { disabled: true }, listen: ['127.0.0.1:80'] })
})
