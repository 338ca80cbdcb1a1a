/**
 * The commands sent on a connection and not yet answered, oldest first: Redis answers in order, so
 * a reply is always the oldest's. One timer watches the oldest's deadline; if it is late, every
 * command behind it is too, and the connection is given up (`onLate`).
 */
import type { Reply } from './resp.js'

export interface Pending {
  resolve: (reply: Reply) => void
  reject: (error: Error) => void
  /** Date.now() past which no answer is waited for. */
  deadline: number
}

export class PendingReplies {
  private queue: Array<Pending | undefined> = []
  private head = 0
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly onLate: () => void) {}

  push(entry: Pending): void {
    this.queue.push(entry)
    this.arm()
  }

  /** The oldest, off the queue; undefined when nothing is owed. */
  shift(): Pending | undefined {
    const entry = this.queue[this.head]
    if (entry === undefined) return undefined
    this.queue[this.head++] = undefined
    // Taken entries are cut off now and then, not at each reply: shifting an array is linear.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    return entry
  }

  /** Every command still owed, off the queue (the connection failed); the timer stops. */
  takeAll(): Pending[] {
    clearTimeout(this.timer)
    this.timer = undefined
    const owed = this.queue.slice(this.head) as Pending[]
    this.queue = []
    this.head = 0
    return owed
  }

  private arm(): void {
    if (this.timer !== undefined) return
    const oldest = this.queue[this.head]
    if (oldest === undefined) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      const first = this.queue[this.head]
      if (first !== undefined && Date.now() >= first.deadline) return this.onLate()
      this.arm()
    }, Math.max(1, oldest.deadline - Date.now()))
    this.timer.unref()
  }
}
