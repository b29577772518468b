/**
 * The task's environment: exactly what its config gives (plus the agent's own only when asked),
 * minus every denied name. Denied names are exact names or globs (`*_TOKEN`, `AWS_*`, `?` for one char).
 */
import { InvalidConfigError } from '../../errors.js';

/** Compiles globs into one matcher; `*` is any run of characters, `?` exactly one. Case-sensitive, as env names are. */
export function envMatcher(patterns: readonly string[]): (name: string) => boolean {
  if (patterns.length === 0) return () => false;
  const res = patterns.map((p) => new RegExp('^' + p.split('').map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.|+()[\]{}]/g, '\\$&'))).join('') + '$', 's'));
  return (name) => res.some((r) => r.test(name));
}

/** Validates a list of denied names/globs. */
export function validateDeniedEnvvars(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new InvalidConfigError(field, v, 'must be an array of names or globs like "*_TOKEN"');
  for (const p of v) {
    if (typeof p !== 'string' || p === '' || p.includes('=') || p.includes('\0')) {
      throw new InvalidConfigError(field, v, `entry ${JSON.stringify(p)} must be a non-empty name or glob without "=" or NUL`);
    }
  }
  return [...v] as string[];
}

/** The final environment as `KEY=VALUE` strings, denied names removed. */
export function buildEnv(taskEnv: Record<string, string>, denied: readonly string[], inherit?: NodeJS.ProcessEnv): { env: Record<string, string>; envp: string[]; removed: string[] } {
  const isDenied = envMatcher(denied);
  const merged: Record<string, string> = {};
  if (inherit) for (const [k, v] of Object.entries(inherit)) if (v !== undefined && !k.includes('=') && !v.includes('\0')) merged[k] = v;
  Object.assign(merged, taskEnv);
  const env: Record<string, string> = {};
  const removed: string[] = [];
  for (const [k, v] of Object.entries(merged)) {
    if (isDenied(k)) removed.push(k);
    else env[k] = v;
  }
  return { env, envp: Object.entries(env).map(([k, v]) => `${k}=${v}`), removed };
}
