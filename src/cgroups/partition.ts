/**
 * The cpuset partition as pure functions over what the cgroup tree says (the reserve groups and
 * their cores, read under the host lock by the managers): reserved cores belong to one task; the
 * share pool is every usable core minus all reservations and is never empty; every task without a
 * reservation runs on the share pool, which its share parent holds (one write per change).
 */
import { CpusetConflictError, InvalidConfigError } from '../errors.js';
import { coresMinus, coresUnion, formatCpuList } from './cpulist.js';

/** Reservations found in the tree: owner (group name) → its cores. */
export type Reservations = ReadonlyMap<string, readonly number[]>;

export type FileWrite = readonly [path: string, value: string];

/** Union of every reservation. */
export function reservedCores(res: Reservations): number[] {
  let out: number[] = [];
  for (const c of res.values()) out = coresUnion(out, c);
  return out;
}

/** The share pool: usable cores minus every reservation. */
export function shareCores(usable: readonly number[], res: Reservations): number[] {
  return coresMinus(usable, reservedCores(res));
}

/**
 * Throws unless `owner` may reserve `cores` given the reservations in the tree: each core must be
 * usable (InvalidConfigError, field 'resources.cores'), held by no other task (CpusetConflictError
 * naming the holder), and at least one usable core must stay in the share pool (on v2 an empty
 * cpuset.cpus means "all of the parent's", so an empty pool cannot even be written).
 */
export function checkReservation(usable: readonly number[], res: Reservations, owner: string, cores: readonly number[]): void {
  const usableSet = new Set(usable);
  const notUsable = cores.filter((c) => !usableSet.has(c));
  if (notUsable.length > 0) {
    throw new InvalidConfigError('resources.cores', [...cores],
      `core${notUsable.length > 1 ? 's' : ''} ${notUsable.join(',')} ${notUsable.length > 1 ? 'are' : 'is'} not usable here (usable: ${formatCpuList(usable) || 'none'})`);
  }
  for (const [holder, held] of res) {
    if (holder === owner) continue;
    const taken = cores.filter((c) => held.includes(c));
    if (taken.length > 0) throw new CpusetConflictError(taken, holder);
  }
  const others = new Map(res);
  others.delete(owner);
  if (coresMinus(shareCores(usable, others), cores).length === 0) {
    throw new InvalidConfigError('resources.cores', [...cores],
      `reserving ${cores.length > 1 ? 'these cores' : 'this core'} would leave no core for the tasks that share the pool (share pool now: ${formatCpuList(shareCores(usable, others))})`);
  }
}

/** A cpuset value as written to cpuset.cpus: an empty set is "\n" (a write of zero bytes would not reach the kernel). */
export function cpusetValue(cores: readonly number[]): string {
  return cores.length === 0 ? '\n' : formatCpuList(cores);
}

/**
 * v1, corral 0.1's `shared` parent with one cpuset child per task: the pool changes from `before` to
 * `after`. A v1 cpuset child must stay a subset of its parent, so the parent first grows to
 * before ∪ after, then the children take `after`, then the parent shrinks to `after`.
 */
export function planV1SharedRewrite(
  before: readonly number[],
  after: readonly number[],
  sharedParentCpusFile: string,
  sharedChildCpusFiles: readonly string[],
): FileWrite[] {
  if (formatCpuList(before) === formatCpuList(after)) return [];
  const union = coresUnion(before, after);
  const out: FileWrite[] = [];
  if (union.length > before.length) out.push([sharedParentCpusFile, cpusetValue(union)]);
  for (const f of sharedChildCpusFiles) out.push([f, cpusetValue(after)]);
  if (union.length > after.length) out.push([sharedParentCpusFile, cpusetValue(after)]);
  return out;
}
