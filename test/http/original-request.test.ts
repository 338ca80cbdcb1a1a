/** The original request of a forward-auth ask: which header family, and when it cannot be trusted. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { originalRequestOf } from '../../dist/http/original-request.js'

for (const [name, headers, expected] of [
  ['nginx\'s family', { 'x-original-method': 'GET', 'x-original-uri': '/v1/a?q=1' }, { method: 'GET', path: '/v1/a' }],
  ['Caddy\'s and Traefik\'s family', { 'x-forwarded-method': 'POST', 'x-forwarded-uri': '/v1/%61' }, { method: 'POST', path: '/v1/a' }],
  ['both families when they agree', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/a' }, { method: 'GET', path: '/a' }],
  ['no original request', {}, undefined],
  ['a URI the other family contradicts', { 'x-original-method': 'GET', 'x-original-uri': '/status', 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/users/admin' }, 'ambiguous'],
  ['a method the other family contradicts', { 'x-original-method': 'GET', 'x-forwarded-method': 'DELETE', 'x-forwarded-uri': '/a' }, 'ambiguous'],
  ['a # in the URI', { 'x-original-method': 'GET', 'x-original-uri': '/users/admin#/avatar' }, 'ambiguous'],
  ['a # in the query', { 'x-original-method': 'GET', 'x-original-uri': '/a?x#y' }, 'ambiguous'],
  ['a method override naming another method', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-http-method-override': 'DELETE' }, 'ambiguous'],
  ['a method override naming the same method', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-method-override': 'get' }, { method: 'GET', path: '/a' }],
  ['a method without a URI', { 'x-original-method': 'GET' }, 'ambiguous'],
  ['a lower-case method', { 'x-original-method': 'get', 'x-original-uri': '/a' }, 'ambiguous'],
  ['a URI without a method', { 'x-forwarded-uri': '/a' }, 'ambiguous'],
  ['a method with a digit after it', { 'x-original-method': 'GET1', 'x-original-uri': '/a' }, 'ambiguous'],
  ['a method with a digit before it', { 'x-original-method': '1GET', 'x-original-uri': '/a' }, 'ambiguous'],
  ['a method of 16 letters', { 'x-original-method': 'ABCDEFGHIJKLMNOP', 'x-original-uri': '/a' }, { method: 'ABCDEFGHIJKLMNOP', path: '/a' }],
  ['a method of 17 letters', { 'x-original-method': 'ABCDEFGHIJKLMNOPQ', 'x-original-uri': '/a' }, 'ambiguous'],
  ['a method override padded with white space (Node cuts it; anything else is no method)', { 'x-original-method': 'GET', 'x-original-uri': '/a', 'x-http-method': ' GET' }, 'ambiguous'],
] as const) {
  test(`originalRequestOf: ${name}`, () => {
    const found = originalRequestOf(headers)
    const shape = found === undefined || found === 'ambiguous' ? found : { method: found.method, path: found.path }
    assert.deepEqual(shape, expected)
  })
}
