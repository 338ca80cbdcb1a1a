/**
 * A small Redis client for the limit counters: one connection, commands pipelined (written as they
 * come, replies matched in order), `AUTH` and `SELECT` on every connect, a deadline on every
 * command, reconnection with capped exponential backoff and full jitter. A command in flight when
 * the connection fails is rejected, never resent: a counting command may already have counted.
 * With `subscribe`, the connection is a subscriber instead and delivers that channel's messages.
 */
import { createHash } from 'node:crypto'
import { connect as connectTcp, isIP, type Socket } from 'node:net'
import { connect as connectTls } from 'node:tls'
import { encodeCommand, RedisReplyError, ReplyParser, type Reply } from './resp.js'
import { PendingReplies } from './pending.js'
import type { RedisAddress } from './url.js'

export interface RedisClientOptions extends RedisAddress {
  /** Deadline of every command, and of connecting (`REDIS_TIMEOUT_MS`). */
  timeoutMs: number
  /** Told when the connection becomes usable (`up`) or stops being usable, with why (no secret in it). */
  onStateChange?: (up: boolean, reason: string) => void
  /** Makes this a subscriber of `channel`: `onMessage` gets each message's payload. */
  subscribe?: { channel: string; onMessage: (payload: string) => void }
  /** CA certificates to trust for `rediss://` instead of Node's (the server adds them with `NODE_EXTRA_CA_CERTS`). */
  ca?: string | Buffer
  /** First reconnect delay and its cap (defaults 50 ms and 2 s). */
  backoffMs?: { first: number; max: number }
}

export interface RedisClient {
  /** Connected, authenticated and answering. */
  readonly up: boolean
  /** Connections that failed or stalled, and connection attempts that did not succeed. */
  readonly connectionFailures: number
  /** Sends one command; rejects when not up, on an error reply, on the deadline, or when the connection fails. */
  send(args: readonly (string | number)[]): Promise<Reply>
  /** Runs a script by `EVALSHA`, and by `EVAL` when this Redis does not have it (after a restart or `SCRIPT FLUSH`). */
  runScript(script: Script, key: string, args: readonly (string | number)[]): Promise<Reply>
  /**
   * The time on Redis's clock (microseconds) after which a command sent now must not act: its
   * deadline, less the time its answer needs to come back. A counting script that runs later
   * (Redis was frozen while keygate gave up on it) checks this and counts nothing.
   */
  deadlineUs(): number
  /** Resolves once up, or with false after `ms`. */
  whenUp(ms: number): Promise<boolean>
  close(): void
}

export interface Script {
  source: string
  sha1: string
}

export function defineScript(source: string): Script {
  return { source, sha1: createHash('sha1').update(source).digest('hex') }
}

/** Why a command got no answer: it was not sent, or its connection failed or stalled. */
export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError'
}

export function createRedisClient(options: RedisClientOptions): RedisClient {
  return new Connection(options)
}

class Connection implements RedisClient {
  up = false
  connectionFailures = 0
  private socket: Socket | undefined
  private readonly parser = new ReplyParser((reply) => this.onReply(reply))
  private readonly pending = new PendingReplies(() => this.fail(`no answer within ${this.options.timeoutMs} ms`))
  private handshake = 0 // replies still owed to the connect commands, answered before any caller's
  private attempts = 0
  private closed = false
  private corked = false
  private waiters: Array<() => void> = []
  private lastReason = ''
  // Redis's clock less this process's (microseconds), and the round trip, both measured at connect.
  private clockOffsetUs = 0
  private roundTripMs = 0
  private greetedAt = 0

  constructor(private readonly options: RedisClientOptions) {
    this.connect()
  }

  send(args: readonly (string | number)[]): Promise<Reply> {
    if (!this.up || this.socket === undefined) return Promise.reject(new RedisUnavailableError(this.lastReason || 'not connected'))
    return this.write(args)
  }

  runScript(script: Script, key: string, args: readonly (string | number)[]): Promise<Reply> {
    return this.send(['EVALSHA', script.sha1, 1, key, ...args]).catch((error: unknown) => {
      // NOSCRIPT: nothing ran, so sending the source is not a second count.
      if (error instanceof RedisReplyError && error.code === 'NOSCRIPT') return this.send(['EVAL', script.source, 1, key, ...args])
      throw error
    })
  }

  deadlineUs(): number {
    const { timeoutMs } = this.options
    const localMs = Date.now() + Math.max(timeoutMs / 2, timeoutMs - this.roundTripMs)
    return Math.floor(localMs * 1000 + this.clockOffsetUs)
  }

  whenUp(ms: number): Promise<boolean> {
    if (this.up) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms)
      this.waiters.push(() => {
        clearTimeout(timer)
        resolve(true)
      })
    })
  }

  close(): void {
    this.closed = true
    this.fail('closed')
  }

  private connect(): void {
    const { host, port, tls, ca } = this.options
    const socket = tls ? connectTls({ host, port, ca, servername: isIP(host) === 0 ? host : undefined }) : connectTcp({ host, port })
    this.socket = socket
    socket.setNoDelay(true)
    socket.on(tls ? 'secureConnect' : 'connect', () => this.greet())
    socket.on('data', (chunk: Buffer) => {
      try {
        this.parser.push(chunk)
      } catch (error) {
        this.fail(`bad reply: ${(error as Error).message}`)
      }
    })
    socket.on('error', (error: NodeJS.ErrnoException) => this.fail(error.code ?? error.message))
    socket.on('close', () => this.fail('connection closed'))
    // Connecting has the same deadline as a command (a frozen Redis is accepted by the kernel, then
    // says nothing): the PING that ends the greeting is queued now, and its answer means up.
    this.pending.push({ resolve: (reply) => this.becomeUp(reply), reject: () => undefined, deadline: Date.now() + this.options.timeoutMs })
  }

  /**
   * The connect commands, before anything of a caller's: AUTH, SELECT, then SUBSCRIBE for a
   * subscriber (which then ends with PING), or TIME, whose answer sets the clock offset.
   */
  private greet(): void {
    const { user, password, db, subscribe } = this.options
    const commands: (string | number)[][] = []
    if (password !== undefined) commands.push(user === undefined ? ['AUTH', password] : ['AUTH', user, password])
    if (db !== 0) commands.push(['SELECT', db])
    if (subscribe !== undefined) commands.push(['SUBSCRIBE', subscribe.channel])
    this.handshake = commands.length
    this.greetedAt = Date.now()
    this.socket?.write([...commands, [subscribe === undefined ? 'TIME' : 'PING']].map(encodeCommand).join(''))
  }

  /** Redis's clock from a TIME answer, against the middle of the round trip that fetched it. */
  private learnClock(reply: Reply): void {
    if (!Array.isArray(reply) || reply.length !== 2) return
    const redisUs = Number(reply[0]) * 1_000_000 + Number(reply[1])
    const now = Date.now()
    if (!Number.isFinite(redisUs)) return
    this.roundTripMs = now - this.greetedAt
    this.clockOffsetUs = redisUs - ((this.greetedAt + now) / 2) * 1000
  }

  private onReply(reply: Reply): void {
    if (this.handshake > 0) return this.onHandshakeReply(reply)
    const subscribe = this.options.subscribe
    if (subscribe !== undefined && Array.isArray(reply) && reply[0] === 'message') {
      if (typeof reply[2] === 'string') subscribe.onMessage(reply[2])
      return
    }
    if (subscribe !== undefined && this.up) return // nothing else is owed to a subscriber
    const entry = this.pending.shift()
    if (entry === undefined) return this.fail('a reply nobody asked for')
    if (reply instanceof RedisReplyError) entry.reject(reply)
    else entry.resolve(reply)
  }

  private onHandshakeReply(reply: Reply): void {
    this.handshake--
    // The message of an AUTH or SELECT refusal names no secret (WRONGPASS, NOAUTH, ERR DB index is out of range).
    if (reply instanceof RedisReplyError) this.fail(`refused: ${reply.message}`)
  }

  private becomeUp(reply: Reply): void {
    this.learnClock(reply)
    this.up = true
    this.attempts = 0
    this.options.onStateChange?.(true, 'connected')
    for (const wake of this.waiters.splice(0)) wake()
  }

  private write(args: readonly (string | number)[]): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject, deadline: Date.now() + this.options.timeoutMs })
      const socket = this.socket as Socket
      // Commands of one tick leave in one write: that is the pipelining.
      if (!this.corked) {
        this.corked = true
        socket.cork()
        process.nextTick(() => {
          this.corked = false
          socket.uncork()
        })
      }
      socket.write(encodeCommand(args))
    })
  }

  /** The connection is unusable: every command in flight is rejected, and a new one is tried later. */
  private fail(reason: string): void {
    const socket = this.socket
    if (socket === undefined) return
    this.socket = undefined
    socket.destroy()
    this.parser.reset()
    const failed = this.pending.takeAll()
    this.handshake = 0
    this.lastReason = reason
    if (!this.closed) this.connectionFailures++
    const error = new RedisUnavailableError(reason)
    for (const entry of failed) entry.reject(error)
    if (this.up) {
      this.up = false
      this.options.onStateChange?.(false, reason)
    } else if (this.attempts === 0 && !this.closed) {
      this.options.onStateChange?.(false, reason) // the first failed attempt after being up, or at start
    }
    if (!this.closed) this.scheduleReconnect()
  }

  private scheduleReconnect(): void {
    const { first, max } = this.options.backoffMs ?? { first: 50, max: 2_000 }
    const ceiling = Math.min(max, first * 2 ** Math.min(this.attempts, 20))
    this.attempts++
    // Full jitter: instances that lost Redis together do not all come back in the same millisecond.
    setTimeout(() => this.closed || this.connect(), Math.round(ceiling / 2 + (Math.random() * ceiling) / 2)).unref()
  }
}
