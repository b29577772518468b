/**
 * The cpuset partition, as pure bookkeeping: reserved cores belong to one task; the shared pool is
 * every usable core minus all reservations; every task without a reservation gets the shared pool.
 * Also plans which control files to rewrite (and in which order) when a reservation begins or ends.
 */
import { CpusetConflictError, InvalidConfigError } from '../errors.js';
import { coresMinus, coresUnion, formatCpuList } from './cpulist.js';

export class CpusetPartition {
  private readonly usableSet: Set<number>;
  /** owner → its reserved cores. */
  private readonly reservations = new Map<string, number[]>();
  /** core → owner. */
  private readonly owners = new Map<number, string>();

  constructor(usable: readonly number[]) {
    this.usableSet = new Set(usable);
  }

  usable(): number[] {
    return [...this.usableSet].sort((a, b) => a - b);
  }

  /** Usable cores minus every reservation. */
  shared(): number[] {
    return this.usable().filter((c) => !this.owners.has(c));
  }

  /** Union of every reservation. */
  reserved(): number[] {
    return [...this.owners.keys()].sort((a, b) => a - b);
  }

  reservationOf(owner: string): number[] | undefined {
    const r = this.reservations.get(owner);
    return r ? [...r] : undefined;
  }

  reservationOwners(): string[] {
    return [...this.reservations.keys()];
  }

  /** The cores a task has: its reservation, or the shared pool. */
  coresOf(owner: string): number[] {
    return this.reservationOf(owner) ?? this.shared();
  }

  /**
   * Throws unless `owner` may reserve `cores`: each must be usable (InvalidConfigError naming the core,
   * field 'resources.cores') and not held by another task (CpusetConflictError). When `sharedTasks` is
   * true, a reservation that would leave the shared pool empty is refused too.
   */
  check(owner: string, cores: readonly number[], opts: { sharedTasks?: boolean } = {}): void {
    if (cores.length === 0) return;
    const notUsable = cores.filter((c) => !this.usableSet.has(c));
    if (notUsable.length > 0) {
      throw new InvalidConfigError('resources.cores', [...cores],
        `core${notUsable.length > 1 ? 's' : ''} ${notUsable.join(',')} ${notUsable.length > 1 ? 'are' : 'is'} not usable here (usable: ${formatCpuList(this.usable()) || 'none'})`);
    }
    const byOwner = new Map<string, number[]>();
    for (const c of cores) {
      const o = this.owners.get(c);
      if (o !== undefined && o !== owner) byOwner.set(o, [...(byOwner.get(o) ?? []), c]);
    }
    for (const [o, cs] of byOwner) throw new CpusetConflictError(cs, o);
    if (opts.sharedTasks && coresMinus(this.shared(), cores).length === 0) {
      throw new InvalidConfigError('resources.cores', [...cores], 'reserving these cores would leave no core for the tasks that share the pool');
    }
  }

  /** Records a reservation (after check). Returns the shared pool before and after. */
  reserve(owner: string, cores: readonly number[], opts: { sharedTasks?: boolean } = {}): { before: number[]; after: number[] } {
    const before = this.shared();
    if (cores.length === 0) return { before, after: before };
    this.check(owner, cores, opts);
    const prev = this.reservations.get(owner) ?? [];
    const all = coresUnion(prev, cores);
    this.reservations.set(owner, all);
    for (const c of all) this.owners.set(c, owner);
    return { before, after: this.shared() };
  }

  /** Records a reservation found on disk (recovery): like reserve, but a core outside the usable set is tolerated. */
  restore(owner: string, cores: readonly number[]): void {
    const held = cores.filter((c) => this.owners.has(c) && this.owners.get(c) !== owner);
    if (held.length > 0) throw new CpusetConflictError(held, this.owners.get(held[0]!)!);
    const all = coresUnion(this.reservations.get(owner) ?? [], cores);
    this.reservations.set(owner, all);
    for (const c of all) this.owners.set(c, owner);
  }

  /** Releases an owner's reservation. Returns the shared pool before and after. */
  release(owner: string): { before: number[]; after: number[]; released: number[] } {
    const before = this.shared();
    const r = this.reservations.get(owner);
    if (!r) return { before, after: before, released: [] };
    this.reservations.delete(owner);
    for (const c of r) if (this.owners.get(c) === owner) this.owners.delete(c);
    return { before, after: this.shared(), released: r };
  }
}

export type FileWrite = readonly [path: string, value: string];

/** A cpuset value as written to cpuset.cpus: an empty set is "\n" (a write of zero bytes would not reach the kernel). */
export function cpusetValue(cores: readonly number[]): string {
  return cores.length === 0 ? '\n' : formatCpuList(cores);
}

/**
 * v2: a reservation began or ended; every shared task's cpuset.cpus gets the new pool (one batch).
 * Nothing to write when the pool did not change.
 */
export function planV2SharedRewrite(before: readonly number[], after: readonly number[], sharedCpusFiles: readonly string[]): FileWrite[] {
  if (formatCpuList(before) === formatCpuList(after)) return [];
  const v = cpusetValue(after);
  return sharedCpusFiles.map((f) => [f, v] as const);
}

/**
 * v1: the shared parent's pool changes from `before` to `after`. A v1 cpuset child must stay a subset
 * of its parent, so the parent first grows to before ∪ after, then the children take `after`, then
 * the parent shrinks to `after` (a pure shrink: children, then parent; a pure grow: parent, then children).
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
  const grows = union.length > before.length;
  const shrinks = union.length > after.length;
  if (grows) out.push([sharedParentCpusFile, cpusetValue(union)]);
  for (const f of sharedChildCpusFiles) out.push([f, cpusetValue(after)]);
  if (shrinks) out.push([sharedParentCpusFile, cpusetValue(after)]);
  return out;
}

/**
 * v1: the `reserved` parent must hold every reservation. Before a reservation's group is created it
 * grows (write before the child); after a reservation's group is removed it shrinks (write after).
 */
export function planV1ReservedParent(reservedParentCpusFile: string, union: readonly number[]): FileWrite {
  return [reservedParentCpusFile, cpusetValue(union)];
}
