/** keygate's version (package.json's, checked by a test) and the oldest Node.js it runs on. */
export const VERSION = '0.1.0'

/** `crypto.hash`, keygate's one-shot SHA-256, arrived in Node.js 20.12. */
export const MIN_NODE_VERSION = '20.12.0'

/** One line saying which Node.js is needed, or `undefined` when `version` (such as `v20.11.1`) is new enough. */
export function nodeVersionProblem(version: string): string | undefined {
  const have = version.replace(/^v/, '').split('.').map((part) => parseInt(part, 10))
  const need = MIN_NODE_VERSION.split('.').map(Number)
  for (let i = 0; i < need.length; i++) {
    const a = have[i] ?? 0
    const b = need[i] ?? 0
    if (a !== b) return a > b ? undefined : `keygate needs Node.js ${MIN_NODE_VERSION} or later; this is Node.js ${version}`
  }
  return undefined
}
