/** Validation of task resources (before any cgroup file is touched) and Nomad/runc conversions. */
import { InvalidConfigError } from '../errors.js';
import type { TaskResources } from './types.js';

export const MIN_CPU_SHARES = 2;
export const MAX_CPU_SHARES = 262144;

/** Checks every field and returns a normalised copy (cores sorted and unique). */
export function validateResources(res: TaskResources | undefined): TaskResources {
  const out: TaskResources = {};
  if (res === undefined || res === null) return out;
  if (typeof res !== 'object') throw new InvalidConfigError('resources', res, 'must be an object');
  if (res.cpuShares !== undefined) {
    const v = res.cpuShares;
    if (!Number.isInteger(v) || v < MIN_CPU_SHARES || v > MAX_CPU_SHARES) {
      throw new InvalidConfigError('resources.cpuShares', v, `must be an integer from ${MIN_CPU_SHARES} to ${MAX_CPU_SHARES}`);
    }
    out.cpuShares = v;
  }
  if (res.cores !== undefined) {
    if (!Array.isArray(res.cores)) throw new InvalidConfigError('resources.cores', res.cores, 'must be an array of core numbers');
    const seen = new Set<number>();
    for (const c of res.cores) {
      if (!Number.isInteger(c) || c < 0 || c > 65535) throw new InvalidConfigError('resources.cores', res.cores, `core ${String(c)} is not a core number`);
      if (seen.has(c)) throw new InvalidConfigError('resources.cores', res.cores, `core ${c} is listed twice`);
      seen.add(c);
    }
    if (seen.size > 0) out.cores = [...seen].sort((a, b) => a - b);
  }
  if (res.memoryBytes !== undefined) {
    const v = res.memoryBytes;
    if (!Number.isSafeInteger(v) || v < 4096) throw new InvalidConfigError('resources.memoryBytes', v, 'must be an integer of at least 4096 bytes');
    out.memoryBytes = v;
  }
  if (res.pidsMax !== undefined) {
    const v = res.pidsMax;
    if (!Number.isSafeInteger(v) || v < 1) throw new InvalidConfigError('resources.pidsMax', v, 'must be a positive integer');
    out.pidsMax = v;
  }
  return out;
}

/** cgroup v1 shares → v2 cpu.weight, as runc and Nomad convert: 1 + ((shares - 2) * 9999) / 262142. */
export function sharesToWeight(shares: number): number {
  if (shares <= 0) return 100;
  const s = Math.min(Math.max(shares, MIN_CPU_SHARES), MAX_CPU_SHARES);
  return 1 + Math.floor(((s - 2) * 9999) / 262142);
}
