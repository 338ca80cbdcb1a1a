/**
 * The timing-leak check (`npm run bench -- --timing`), dudect style: two classes of wrong
 * credentials, randomly interleaved, each call timed; a t statistic of the difference between
 * the classes says whether the time depends on the class. |t| < 4.5 passes. The same check on a naive `===`
 * comparison of raw strings must fail, which shows the check can see a leak; and keygate must pass
 * a control pair, two stores of the same one key, which shows it does not see leaks that are not there.
 *
 * The samples are taken in batches, each in a fresh process with a fresh key, stores and
 * credentials. Within one process, where the stores, the credential strings and the compiled
 * code happen to sit in memory is fixed, and it moves timings by a nanosecond or so, one way in
 * one process and the other way in the next (measured: a store against an identical copy of
 * itself differs by as much). With one process that offset would be tied to a class for the
 * whole run and pass for a leak; over many processes it is noise like any other, and what is
 * left is what depends on the classes. So t is taken over the batches' differences (see
 * betweenBatches), not over all samples as if they were independent.
 *
 *   node timing.js --batch PAIR VERIFIER SAMPLES   one batch: prints the two classes' sums as JSON
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { authenticate } from '../dist/keys/auth.js'
import { createKeyStore, type KeyStore } from '../dist/index.js'

const T_THRESHOLD = 4.5
const WARMUP_CALLS = 20_000 // per batch
export const DEFAULT_BATCHES = 40
// Within a batch, samples above this percentile of both classes together are dropped: interrupts and GC pauses.
const CROP_PERCENTILE = 0.95
const KEY_LENGTH = 512
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

type StoreIndex = 0 | 1 | 2 | 3
/** A class: credentials drawn at random from a pool (so no single value's hash bucket decides), and a store. */
type Input = [pool: string[], store: StoreIndex]

/** What one batch measures against: a fresh key, stores built from it and pools of wrong credentials. */
interface World {
  /** 0: the 512-character key alone; 1: it and the pair's `manyKeys` others (only when asked for); 2: a 16-character key alone; 3: a copy of 0. */
  stores: [KeyStore, KeyStore | undefined, KeyStore, KeyStore]
  /** The same keys as plain strings, for the naive comparison. */
  naiveKeys: [string[], string[], string[], string[]]
  /** Every wrong last character of the key. */
  lastDiffers: string[]
  /** As many credentials of the key's length that differ from it at every position. */
  noneShared: string[]
}

/**
 * How a pair is judged. leak: keygate must show no difference and the naive comparison must.
 * control: keygate must show none (nothing differs but where things lie in memory).
 * information: not judged (the difference is the caller's own input).
 */
type PairKind = 'leak' | 'control' | 'information'

interface Pair {
  name: string
  kind: PairKind
  /** How many other keys store 1 holds (slow to build, so only for the pairs that use it). */
  manyKeys: number
  inputs: (world: World) => [Input, Input]
}

const flat = (s: string) => Buffer.from(s).toString() // no rope: a real request's header string

const PAIRS: Pair[] = [
  { name: 'control: two stores of the same one key (same credentials)', kind: 'control', manyKeys: 0, inputs: (w) => [[w.noneShared, 0], [w.noneShared, 3]] },
  { name: 'all but the last character right vs none right', kind: 'leak', manyKeys: 0, inputs: (w) => [[w.lastDiffers, 0], [w.noneShared, 0]] },
  { name: 'a 512-character key loaded vs a 16-character key (same credentials)', kind: 'leak', manyKeys: 0, inputs: (w) => [[w.lastDiffers, 0], [w.lastDiffers, 2]] },
  { name: '1 key loaded vs 100,000 (same credentials)', kind: 'leak', manyKeys: 100_000, inputs: (w) => [[w.noneShared, 0], [w.noneShared, 1]] },
  { name: '1 key loaded vs 1,000,000 (same credentials)', kind: 'leak', manyKeys: 1_000_000, inputs: (w) => [[w.noneShared, 0], [w.noneShared, 1]] },
  { name: 'a 1-character vs a 4000-character credential', kind: 'information', manyKeys: 0, inputs: () => [[['x'], 0], [[flat('x'.repeat(4000))], 0]] },
]

type Verify = (world: World, credential: string, store: StoreIndex) => boolean

const request = { headers: { authorization: '' } } as unknown as IncomingMessage
const VERIFIERS: Record<'keygate' | 'naive', Verify> = {
  keygate: (world, credential, store) => {
    request.headers.authorization = credential
    return authenticate(world.stores[store] as KeyStore, request).ok
  },
  naive: (world, credential, store) => {
    for (const candidate of world.naiveKeys[store]) if (credential === candidate) return true
    return false
  },
}

/** A fresh, flat string of `length` random base62-ish characters. */
function randomKey(length: number): string {
  return randomBytes(length).toString('base64').replace(/[+/=]/g, 'x').slice(0, length).padEnd(length, 'y')
}

function buildWorld(manyKeys: number): World {
  const otherThan = (c: string) => ALPHABET.replace(c, '')
  const key = flat(randomKey(KEY_LENGTH))
  const shortKey = flat(randomKey(16))
  // The others as random digests: a million 512-character keys would be half a gigabyte of strings.
  const others = Array.from({ length: manyKeys }, (_, i) => ({ id: `k${i}`, sha256: randomBytes(32).toString('hex') }))
  // Every wrong last character, and as many credentials that differ from the key at every position:
  // pools of one size, so that both classes touch the same amount of memory. Made in pairs, in a
  // random order per pair, and the stores in a random order too: where a string or a store lies
  // in memory moves its timings by a fraction of a nanosecond, and made in a fixed order the two
  // classes would lie the same way in every batch (the check then saw 0.5 ns between two pools
  // of random strings).
  const lastDiffers: string[] = []
  const noneShared: string[] = []
  for (const c of otherThan(key.at(-1) ?? '')) {
    const makers = [() => lastDiffers.push(flat(key.slice(0, -1) + c)), () => noneShared.push(flat(Array.from(key, (k) => otherThan(k)[Math.floor(Math.random() * 61)] as string).join('')))]
    for (const make of inRandomOrder(makers)) make()
  }
  const makeStore = [
    () => createKeyStore([{ id: 'real', key }]),
    () => (manyKeys > 0 ? createKeyStore([{ id: 'real', key }, ...others]) : undefined),
    () => createKeyStore([{ id: 'short', key: shortKey }]),
    () => createKeyStore([{ id: 'real', key }]),
  ]
  const built: Array<KeyStore | undefined> = []
  for (const i of inRandomOrder([0, 1, 2, 3])) built[i] = (makeStore[i] as () => KeyStore | undefined)()
  return {
    stores: [built[0] as KeyStore, built[1], built[2] as KeyStore, built[3] as KeyStore],
    // The naive loop's time grows with the number of strings, whatever they are: short ones do.
    naiveKeys: [[key], [key, ...others.map((_, i) => `other-${i}`)], [shortKey], [flat(key)]],
    lastDiffers,
    noneShared,
  }
}

/** The same items, shuffled (Fisher-Yates). */
function inRandomOrder<T>(items: T[]): T[] {
  const shuffled = [...items]
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[shuffled[i], shuffled[j]] = [shuffled[j] as T, shuffled[i] as T]
  }
  return shuffled
}

/** Per class: samples kept, their sum and sum of squares (ns). */
interface BatchStats {
  n: [number, number]
  sum: [number, number]
  sumOfSquares: [number, number]
}

/** One batch, in this process: times `samples` calls per class in random order, drops the slowest. */
function measureBatch(verify: Verify, pair: Pair, samples: number): BatchStats {
  const world = buildWorld(pair.manyKeys)
  const inputs = pair.inputs(world)
  const pick = (pool: string[]) => pool[Math.floor(Math.random() * pool.length)] as string
  // Enough calls for the JIT to settle, but no more than the batch measures (the naive 100,000-key loop is slow).
  for (let i = 0, warmup = Math.min(WARMUP_CALLS, 2 * samples); i < warmup; i++) {
    const [pool, store] = inputs[(i & 1) as 0 | 1]
    verify(world, pick(pool), store)
  }
  const times: [Float64Array, Float64Array] = [new Float64Array(samples), new Float64Array(samples)]
  const filled = [0, 0]
  let accepted = 0
  while ((filled[0] as number) < samples || (filled[1] as number) < samples) {
    let which: 0 | 1 = Math.random() < 0.5 ? 0 : 1
    if ((filled[which] as number) >= samples) which = which === 0 ? 1 : 0
    const [pool, store] = inputs[which]
    const credential = pick(pool)
    const started = performance.now()
    if (verify(world, credential, store)) accepted++
    const elapsed = performance.now() - started
    const slot = filled[which] as number
    times[which][slot] = elapsed * 1e6
    filled[which] = slot + 1
  }
  if (accepted !== 0) throw new Error('a wrong credential was accepted')
  const all = Float64Array.from([...times[0], ...times[1]]).sort()
  const limit = all[Math.floor(all.length * CROP_PERCENTILE)] as number
  const stats: BatchStats = { n: [0, 0], sum: [0, 0], sumOfSquares: [0, 0] }
  for (const which of [0, 1] as const) {
    for (const ns of times[which]) {
      if (ns > limit) continue
      stats.n[which] += 1
      stats.sum[which] += ns
      stats.sumOfSquares[which] += ns * ns
    }
  }
  return stats
}

/** Welch's t statistic from the classes' totals over all batches (samples taken as independent). */
function pooledWelch(total: BatchStats): number {
  const [mean0, mean1] = [0, 1].map((i) => (total.sum[i] as number) / (total.n[i] as number)) as [number, number]
  const [var0, var1] = [0, 1].map((i) => {
    const n = total.n[i] as number
    const mean = i === 0 ? mean0 : mean1
    return ((total.sumOfSquares[i] as number) - n * mean * mean) / (n - 1)
  }) as [number, number]
  return (mean0 - mean1) / Math.sqrt(var0 / total.n[0] + var1 / total.n[1])
}

/**
 * The judged statistic: one difference of the class means per batch, and the t of their mean.
 * Where a process's strings and stores lie moves the difference by a fraction of a nanosecond,
 * one way in one process and the other way in the next; the pooled t counts none of that as
 * noise, so on a quiet machine it fails for placement alone. Between batches it is noise, as it
 * should be, and a difference every process shows still stands out.
 */
function betweenBatches(differences: readonly number[]): { t: number; difference: number; standardError: number } {
  const k = differences.length
  const mean = differences.reduce((sum, d) => sum + d, 0) / k
  const standardError = Math.sqrt(differences.reduce((sum, d) => sum + (d - mean) ** 2, 0) / (k - 1) / k)
  return { t: standardError === 0 ? (mean === 0 ? 0 : Infinity) : mean / standardError, difference: mean, standardError }
}

/**
 * Runs `batches` batches of one pair and verifier, each in a fresh process: |t| between batches,
 * |difference| (ns), its share of the first class's mean, the smallest difference every process
 * would have to show to fail (ns), pooled |t|.
 */
function measure(pairIndex: number, verifier: keyof typeof VERIFIERS, samples: number, batches: number): { t: number; ns: number; share: number; visibleNs: number; pooledT: number } {
  const total: BatchStats = { n: [0, 0], sum: [0, 0], sumOfSquares: [0, 0] }
  const differences: number[] = []
  const perBatch = Math.ceil(samples / batches)
  for (let batch = 0; batch < batches; batch++) {
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--batch', String(pairIndex), verifier, String(perBatch)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    if (child.status !== 0) throw new Error(`timing batch failed (exit ${child.status})`)
    const stats = JSON.parse(child.stdout) as BatchStats
    differences.push(stats.sum[0] / stats.n[0] - stats.sum[1] / stats.n[1])
    for (const i of [0, 1] as const) {
      total.n[i] += stats.n[i]
      total.sum[i] += stats.sum[i]
      total.sumOfSquares[i] += stats.sumOfSquares[i]
    }
  }
  const { t, difference, standardError } = betweenBatches(differences)
  const share = Math.abs(difference) / (total.sum[0] / total.n[0])
  const visibleNs = Number((T_THRESHOLD * standardError).toFixed(2))
  return { t: Number(Math.abs(t).toFixed(2)), ns: Number(Math.abs(difference).toFixed(2)), share, visibleNs, pooledT: Number(Math.abs(pooledWelch(total)).toFixed(2)) }
}

/** Runs every pair against keygate and against a naive comparison; `pass` when every pair passes as its kind says. */
export function runTimingCheck(samples: number, batches = DEFAULT_BATCHES) {
  const rows = PAIRS.map((pair, pairIndex) => {
    const keygateResult = measure(pairIndex, 'keygate', samples, batches)
    // The naive check's leaks are large (and its loop over many keys slow): a hundredth of the samples
    // shows them. As many batches, though: its loop over a million strings takes 2-3 ms in most
    // processes and far more in a few, and with 8 batches one such took that pair's t to 2.5, with 16 to 5.0.
    const naiveResult = measure(pairIndex, 'naive', Math.max(1000, Math.floor(samples / (pair.manyKeys > 100_000 ? 250 : 100))), batches)
    const row = { pair: pair.name, kind: pair.kind, keygateT: keygateResult.t, keygateNs: keygateResult.ns, keygateShare: Number(keygateResult.share.toFixed(4)), keygateVisibleNs: keygateResult.visibleNs, keygatePooledT: keygateResult.pooledT, naiveT: naiveResult.t, naiveNs: naiveResult.ns }
    return { ...row, verdict: verdict(row) }
  })
  const pass = rows.every((row) => !row.verdict.startsWith('**FAIL'))
  const markdown = [
    `Timing-leak check: ${samples.toLocaleString('en')} samples per class in ${batches} batches (each a fresh process with a fresh key, stores and credentials), classes interleaved at random, slowest ${Math.round((1 - CROP_PERCENTILE) * 100)} % of each batch cropped. |t| is that of the mean of the ${batches} per-batch differences (a difference every process shows); |t| < ${T_THRESHOLD} means no detectable difference. "Fails from" is the smallest difference that every process would have to show for keygate to fail (4.5 standard errors). The pooled |t| (all samples taken as independent) is for information.`,
    '',
    '| classes compared | keygate \\|t\\| | keygate difference | fails from | pooled \\|t\\| | naive `===` \\|t\\| | naive difference | |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
    ...rows.map((r) => `| ${r.pair} | ${r.keygateT} | ${r.keygateNs} ns (${(r.keygateShare * 100).toFixed(2)} %) | ${r.keygateVisibleNs} ns | ${r.keygatePooledT} | ${r.naiveT} | ${r.naiveNs} ns | ${r.verdict} |`),
    '',
  ].join('\n')
  return { pass, markdown, json: { samples, batches, threshold: T_THRESHOLD, rows, pass } }
}

/** A pair's result in words, as its kind judges it. */
function verdict(row: { kind: PairKind; keygateT: number; naiveT: number }): string {
  const naiveLeaks = row.naiveT >= T_THRESHOLD
  switch (row.kind) {
    case 'leak':
      return row.keygateT < T_THRESHOLD && naiveLeaks ? 'pass (keygate constant, naive leaks)' : '**FAIL**'
    case 'control':
      return row.keygateT < T_THRESHOLD ? 'pass (control: no difference where none is)' : '**FAIL** (control: the check sees a difference that is not there)'
    case 'information':
      return "information: the cost of hashing the caller's own input"
  }
}

if (process.argv[2] === '--batch') {
  const [pairIndex, verifier, samples] = process.argv.slice(3)
  const pair = PAIRS[Number(pairIndex)]
  const verify = VERIFIERS[verifier as keyof typeof VERIFIERS]
  if (pair === undefined || verify === undefined) throw new Error('usage: timing.js --batch PAIR keygate|naive SAMPLES')
  process.stdout.write(JSON.stringify(measureBatch(verify, pair, Number(samples))))
}
