/**
 * The README's examples run as written. A block after `<!-- runnable -->` is a shell block run
 * against a real keygate with the demo key (the URL's port is the test server's); each comment
 * line of its own (`# output`) must appear in what it prints. A block after
 * `<!-- runnable server -->` is a JavaScript program, run with `keygate` installed (this
 * checkout) and `PORT` set; the runnable shell block after it runs against that program. A block
 * after `<!-- runnable file NAME -->` is written as NAME beside the next program.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { freePort, startServerProcess, waitFor } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const README = readFileSync(join(ROOT, 'README.md'), 'utf8')

interface Block {
  kind: 'shell' | 'server' | 'file'
  text: string
  line: number
  /** A file block: the name the program after it reads it by. */
  name?: string
}

/** The blocks marked runnable, in order. */
function runnableBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const marker = /^<!-- runnable(?: (server)| file ([\w.-]+))? -->$/.exec(lines[i] ?? '')
    if (marker === null) continue
    const kind = marker[1] !== undefined ? 'server' : marker[2] !== undefined ? 'file' : 'shell'
    const fence = { shell: /^```sh$/, server: /^```js$/, file: /^```\w*$/ }[kind]
    assert.match(lines[i + 1] ?? '', fence, `README.md:${i + 2}: the block after the marker`)
    const end = lines.indexOf('```', i + 2)
    assert.notEqual(end, -1, `README.md:${i + 2}: an unclosed block`)
    blocks.push({ kind, text: lines.slice(i + 2, end).join('\n'), line: i + 3, name: marker[2] })
  }
  return blocks
}

/** Runs a shell block against `port`; checks its exit status and every expected output line. */
function runShell(block: Block, port: number): void {
  const script = block.text.replaceAll('127.0.0.1:3000', `127.0.0.1:${port}`)
  const result = spawnSync('bash', ['-e', '-c', script], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(result.status, 0, `README.md:${block.line}: exit status (stderr: ${result.stderr})`)
  const expected = block.text.split('\n').filter((line) => line.startsWith('# ')).map((line) => line.slice(2))
  assert.ok(expected.length > 0, `README.md:${block.line}: a runnable block shows what it prints`)
  for (const output of expected) assert.ok(result.stdout.includes(output), `README.md:${block.line}: prints ${output}\n(got: ${result.stdout})`)
}

/** Runs a server block as a program that imports `keygate` (this checkout), beside the files before it; stopped by PID after the test. */
async function runServer(t: TestContext, block: Block, files: Block[]): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-readme-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  for (const file of files) writeFileSync(join(dir, file.name ?? ''), file.text)
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(ROOT, join(dir, 'node_modules', 'keygate'), 'dir')
  writeFileSync(join(dir, 'server.mjs'), block.text)
  const port = await freePort()
  const child = spawn(process.execPath, ['server.mjs'], { cwd: dir, env: { PATH: process.env.PATH ?? '', PORT: String(port) }, stdio: 'ignore' })
  t.after(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
  })
  await waitFor(`README.md:${block.line} to listen`, async () => {
    if (child.exitCode !== null) throw new Error(`README.md:${block.line}: the program exited with ${child.exitCode}`)
    return fetch(`http://127.0.0.1:${port}/healthz`).then((res) => (res.ok ? true : undefined), () => undefined)
  })
  return port
}

test('the README has runnable blocks, each shell block with what it prints', () => {
  const blocks = runnableBlocks(README)
  assert.ok(blocks.filter((block) => block.kind === 'shell').length >= 2)
  assert.ok(blocks.some((block) => block.kind === 'server'))
})

test("the README's runnable blocks run as written, against real servers", async (t) => {
  const demo = await startServerProcess(t, {})
  const demoPort = Number(new URL(demo.url).port)
  let serverPort: number | undefined
  let files: Block[] = []
  for (const block of runnableBlocks(README)) {
    if (block.kind === 'file') files.push(block)
    else if (block.kind === 'server') {
      serverPort = await runServer(t, block, files)
      files = []
    } else {
      runShell(block, serverPort ?? demoPort)
      serverPort = undefined
    }
  }
})

test('a runnable block that prints something else fails the check', () => {
  const [block] = runnableBlocks('<!-- runnable -->\n```sh\necho hello\n# goodbye\n```\n')
  assert.ok(block !== undefined)
  assert.throws(() => runShell(block, 1), /prints goodbye/)
})
