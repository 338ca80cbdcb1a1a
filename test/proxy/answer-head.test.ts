/** The head of a service's answer on a table: status, framing, and whether the connection may be reused. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { hasBareLineFeed, isChunkSizeLine, isTrailerLine, parseAnswerHead } from '../../dist/proxy/answer-head.js'

const H = (status: string, ...fields: string[]) => [`HTTP/1.1 ${status}`, ...fields].join('\r\n')
const H10 = (status: string, ...fields: string[]) => [`HTTP/1.0 ${status}`, ...fields].join('\r\n')

/** [head text, method, expected framing kind (with length), reusable] */
for (const [text, method, framing, reusable] of [
  [H('200 OK', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('200 OK', 'content-length: 0'), 'GET', 'length 0', true],
  [H('200 OK', 'CONTENT-LENGTH: 7'), 'POST', 'length 7', true],
  [H('200 OK', 'Connection: close', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'connection: Close ', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Connection: keep-alive, close', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Connection: foo,  close', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Connection: close ,foo', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Connection: keep-alive', 'Connection: close', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Connection: close', 'Connection: keep-alive', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Connection: closed', 'Content-Length: 5'), 'GET', 'length 5', true], // not the close token
  [H('200 OK', 'Connection: x-close', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('200 OK', 'Connection: xclose', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('200 OK', 'Connection: close-ish', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('200 OK', 'Connectionx: close', 'Content-Length: 5'), 'GET', 'length 5', true], // another field
  [H('200 OK', 'Keep-Alive: close', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H10('200 OK', 'Content-Length: 5'), 'GET', 'length 5', false], // HTTP/1.0 closes unless asked
  [H10('200 OK', 'Connection: keep-alive', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H10('200 OK', 'Connection: Keep-Alive', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H10('200 OK', 'X-Note: keep-alive', 'Content-Length: 5'), 'GET', 'length 5', false], // keep-alive only counts in Connection
  [H10('200 OK', 'Connection: keep-alive, close', 'Content-Length: 5'), 'GET', 'length 5', false],
  [H('200 OK', 'Transfer-Encoding: chunked'), 'GET', 'chunked', true],
  [H('200 OK', 'Transfer-Encoding:  Chunked '), 'GET', 'chunked', true],
  [H('200 OK', 'transfer-encoding: gzip, chunked'), 'GET', 'chunked', true],
  [H('200 OK', 'Transfer-Encoding: gzip,chunked'), 'GET', 'chunked', true],
  [H('200 OK', 'Transfer-Encoding: chunked, gzip'), 'GET', 'close', false], // chunked not last: until close
  [H('200 OK', 'Transfer-Encoding: gzip'), 'GET', 'close', false],
  [H('200 OK', 'Transfer-Encoding: xchunked'), 'GET', 'close', false],
  [H('200 OK', 'Transfer-Encoding: chunkedx'), 'GET', 'close', false],
  [H('200 OK', 'Transfer-Encoding: gzip', 'Transfer-Encoding: chunked'), 'GET', 'chunked', true], // one list: the last coding
  [H('200 OK', 'Transfer-Encodingx: chunked', 'Content-Length: 2'), 'GET', 'length 2', true],
  [H('200 OK'), 'GET', 'close', false], // no length: until close
  [H('200 OK', 'X-A: b'), 'GET', 'close', false],
  [H('200 OK', 'Content-Length: 5'), 'HEAD', 'none', false], // a body announced after HEAD may follow, late
  [H('200 OK', 'Content-Length: 0'), 'HEAD', 'none', true],
  [H('200 OK'), 'HEAD', 'none', true],
  [H('200 OK', 'Transfer-Encoding: chunked'), 'HEAD', 'none', false],
  [H('200 OK', 'Transfer-Encoding: gzip'), 'HEAD', 'none', false],
  [H('204 No Content'), 'DELETE', 'none', true],
  [H('204 No Content', 'Content-Length: 3'), 'DELETE', 'none', false],
  [H('304 Not Modified', 'Transfer-Encoding: chunked'), 'GET', 'none', false],
  [H('304 Not Modified'), 'GET', 'none', true],
  [H('205 Reset Content', 'Content-Length: 0'), 'GET', 'length 0', true],
  [H('200'), 'GET', 'close', false],
  // Names of the lengths of the three that decide framing, but other names.
  [H('200 OK', 'X-Abcdefghijkl: v', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('200 OK', 'X-Abcdefghijklmno: gzip', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('200 OK', 'X-Abcdefgh: close', 'Content-Length: 5'), 'GET', 'length 5', true],
  [H('099 Odd', 'Content-Length: 0'), 'GET', 'length 0', true], // below 100: a final answer, as llhttp takes it
  ['HTTP/1.1 200 ', 'GET', 'close', false],
] as const) {
  test(`answer head ${JSON.stringify(text)} to ${method}: ${framing}, ${reusable ? 'reusable' : 'closed after'}`, () => {
    const parsed = parseAnswerHead(text, method)
    assert.notEqual(typeof parsed, 'string', String(parsed))
    if (typeof parsed === 'string') return
    const kind = parsed.framing.kind === 'length' ? `length ${parsed.framing.left}` : parsed.framing.kind
    assert.deepEqual([kind, parsed.reusable], [framing, reusable])
  })
}

for (const [text, verdict] of [
  [H('100 Continue'), 'interim'],
  [H('103 Early Hints', 'Link: </a.css>'), 'interim'],
  [H('199 Whatever'), 'interim'],
  [H('101 Switching Protocols', 'Upgrade: x'), 'bad'], // keygate's client never asks for an upgrade
  ['', 'bad'],
  ['xHTTP/1.1 200 OK', 'bad'],
  ['HTTP/1.2 200 OK', 'bad'],
  ['HTTP/2.0 200 OK', 'bad'],
  ['HTTP/1.1 20 OK', 'bad'],
  ['HTTP/1.1 2000 OK', 'bad'],
  ['HTTP/1.1  200 OK', 'bad'],
  ['HTTP/1.1 200OK', 'bad'],
  [H('200 OK', 'Content-Length: 5', 'Content-Length: 5'), 'bad'],
  [H('200 OK', 'Content-Length: 5x'), 'bad'],
  [H('200 OK', 'Content-Length: x5'), 'bad'],
  [H('200 OK', 'Content-Length: '), 'bad'],
  [H('200 OK', 'Content-Length: -1'), 'bad'],
  [H('200 OK', `Content-Length: ${'9'.repeat(16)}`), 'bad'],
  [H('200 OK', 'Transfer-Encoding: chunked', 'Content-Length: 5'), 'bad'],
  [H('200 OK', 'Content-Length: 5', 'Transfer-Encoding: gzip'), 'bad'],
  [H('200 OK', ' X: y'), 'bad'],
  [H('200 OK', '\tX: y'), 'bad'],
  [H('200 OK', 'X y'), 'bad'],
  [H('200 OK', 'X y', 'A: b'), 'bad'], // the colon of the next line is not this line's
  [H('200 OK', ': y'), 'bad'],
  [H('200 OK', 'X : y'), 'bad'],
  [H('200 OK', 'X\t: y'), 'bad'],
  [H('200 OK', 'X: a\rb'), 'bad'],
  ['HTTP/1.1 200 OK\nX: b', 'bad'],
  [H('200 OK', 'X: a\nb'), 'bad'],
] as const) {
  test(`answer head ${JSON.stringify(text)} is ${verdict}`, () => {
    assert.equal(parseAnswerHead(text, 'GET'), verdict)
  })
}

test('answer head: status and the fields as received (names as sent, values trimmed)', () => {
  const parsed = parseAnswerHead(H('201 Created', 'X-One:  a b ', 'x-two:c', 'Content-Length: 2'), 'GET')
  assert.ok(typeof parsed !== 'string')
  assert.equal(parsed.status, 201)
  assert.deepEqual(parsed.rawHeaders, ['X-One', 'a b', 'x-two', 'c', 'Content-Length', '2'])
})

for (const [line, ok] of [
  ['5', true], ['0', true], ['aF09', true], ['5;a', true], ['5;a=b', true], ['5;a="b c"', true], ['5;a="q\\"x"', true], ['5;a=b;c', true],
  ['', false], ['0x5', false], ['5 junk', false], ['5 ', false], [' 5', false], ['5 ;a', false], ['5;', false], ['5;a=', false], ['5;a="b', false], ['g', false], ['5;a b', false],
] as const) {
  test(`chunk-size line ${JSON.stringify(line)} is ${ok ? 'valid' : 'refused'}`, () => assert.equal(isChunkSizeLine(line), ok))
}

for (const [line, ok] of [['X-T: 1', true], ['X-T:', true], ['X-T:\tv', true], ['nocolon', false], [': v', false], ['X T: v', false], ['X-T: a\u0001', false]] as const) {
  test(`trailer line ${JSON.stringify(line)} is ${ok ? 'valid' : 'refused'}`, () => assert.equal(isTrailerLine(line), ok))
}

for (const [text, bare] of [['a\r\nb\r\n', false], ['', false], ['\n', true], ['a\nb', true], ['a\r\nb\n', true], ['a\r', false]] as const) {
  test(`hasBareLineFeed(${JSON.stringify(text)}) is ${bare}`, () => assert.equal(hasBareLineFeed(Buffer.from(text)), bare))
}
