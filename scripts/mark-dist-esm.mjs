// dist/ must run on its own (`node dist/server.js` with no package.json above it),
// so it carries the one line that tells Node its .js files are ES modules.
import { writeFileSync } from 'node:fs'

writeFileSync(new URL('../dist/package.json', import.meta.url), '{ "type": "module" }\n')
