/** Where keygate's own routes are: the defaults, an embedding app's choice, and proxy mode's. */
import type { RouteName } from '../observe/metrics.js'

/** A built-in route that has a path of its own (the proxy and a guarded app take every other path, `other` is none). */
export type OwnedRoute = Exclude<RouteName, 'other' | 'proxy' | 'app'>
/** The built-in routes a handler owns, each at its path or turned off (`false`). */
export type RoutePaths = Partial<Record<OwnedRoute, string | false>>
const OWNED_ROUTES = ['data', 'healthz', 'readyz', 'auth', 'metrics'] as const
const ROUTE_PATH = /^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/

/** The paths of the routes a handler owns: the defaults (`/data` ...) with `paths` applied; throws a `TypeError`. */
export function resolveRoutePaths(paths: RoutePaths = {}): Map<OwnedRoute, string> {
  const resolved = new Map<OwnedRoute, string>()
  for (const name of OWNED_ROUTES) {
    const path = paths[name] ?? `/${name}`
    if (path === false) continue
    if (typeof path !== 'string' || !ROUTE_PATH.test(path)) throw new TypeError(`routes.${name} must be a path starting with "/" (no query) or false`)
    if ([...resolved.values()].includes(path)) throw new TypeError(`routes.${name}: ${path} is already the path of another route`)
    resolved.set(name, path)
  }
  return resolved
}

/**
 * The spellings of an owned path that a host router may treat as that path (`/DATA`, `/data/`,
 * `/%64ata`): keygate answers them with 404 itself, so that such a router never serves its own
 * route of that name without a key.
 */
export function claimedVariant(paths: ReadonlyMap<string, string>): (path: string) => boolean {
  const owned = new Set([...paths.values()].map(looseForm))
  return (path) => owned.has(looseForm(path))
}

function looseForm(path: string): string {
  let decoded = path
  try {
    decoded = decodeURIComponent(path)
  } catch {
    // a bad escape: compared as it is
  }
  return decoded.toLowerCase().replace(/\/+$/, '')
}

/** keygate's own routes in proxy mode: every other path belongs to the service. */
export const PROXY_MODE_ROUTES: RoutePaths = { data: false, auth: false, healthz: '/_keygate/healthz', readyz: '/_keygate/readyz', metrics: '/_keygate/metrics' }
