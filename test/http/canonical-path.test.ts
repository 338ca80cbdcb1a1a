import assert from 'node:assert/strict'
import { test } from 'node:test'
import { canonicalPath } from '../../dist/http/canonical-path.js'

for (const [raw, path] of [
  ['/', '/'],
  ['/data', '/data'],
  ['/v1/invoices/', '/v1/invoices/'],
  ['/v1/%61dmin', '/v1/admin'],
  ['/caf%C3%A9', '/café'],
  ['/a%25b', '/a%b'],
  ['/a-b_c~d', '/a-b_c~d'],
  // Every hex digit at the edges of its range, in both cases; 0x20 is the first escape kept.
  ['/a%20b', '/a b'],
  ['/%30%39%3a%40', '/09:@'],
  ['/%41%46%4a%4F', '/AFJO'],
  ['/%61%66%4f%4A', '/afOJ'],
] as const) {
  test(`canonical: ${raw} is ${path}`, () => {
    const result = canonicalPath(raw)
    assert.ok(result.ok, JSON.stringify(result))
    assert.equal(result.path, path)
  })
}

// The refusals forward-auth bypasses are made of (Traefik CVE-2025-32431, %2e and encoded-slash advisories, envoy CVE-2019-9901).
for (const [raw, refusal] of [
  ['data', 'not absolute'],
  ['', 'not absolute'],
  ['//data', 'empty segment'],
  ['/v1//admin', 'empty segment'],
  ['/v1//', 'empty segment'],
  ['/v1/./admin', 'dot segment'],
  ['/v1/../admin', 'dot segment'],
  ['/v1/..', 'dot segment'],
  ['/v1/%2e%2e/admin', 'forbidden escape'],
  ['/v1/%2E/admin', 'forbidden escape'],
  ['/v1%2Fadmin', 'forbidden escape'],
  ['/v1%2fadmin', 'forbidden escape'],
  ['/v1%5Cadmin', 'forbidden escape'],
  ['/v1%3Badmin', 'forbidden escape'],
  ['/v1/%00', 'forbidden escape'],
  ['/v1/%1f', 'forbidden escape'],
  ['/v1/%7F', 'forbidden escape'],
  ['/v1\\admin', 'forbidden character'],
  ['/v1;x=1/admin', 'forbidden character'],
  ['/v1/admin;', 'forbidden character'],
  ['/v1/\u0000', 'forbidden character'],
  ['/v1/caf\u00e9', 'forbidden character'],
  ['/v1/a b', 'forbidden character'],
  ['/v1/%', 'bad escape'],
  ['/v1/%4', 'bad escape'],
  ['/v1/%zz', 'bad escape'],
  ['/v1/%2-', 'bad escape'], // a byte below '0' is no hex digit (not a low byte)
  ['/v1/%-2', 'bad escape'],
  ['/v1/%C3', 'bad escape'],
  ['/v1/%G1', 'bad escape'],
  ['/v1/%1G', 'bad escape'],
  ['/v1/%.0', 'bad escape'],
  ['/v1/%/0', 'bad escape'], // the characters just outside each range of hex digits
  ['/v1/%:0', 'bad escape'],
  ['/v1/%@0', 'bad escape'],
  ['/v1/%`0', 'bad escape'],
  ['/v1/%g0', 'bad escape'],
  ['/v1/%0g', 'bad escape'],
  ['/v1/\u007f', 'forbidden character'],
  ['/v1#x', 'forbidden character'],
  ['/v1/%1F', 'forbidden escape'],
] as const) {
  test(`canonical: ${JSON.stringify(raw)} is refused (${refusal})`, () => {
    assert.deepEqual(canonicalPath(raw), { ok: false, refusal })
  })
}
