#!/usr/bin/env node
/** The `keygate` command. Checks the Node.js version before loading anything that needs a newer one. */
import { nodeVersionProblem } from './version.js'

const problem = nodeVersionProblem(process.version)
if (problem !== undefined) {
  process.stderr.write(`keygate: ${problem}\n`)
  process.exit(1)
}
await import('./cli-commands.js')
