// After tsc: what dist/ needs to run on its own and as the `keygate` command.
// - dist/package.json: `node dist/server.js` with no package.json above it must still know that
//   its .js files are ES modules.
// - dist/cli.js executable: npm links it as `keygate` (package.json "bin"); a tarball keeps the mode.
import { chmodSync, writeFileSync } from 'node:fs'

writeFileSync(new URL('../dist/package.json', import.meta.url), '{ "type": "module" }\n')
chmodSync(new URL('../dist/cli.js', import.meta.url), 0o755)
