/** The original request of a forward-auth ask: which header family, and when it cannot be trusted. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { originalRequestOf } from '../../dist/http/original-request.js'
import { createLogger } from '../../dist/index.js'
import { startKeygate, TEST_KEY, waitFor } from '../helpers.js'

for (const [name, headers, expected] of [
  ['nginx\'s family', { 'x-original-method': 'GET', 'x-original-uri': '/v1/a?q=1' }, { method: 'GET', path: '/v1/a' }],
  ['Caddy\'s and Traefik\'s family', { 'x-forwarded-method': 'POST', 'x-forwarded-uri': '/v1/%61' }, { method: 'POST', path: '/v1/a' }],
  ['both families when they agree', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/a' }, { method: 'GET', path: '/a' }],
  ['no original request', {}, undefined],
  ['a URI the other family contradicts', { 'x-original-method': 'GET', 'x-original-uri': '/status', 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/users/admin' }, { problem: 'X-Original-* and X-Forwarded-* name different requests' }],
  ['a method the other family contradicts', { 'x-original-method': 'GET', 'x-forwarded-method': 'DELETE', 'x-forwarded-uri': '/a' }, { problem: 'X-Original-* and X-Forwarded-* name different requests' }],
  ['a # in the URI', { 'x-original-method': 'GET', 'x-original-uri': '/users/admin#/avatar' }, { problem: 'a # in the URI' }],
  ['a # in the query', { 'x-original-method': 'GET', 'x-original-uri': '/a?x#y' }, { problem: 'a # in the URI' }],
  ['a method override naming another method', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-http-method-override': 'DELETE' }, { problem: 'a method override naming another method' }],
  ['a method override naming the same method', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-method-override': 'get' }, { method: 'GET', path: '/a' }],
  ['a method without a URI', { 'x-original-method': 'GET' }, { problem: 'a method without a URI (X-Original-URI or X-Forwarded-Uri)' }],
  ['a lower-case method', { 'x-original-method': 'get', 'x-original-uri': '/a' }, { problem: 'a method that is not 1 to 16 upper-case letters' }],
  ['a URI without a method', { 'x-forwarded-uri': '/a' }, { problem: 'a URI without a method (X-Original-Method or X-Forwarded-Method)' }],
  ['a method with a digit after it', { 'x-original-method': 'GET1', 'x-original-uri': '/a' }, { problem: 'a method that is not 1 to 16 upper-case letters' }],
  ['a method with a digit before it', { 'x-original-method': '1GET', 'x-original-uri': '/a' }, { problem: 'a method that is not 1 to 16 upper-case letters' }],
  ['a method of 16 letters', { 'x-original-method': 'ABCDEFGHIJKLMNOP', 'x-original-uri': '/a' }, { method: 'ABCDEFGHIJKLMNOP', path: '/a' }],
  ['a method of 17 letters', { 'x-original-method': 'ABCDEFGHIJKLMNOPQ', 'x-original-uri': '/a' }, { problem: 'a method that is not 1 to 16 upper-case letters' }],
  ['a method override padded with white space (Node cuts it; anything else is no method)', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-http-method': ' GET' }, { problem: 'a method override naming another method' }],
] as const) {
  test(`originalRequestOf: ${name}`, () => {
    const found = originalRequestOf(headers)
    const shape = found === undefined || 'problem' in found ? found : { method: found.method, path: found.path }
    assert.deepEqual(shape, expected)
  })
}

test('/auth with half an original request: 400, and the access line says what is missing', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger({ level: 'info', write: (chunk) => lines.push(...chunk.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>)) })
  const url = await startKeygate(t, { log })
  const res = await fetch(`${url}/auth`, { headers: { authorization: TEST_KEY, 'x-original-method': 'GET' } })
  assert.equal(res.status, 400)
  assert.equal(await res.text(), '{"error":"Bad Request"}')
  const line = await waitFor('the access line', () => lines.find((l) => l.path === '/auth'))
  assert.equal(line.reason, 'malformed')
  assert.equal(line.originalProblem, 'a method without a URI (X-Original-URI or X-Forwarded-Uri)')
})
