import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ConfigError, DEMO_KEY, loadConfig, settingsOf } from '../dist/config.js'

test('defaults: port 3000 on 127.0.0.1, the demo key with a warning', () => {
  const { config, warnings } = loadConfig({})
  assert.equal(config.port, 3000)
  assert.equal(config.host, '127.0.0.1')
  assert.equal(config.apiKey, DEMO_KEY)
  assert.equal(config.demo, true)
  assert.equal(config.headersTimeoutMs, 10_000)
  assert.equal(config.requestTimeoutMs, 30_000)
  assert.equal(config.keepAliveTimeoutMs, 5_000)
  assert.equal(config.shutdownTimeoutMs, 10_000)
  assert.equal(config.logLevel, 'info')
  assert.equal(config.trustProxy, 0)
  assert.equal(config.authFailLimit, 20)
  assert.equal(config.authFailWindowS, 60)
  assert.equal(config.throttleMaxClients, 100_000)
  assert.equal(config.tls, undefined)
  assert.equal(config.workers, 1)
  assert.equal(warnings.length, 1)
  assert.match(warnings[0] ?? '', /demo key/)
})

test('reads every variable', () => {
  const { config, warnings } = loadConfig({
    PORT: '0',
    HOST: '0.0.0.0',
    API_KEY: 'a-long-enough-key-123',
    API_KEYS_FILE: '/etc/keygate/keys.json',
    HEADERS_TIMEOUT_MS: '2000',
    REQUEST_TIMEOUT_MS: '0',
    KEEP_ALIVE_TIMEOUT_MS: '1000',
    SHUTDOWN_TIMEOUT_MS: '500',
    LOG_LEVEL: 'warn',
    TRUST_PROXY: '2',
    AUTH_FAIL_LIMIT: '5',
    AUTH_FAIL_WINDOW_S: '30',
    THROTTLE_MAX_CLIENTS: '1000',
    TLS_CERT_FILE: 'cert.pem',
    TLS_KEY_FILE: 'key.pem',
    WORKERS: '3',
    REDIS_URL: 'rediss://app:s3cret@cache:6380/2',
    REDIS_PREFIX: 'gw1:',
    REDIS_TIMEOUT_MS: '100',
    LIMITS_ON_REDIS_FAILURE: 'closed',
  })
  assert.deepEqual(config, {
    port: 0,
    host: '0.0.0.0',
    apiKey: 'a-long-enough-key-123',
    keysFile: '/etc/keygate/keys.json',
    demo: false,
    headersTimeoutMs: 2000,
    requestTimeoutMs: 0,
    keepAliveTimeoutMs: 1000,
    shutdownTimeoutMs: 500,
    logLevel: 'warn',
    trustProxy: 2,
    authFailLimit: 5,
    authFailWindowS: 30,
    throttleMaxClients: 1000,
    tls: { certFile: 'cert.pem', keyFile: 'key.pem' },
    workers: 3,
    maxBodyBytes: 1048576,
    upstream: undefined,
    redis: {
      address: { host: 'cache', port: 6380, tls: true, user: 'app', password: 's3cret', db: 2 },
      prefix: 'gw1:',
      timeoutMs: 100,
      onFailure: 'closed',
    },
  })
  assert.deepEqual(warnings, [])
  const settings = JSON.stringify(settingsOf(config))
  assert.match(settings, /rediss:\/\/cache:6380\/2 prefix gw1:, timeout 100 ms, on failure closed/)
  assert.doesNotMatch(settings, /s3cret|app@/, 'the settings line shows neither user nor password')
})

test('the settings of Redis and proxy mode are checked whenever set, even with the feature off', () => {
  for (const [env, message] of [
    [{ REDIS_TIMEOUT_MS: '0' }, /^REDIS_TIMEOUT_MS must be an integer from 1/],
    [{ LIMITS_ON_REDIS_FAILURE: 'fallback' }, /^LIMITS_ON_REDIS_FAILURE must be one of local, open, closed/],
    [{ REDIS_PREFIX: 'has space' }, /^REDIS_PREFIX must be 1 to 100 visible ASCII/],
    [{ UPSTREAM_TIMEOUT_MS: 'soon' }, /^UPSTREAM_TIMEOUT_MS must be an integer from 1/],
  ] as const) {
    assert.throws(() => loadConfig({ API_KEY: 'a-long-enough-key-123', ...env }), (error: Error) => error instanceof ConfigError && message.test(error.message))
  }
  const { config } = loadConfig({ API_KEY: 'a-long-enough-key-123', REDIS_TIMEOUT_MS: '100', UPSTREAM_TIMEOUT_MS: '5000' })
  assert.equal(config.redis, undefined, 'good values without the feature: no Redis')
  assert.equal(config.upstream, undefined)
})

test('Redis settings: a bad value names the variable and never shows the password', () => {
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ REDIS_URL: 'redis://user@host' }, /^REDIS_URL has a user but no password/],
    [{ REDIS_URL: 'http://:topsecret@host' }, /^REDIS_URL must start with redis:\/\/ or rediss:\/\//],
    [{ REDIS_URL: 'redis://:topsecret@host/db7' }, /^REDIS_URL must end with an optional database number/],
    [{ REDIS_URL: 'redis://:topsecret@host', REDIS_TIMEOUT_MS: '0' }, /^REDIS_TIMEOUT_MS must be an integer from 1/],
    [{ REDIS_URL: 'redis://:topsecret@host', LIMITS_ON_REDIS_FAILURE: 'fallback' }, /^LIMITS_ON_REDIS_FAILURE must be one of local, open, closed/],
    [{ REDIS_URL: 'redis://:topsecret@host', REDIS_PREFIX: 'has space' }, /^REDIS_PREFIX must be 1 to 100 visible ASCII/],
  ]
  for (const [env, message] of bad) {
    assert.throws(() => loadConfig({ API_KEY: 'a-long-enough-key-123', ...env }), (error: Error) => {
      assert.ok(error instanceof ConfigError)
      assert.match(error.message, message)
      assert.doesNotMatch(error.message, /topsecret/)
      return true
    })
  }
  const { config } = loadConfig({ API_KEY: 'a-long-enough-key-123', REDIS_URL: 'redis://127.0.0.1' })
  assert.deepEqual({ ...config.redis, address: undefined }, { address: undefined, prefix: 'keygate:', timeoutMs: 250, onFailure: 'local' }, 'the defaults')
})

test('WORKERS=auto means one per CPU, as given by the caller', () => {
  assert.equal(loadConfig({ WORKERS: 'auto' }, 6).config.workers, 6)
})

test('a short key is accepted with a warning that does not contain it', () => {
  const { config, warnings } = loadConfig({ API_KEY: 'short-key' })
  assert.equal(config.apiKey, 'short-key')
  assert.equal(warnings.length, 1)
  assert.match(warnings[0] ?? '', /shorter than 16/)
  assert.doesNotMatch(warnings[0] ?? '', /short-key/)
})

for (const [env, variable] of [
  [{ PORT: 'abc' }, 'PORT'],
  [{ PORT: '70000' }, 'PORT'],
  [{ PORT: '-1' }, 'PORT'],
  [{ PORT: '80.5' }, 'PORT'],
  [{ HOST: 'not a host' }, 'HOST'],
  [{ API_KEY: '' }, 'API_KEY'],
  [{ API_KEY: 'has space' }, 'API_KEY'],
  [{ API_KEY: 'tab\there' }, 'API_KEY'],
  [{ API_KEY: 'k'.repeat(4097) }, 'API_KEY'],
  [{ NODE_ENV: 'production' }, 'API_KEY'],
  [{ HEADERS_TIMEOUT_MS: '-5' }, 'HEADERS_TIMEOUT_MS'],
  [{ HEADERS_TIMEOUT_MS: '0' }, 'HEADERS_TIMEOUT_MS'],
  [{ REQUEST_TIMEOUT_MS: 'soon' }, 'REQUEST_TIMEOUT_MS'],
  [{ KEEP_ALIVE_TIMEOUT_MS: '-1' }, 'KEEP_ALIVE_TIMEOUT_MS'],
  [{ KEEP_ALIVE_TIMEOUT_MS: '0' }, 'KEEP_ALIVE_TIMEOUT_MS'],
  [{ SHUTDOWN_TIMEOUT_MS: '1e3' }, 'SHUTDOWN_TIMEOUT_MS'],
  [{ HEADERS_TIMEOUT_MS: '40000' }, 'HEADERS_TIMEOUT_MS'],
  [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL'],
  [{ API_KEYS_FILE: '' }, 'API_KEYS_FILE'],
  [{ TRUST_PROXY: '-1' }, 'TRUST_PROXY'],
  [{ TRUST_PROXY: 'yes' }, 'TRUST_PROXY'],
  [{ AUTH_FAIL_LIMIT: 'many' }, 'AUTH_FAIL_LIMIT'],
  [{ AUTH_FAIL_WINDOW_S: '0' }, 'AUTH_FAIL_WINDOW_S'],
  [{ THROTTLE_MAX_CLIENTS: '0' }, 'THROTTLE_MAX_CLIENTS'],
  [{ TLS_CERT_FILE: 'cert.pem' }, 'TLS_KEY_FILE'],
  [{ TLS_KEY_FILE: 'key.pem' }, 'TLS_CERT_FILE'],
  [{ WORKERS: '-1' }, 'WORKERS'],
  [{ WORKERS: '0' }, 'WORKERS'],
  [{ WORKERS: 'all' }, 'WORKERS'],
] as const) {
  test(`${JSON.stringify(env).slice(0, 60)} is a ConfigError naming ${variable}`, () => {
    assert.throws(() => loadConfig(env), (error: unknown) => {
      assert.ok(error instanceof ConfigError)
      assert.ok(error.message.startsWith(variable), error.message)
      return true
    })
  })
}

test('a bad key is described without being echoed', () => {
  assert.throws(() => loadConfig({ API_KEY: 'my secret' }), (error: unknown) => {
    assert.ok(error instanceof ConfigError)
    assert.doesNotMatch(error.message, /my secret/)
    return true
  })
})

test('a keys file alone replaces the demo key, in production too', () => {
  const { config, warnings } = loadConfig({ NODE_ENV: 'production', API_KEYS_FILE: 'keys.json' })
  assert.equal(config.demo, false)
  assert.equal(config.apiKey, undefined)
  assert.equal(config.keysFile, 'keys.json')
  assert.deepEqual(warnings, [])
})

test('production with a real key is fine', () => {
  assert.equal(loadConfig({ NODE_ENV: 'production', API_KEY: 'k'.repeat(32) }).config.demo, false)
})
