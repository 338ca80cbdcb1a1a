/** The RESP2 encoder and the incremental reply parser, byte by byte. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { encodeCommand, RedisReplyError, ReplyParser, RespProtocolError, type Reply } from '../../dist/limits/resp.js'

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
