/** The RESP2 encoder and the incremental reply parser, byte by byte. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { encodeCommand, RedisReplyError, ReplyParser, RespProtocolError, type Reply } from '../../dist/redis/resp.js'

function parseAll(chunks: Array<string | Buffer>): Reply[] {
  const replies: Reply[] = []
  const parser = new ReplyParser((reply) => replies.push(reply))
  for (const chunk of chunks) parser.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk)
  return replies
}

const MIXED = '+OK\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n$0\r\n\r\n*2\r\n*2\r\n:1\r\n$3\r\nabc\r\n*0\r\n-NOSCRIPT No matching script.\r\n'
const EXPECTED = ['OK', -42, 'he\r\no', null, null, '', [[1, 'abc'], []], 'error']

function normalize(replies: Reply[]): unknown[] {
  return replies.map((reply) => (reply instanceof RedisReplyError ? 'error' : reply))
}

test('encodes a command as an array of bulk strings, lengths in bytes', () => {
  assert.equal(encodeCommand(['SET', 'k', 'é', 12]), '*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n$2\r\n12\r\n')
})

test('pipelined replies in one chunk come out in order, of every type, nested arrays too', () => {
  const replies = parseAll([MIXED])
  assert.deepEqual(normalize(replies), EXPECTED)
  const error = replies[7] as RedisReplyError
  assert.equal(error.code, 'NOSCRIPT')
  assert.equal(error.message, 'NOSCRIPT No matching script.')
})

test('the same bytes split at every possible point, and one byte at a time, give the same replies', () => {
  const bytes = Buffer.from(MIXED)
  for (let cut = 1; cut < bytes.length; cut++) {
    assert.deepEqual(normalize(parseAll([bytes.subarray(0, cut), bytes.subarray(cut)])), EXPECTED, `split at ${cut}`)
  }
  const single = [...bytes].map((byte) => Buffer.from([byte]))
  assert.deepEqual(normalize(parseAll(single)), EXPECTED)
})

test('nothing comes out before a reply is whole', () => {
  assert.deepEqual(parseAll(['*2\r\n:1\r\n']), [])
  assert.deepEqual(parseAll(['$10\r\n12345']), [])
  assert.deepEqual(parseAll(['+O']), [])
})

test('bytes that are not RESP throw a protocol error (the connection is then dropped)', () => {
  for (const bad of ['?what\r\n', ':12a\r\n', '$3\r\nabcd\r\n', '*-5\r\n', `$${2 ** 21}\r\n`]) {
    assert.throws(() => parseAll([bad]), RespProtocolError, JSON.stringify(bad))
  }
  assert.throws(() => parseAll(['*1\r\n'.repeat(20) + ':1\r\n']), RespProtocolError, 'nesting is bounded')
})

test('reset drops a partial reply', () => {
  const replies: Reply[] = []
  const parser = new ReplyParser((reply) => replies.push(reply))
  parser.push(Buffer.from('$5\r\nab'))
  parser.reset()
  parser.push(Buffer.from(':7\r\n'))
  assert.deepEqual(replies, [7])
})

test('the protocol errors say what was wrong, and the error classes have their names', () => {
  for (const [bad, message] of [
    ['?what\r\n', /^unexpected reply type byte 63$/],
    [':12a\r\n', /^a length or integer that is not a number$/],
    [':x12\r\n', /^a length or integer that is not a number$/],
    ['$-2\r\n', /^a bulk string of -2 bytes$/],
    ['$3\r\nabcd\r\n', /^a bulk string not ended by CRLF$/],
    ['*-5\r\n', /^an array of -5 elements$/],
    ['*65537\r\n', /^an array of 65537 elements$/],
  ] as const) {
    assert.throws(() => parseAll([bad]), (error: unknown) => error instanceof RespProtocolError && error.name === 'RespProtocolError' && message.test(error.message), JSON.stringify(bad))
  }
  const [reply] = parseAll(['-ERR no\r\n'])
  assert.equal((reply as RedisReplyError).name, 'RedisReplyError')
})

test('the bounds hold at their edges: 64 KiB lines, 1 MiB bulk strings, 65,536 elements, 8 levels of nesting', () => {
  assert.deepEqual(parseAll([`+${'a'.repeat(64 * 1024 - 1)}`]), [], 'a line of 64 KiB is still waited on')
  assert.throws(() => parseAll([`+${'a'.repeat(64 * 1024 + 1)}`]), (error: unknown) => error instanceof RespProtocolError && /longer than 64 KiB/.test(error.message))
  // A whole reply, then 40 KiB of the next line: the bound is on the line, not the buffer.
  assert.deepEqual(parseAll([`+${'a'.repeat(40 * 1024)}\r\n+${'b'.repeat(40 * 1024)}`]).length, 1)
  const mib = 1024 * 1024
  assert.equal((parseAll([`$${mib}\r\n${'x'.repeat(mib)}\r\n`])[0] as string).length, mib)
  assert.throws(() => parseAll([`$${mib + 1}\r\n`]), RespProtocolError)
  assert.deepEqual(parseAll(['*65536\r\n:1\r\n']), [], 'the longest array is waited on')
  assert.deepEqual(parseAll(['*1\r\n'.repeat(8) + ':1\r\n']), [[[[[[[[[1]]]]]]]]]) // the list of replies, holding 8 nested arrays
  assert.throws(() => parseAll(['*1\r\n'.repeat(9) + ':1\r\n']), (error: unknown) => error instanceof RespProtocolError && /nested too deep/.test(error.message))
})
