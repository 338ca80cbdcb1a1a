/**
 * The timing-leak check (`npm run bench -- --timing`), dudect style: two classes of wrong
 * credentials, randomly interleaved, each call timed; Welch's t statistic between the classes
 * says whether the time depends on the class. |t| < 4.5 passes. The same check on a naive `===`
 * comparison of raw strings must fail, which shows the check can see a leak.
 */
import type { IncomingMessage } from 'node:http'
import { performance } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import { authenticate } from '../dist/auth.js'
import { createKeyStore, type KeyStore } from '../dist/keys.js'

const T_THRESHOLD = 4.5
const WARMUP_CALLS = 50_000
// Samples above this percentile of both classes together are dropped: interrupts and GC pauses.
const CROP_PERCENTILE = 0.95

type StoreIndex = 0 | 1 | 2
/** A class: credentials drawn at random from a pool (so no single value's hash bucket decides), and a store. */
type Input = [pool: string[], store: StoreIndex]
type Verify = (credential: string, store: StoreIndex) => boolean

/** A fresh, flat string of `length` random base62-ish characters. */
function randomKey(length: number): string {
  return randomBytes(length).toString('base64').replace(/[+/=]/g, 'x').slice(0, length).padEnd(length, 'y')
}

const flat = (s: string) => Buffer.from(s).toString() // no rope: a real request's header string

/** Welch's t statistic and the difference of the means (in the unit of the samples). */
function welch(a: Float64Array, b: Float64Array): { t: number; difference: number } {
  const stats = (xs: Float64Array) => {
    let mean = 0
    for (const x of xs) mean += x
    mean /= xs.length
    let variance = 0
    for (const x of xs) variance += (x - mean) ** 2
    return { mean, variance: variance / (xs.length - 1), n: xs.length }
  }
  const x = stats(a)
  const y = stats(b)
  return { t: (x.mean - y.mean) / Math.sqrt(x.variance / x.n + y.variance / y.n), difference: x.mean - y.mean }
}

function crop(a: Float64Array, b: Float64Array): [Float64Array, Float64Array] {
  const all = new Float64Array(a.length + b.length)
  all.set(a)
  all.set(b, a.length)
  all.sort()
  const limit = all[Math.floor(all.length * CROP_PERCENTILE)] as number
  return [a.filter((x) => x <= limit), b.filter((x) => x <= limit)]
}

/** Times `samples` calls per class in random order; returns |t| and |difference| (ns) after cropping outliers. */
function measure(verify: Verify, inputs: [Input, Input], samples: number): { t: number; ns: number } {
  const pick = (pool: string[]) => pool[Math.floor(Math.random() * pool.length)] as string
  for (let i = 0; i < WARMUP_CALLS; i++) {
    const [pool, store] = inputs[(i & 1) as 0 | 1]
    verify(pick(pool), store)
  }
  const times: [Float64Array, Float64Array] = [new Float64Array(samples), new Float64Array(samples)]
  const filled = [0, 0]
  let sink = 0
  while ((filled[0] as number) < samples || (filled[1] as number) < samples) {
    let which: 0 | 1 = Math.random() < 0.5 ? 0 : 1
    if ((filled[which] as number) >= samples) which = which === 0 ? 1 : 0
    const [pool, store] = inputs[which]
    const credential = pick(pool)
    const started = performance.now()
    if (verify(credential, store)) sink++
    const elapsed = performance.now() - started
    const slot = filled[which] as number
    times[which][slot] = elapsed
    filled[which] = slot + 1
  }
  if (sink !== 0) throw new Error('a wrong credential was accepted')
  const { t, difference } = welch(...crop(times[0], times[1]))
  return { t: Number(Math.abs(t).toFixed(2)), ns: Number(Math.abs(difference * 1e6).toFixed(1)) }
}

interface Pair {
  name: string
  /** Whether keygate must pass it (false: the difference is the caller's own input, shown for information). */
  judged: boolean
  inputs: [Input, Input]
}

/** Runs every pair against keygate and against a naive comparison; `pass` when keygate passes and naive fails. */
export function runTimingCheck(samples: number) {
  const KEY_LENGTH = 512
  const key = flat(randomKey(KEY_LENGTH))
  const shortKey = flat(randomKey(16))
  const others = Array.from({ length: 100_000 }, () => randomKey(KEY_LENGTH))
  // 0: the 512-character key alone; 1: it and 100,000 others; 2: a 16-character key alone.
  const stores: [KeyStore, KeyStore, KeyStore] = [
    createKeyStore([{ id: 'real', key }]),
    createKeyStore([{ id: 'real', key }, ...others.map((k, i) => ({ id: `k${i}`, key: k }))]),
    createKeyStore([{ id: 'short', key: shortKey }]),
  ]
  const naiveKeys: [string[], string[], string[]] = [[key], [key, ...others], [shortKey]]
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  const otherThan = (c: string) => ALPHABET.replace(c, '')
  // Every wrong last character, and as many credentials that differ from the key at every position:
  // pools of one size, so that both classes touch the same amount of memory.
  const lastDiffers = Array.from(otherThan(key.at(-1) ?? ''), (c) => flat(key.slice(0, -1) + c))
  const noneShared = Array.from(lastDiffers, () =>
    flat(Array.from(key, (c) => otherThan(c)[Math.floor(Math.random() * 61)]).join('')))
  const pairs: Pair[] = [
    { name: 'all but the last character right vs none right', judged: true, inputs: [[lastDiffers, 0], [noneShared, 0]] },
    { name: 'a 512-character key loaded vs a 16-character key (same credentials)', judged: true, inputs: [[lastDiffers, 0], [lastDiffers, 2]] },
    { name: '1 key loaded vs 100,000 (same credentials)', judged: true, inputs: [[noneShared, 0], [noneShared, 1]] },
    { name: 'a 1-character vs a 4000-character credential', judged: false, inputs: [[['x'], 0], [[flat('x'.repeat(4000))], 0]] },
  ]
  const request = { headers: { authorization: '' } } as unknown as IncomingMessage
  const keygate: Verify = (credential, store) => {
    request.headers.authorization = credential
    return authenticate(stores[store], request).ok
  }
  const naive: Verify = (credential, store) => {
    for (const candidate of naiveKeys[store]) if (credential === candidate) return true
    return false
  }
  const rows = pairs.map((pair) => {
    const keygateResult = measure(keygate, pair.inputs, samples)
    // The naive check's leaks are large (and its 100,000-key loop slow): a hundredth of the samples shows them.
    const naiveResult = measure(naive, pair.inputs, Math.max(1000, Math.floor(samples / 100)))
    return { pair: pair.name, judged: pair.judged, keygateT: keygateResult.t, keygateNs: keygateResult.ns, naiveT: naiveResult.t, naiveNs: naiveResult.ns }
  })
  const judged = rows.filter((row) => row.judged)
  const pass = judged.every((row) => row.keygateT < T_THRESHOLD) && judged.every((row) => row.naiveT >= T_THRESHOLD)
  const markdown = [
    `Timing-leak check: ${samples.toLocaleString('en')} samples per class, classes interleaved at random, slowest ${Math.round((1 - CROP_PERCENTILE) * 100)} % cropped; |t| < ${T_THRESHOLD} means no detectable difference.`,
    '',
    '| classes compared | keygate \\|t\\| | keygate difference | naive `===` \\|t\\| | naive difference | |',
    '|---|---:|---:|---:|---:|---|',
    ...rows.map((r) => `| ${r.pair} | ${r.keygateT} | ${r.keygateNs} ns | ${r.naiveT} | ${r.naiveNs} ns | ${!r.judged ? 'information: the cost of hashing the caller\'s own input' : r.keygateT < T_THRESHOLD && r.naiveT >= T_THRESHOLD ? 'pass (keygate constant, naive leaks)' : '**FAIL**'} |`),
    '',
  ].join('\n')
  return { pass, markdown, json: { samples, threshold: T_THRESHOLD, rows, pass } }
}
