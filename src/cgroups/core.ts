/**
 * What the v1 and v2 managers share: options and the host lock, fingerprint, support checks, the
 * create/open preambles, clean-up of stale groups and of the parent; and, for their task groups,
 * join/pids/signal, the shared-or-reserved cpus and destroy. Each version supplies its layout
 * (where a group's directories are, how the partition is written) through the abstract hooks.
 */
import { CgroupError, CgroupUnsupportedError, InvalidConfigError } from '../errors.js';
import { formatCpuList, parseCpuList } from './cpulist.js';
import { detectCgroupLayout } from './detect.js';
import type { FsOp } from '../native.js';
import { CgroupIO, rmdirRetryAsync, signalNumber, tryRmdir } from './io.js';
import { parseKeyValues } from './stats.js';
import { DEFAULT_LOCK_DIR, HostLock, lockFileFor } from './lock.js';
import { groupName, validateParentName } from './names.js';
import { DEFAULT_FREEZE_TIMEOUT_MS, DEFAULT_KILL_TIMEOUT_MS, type ManagerOptions, restrictCores } from './options.js';
import { type FileWrite, type Reservations, shareCores } from './partition.js';
import { validateResources } from './resources.js';
import type {
  CgroupFingerprint, CgroupLayout, CgroupManager, CgroupStats, CgroupVersion, CreateOptions, GroupKillOutcome, LimitHits, SpawnPlacement,
  TaskCgroup, TaskResources,
} from './types.js';

/** What a task group needs from its manager (and nothing more: the manager's state stays private). */
export interface TaskContext {
  readonly io: CgroupIO;
  readonly layout: CgroupLayout;
  readonly freezeTimeoutMs: number;
  readonly killTimeoutMs: number;
  /** The usable cores (what a shared group runs on when its pool file is unset). */
  readonly usable: readonly number[];
  /** Called once the group's directories are gone: forget it, give its reserved cores back (under the lock, off the loop's time). */
  forget(group: BaseTaskCgroup): Promise<void>;
}

/** Where a group lives, as its manager laid it out. */
export interface GroupPlace {
  /** controller → directory (v2: { unified: dir }). A v1 shared task's cpuset entry is the share group itself. */
  paths: Record<string, string>;
  /** Directories the group owns, removed by destroy (a shared parent it joined is not one). */
  owned: string[];
  /** The cgroup.procs that counts and signals the group's processes (an owned directory's). */
  procs: string;
  placement: SpawnPlacement;
  /** The cpuset.cpus that says what a shared group runs on (its share parent's); undefined without cpusets. */
  cpusFile?: string;
  /** The group holds a reservation (in a reserve parent, or a 0.1-layout reserved group). */
  reserved: boolean;
}

export abstract class BaseTaskCgroup implements TaskCgroup {
  readonly paths: Readonly<Record<string, string>>;
  readonly placement: SpawnPlacement;
  readonly reserved: boolean;
  protected readonly owned: readonly string[];
  protected readonly procsPath: string;
  private readonly cpusFile: string | undefined;
  private readonly joinTargets: readonly string[];
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  constructor(
    protected readonly ctx: TaskContext,
    readonly allocId: string,
    readonly taskName: string,
    readonly name: string,
    place: GroupPlace,
    readonly resources: Readonly<TaskResources>,
  ) {
    this.paths = Object.freeze({ ...place.paths });
    this.placement = Object.freeze({ ...place.placement });
    this.owned = [...place.owned];
    this.procsPath = place.procs;
    this.cpusFile = place.cpusFile;
    this.reserved = place.reserved;
    this.joinTargets = place.placement.joinProcs ?? [place.procs];
  }

  cpus(): number[] {
    if (this.resources.cores && this.resources.cores.length > 0) return [...this.resources.cores];
    const t = this.cpusFile ? this.ctx.io.readMaybe(this.cpusFile) : undefined;
    return t !== undefined && t.trim() !== '' ? parseCpuList(t) : [...this.ctx.usable];
  }

  join(pid: number): void {
    this.ctx.io.writeAll(this.joinTargets.map((p) => [p, String(pid)] as const));
  }

  pids(): number[] {
    return this.ctx.io.readProcs(this.procsPath);
  }

  signal(signal: NodeJS.Signals | number): number {
    return this.ctx.io.signalGroup(this.procsPath, signalNumber(signal));
  }

  abstract freeze(opts?: { timeoutMs?: number }): Promise<void>;
  abstract thaw(opts?: { timeoutMs?: number }): Promise<void>;
  abstract kill(opts?: { timeoutMs?: number }): Promise<GroupKillOutcome>;
  abstract oomKilled(): boolean;
  abstract limitHits(): LimitHits;
  abstract stats(): CgroupStats;

  destroy(opts: { timeoutMs?: number; after?: readonly FsOp[] } = {}): Promise<boolean> {
    if (this.destroyed) return Promise.resolve(false);
    if (this.destroying) return this.destroying.then(() => false);
    this.destroying = this.doDestroy(opts.timeoutMs ?? this.ctx.killTimeoutMs, opts.after ?? []).finally(() => { this.destroying = undefined; });
    return this.destroying.then(() => (opts.after ?? []).length > 0);
  }

  private async doDestroy(timeoutMs: number, after: readonly FsOp[]): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let pids: number[] = [];
    try {
      pids = this.pids();
    } catch (err) {
      if ((err as CgroupError).code !== 'ENOENT') throw err;
    }
    if (pids.length > 0) await this.kill({ timeoutMs: Math.max(1, deadline - Date.now()) });
    // An empty group can be removed frozen or not; exits still finishing are EBUSY, retried. The
    // rmdirs run off the loop (a v1 rmdir waits for the cgroup mutex, which every other group's
    // creation and removal on the host also takes).
    await rmdirRetryAsync(this.ctx.io, this.owned, Math.max(1, deadline - Date.now()), after);
    this.destroyed = true;
    await this.ctx.forget(this);
  }
}

/**
 * How a group is made, once the parent exists: `plan` gives the steps in order (mkdirs, control-file
 * writes). It runs under the host lock when the group reserves cores (it reads the reservations from
 * the tree and checks the new one against them). `build` makes the group object once the steps ran.
 */
export interface GroupRecipe<G> {
  reserves: boolean;
  /** Directories that must not exist (the same group in another kind or layout): EEXIST naming the first found. */
  conflicts: string[];
  plan(): FsOp[];
  build(): G;
}

/**
 * A recipe's steps, led by the checks that none of its conflicts exists: in the same job as the
 * mkdirs (one pool hop; a cgroupfs lookup waits while the host's mkdirs and rmdirs hold kernfs), and
 * under the host lock for a reservation.
 */
function planOf<G>(r: GroupRecipe<G>, before: readonly FsOp[] = []): FsOp[] {
  return [...before, ...r.conflicts.map((d): FsOp => ['absent', d]), ...r.plan()];
}

/** The parent's one-time set-up: `locked` runs under the host lock (the partition), `done` marks it ready. */
export interface ParentSetup {
  locked?: () => void;
  done(): void;
}

/** A group found on disk by cleanupStale: its owned directories (children first) and whether it holds cores. */
export interface GroupOnDisk {
  dirs: string[];
  reserved: boolean;
}

export abstract class ManagerCore<G extends BaseTaskCgroup> implements CgroupManager {
  abstract readonly version: CgroupVersion;
  readonly layout: CgroupLayout;
  readonly parentName: string;
  protected readonly io: CgroupIO;
  protected readonly lock: HostLock;
  protected readonly usable: number[];
  protected readonly ctx: TaskContext;
  private readonly groups = new Map<string, G>();
  /** Names whose createAsync is in flight (a second create of one is EEXIST at once). */
  private readonly creating = new Set<string>();
  private parentSetting: Promise<void> | undefined;

  protected constructor(
    opts: ManagerOptions,
    version: CgroupVersion,
    defaultParent: string,
    availableCores: (layout: CgroupLayout) => number[],
  ) {
    const layout = opts.layout ?? detectCgroupLayout({ ...opts, version: opts.version ?? version });
    if (layout.version !== version) {
      throw new InvalidConfigError('version', layout.version, `the cgroup ${version} manager needs a ${version} layout`);
    }
    this.layout = layout;
    this.parentName = validateParentName(opts.parentName ?? defaultParent);
    this.io = new CgroupIO(opts.native);
    this.lock = new HostLock(lockFileFor(opts.lockDir ?? DEFAULT_LOCK_DIR, layout.root, this.parentName), () => this.io.native, opts.lockTimeoutMs);
    this.usable = restrictCores(availableCores(layout), opts.cores);
    this.ctx = {
      io: this.io,
      layout,
      freezeTimeoutMs: opts.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS,
      killTimeoutMs: opts.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS,
      usable: this.usable,
      forget: async (g) => this.forget(g as G),
    };
  }

  abstract controllers(): string[];
  /** Whether task groups get this controller. */
  protected abstract has(controller: string): boolean;
  protected abstract unsupported(controller: string, what: string): CgroupUnsupportedError;
  /** Reservations as the tree holds them now (reserve groups' cores, and 0.1-layout ones). */
  protected abstract reservations(): Reservations;
  /** The parent's set-up still to do (its synchronous part done by this call), or undefined when it is ready. */
  protected abstract parentSetup(): ParentSetup | undefined;
  /** The directories parentSetup makes, parents first; none once the parent is ready. */
  protected abstract parentDirs(): string[];
  /** How to make the group (the parent is ready); throws for a conflict found without the lock (EEXIST, unsupported). */
  protected abstract recipe(allocId: string, taskName: string, name: string, res: TaskResources): GroupRecipe<G>;
  /** The writes that bring the partition on disk in line with the reservations in the tree (read now). */
  protected abstract resyncWrites(): FileWrite[];
  /** Finds an existing group (either layout); throws a CgroupError ENOENT when there is none. */
  protected abstract openGroup(allocId: string, taskName: string, name: string, res: TaskResources): G;
  /** Every group of ours on disk (either layout), by name. */
  protected abstract groupsOnDisk(): Map<string, GroupOnDisk>;
  /** Under the lock: brings the share pool (and every parent of the partition) in line with the reservations in the tree. */
  protected resyncPartition(): void {
    if (this.has('cpuset')) this.writeTolerant(this.resyncWrites());
  }
  /** Removes the parent's directories (no group left: checked under the lock by the caller). True when all are gone. */
  protected abstract removeTree(): boolean;

  usableCores(): number[] {
    return [...this.usable];
  }

  sharedCores(): number[] {
    return this.has('cpuset') ? shareCores(this.usable, this.reservations()) : [...this.usable];
  }

  fingerprint(): CgroupFingerprint {
    return {
      'unique.cgroups.version': this.version,
      'cgroups.mode': this.layout.mode,
      'cgroups.root': this.layout.root,
      'cgroups.controllers': this.controllers().join(','),
      'cgroups.cores': formatCpuList(this.usable),
    };
  }

  /** Throws CgroupUnsupportedError for a limit whose controller the task groups do not get. */
  protected checkSupported(res: TaskResources): void {
    if (res.cores && res.cores.length > 0 && !this.has('cpuset')) throw this.unsupported('cpuset', 'resources.cores');
    if (res.memoryBytes !== undefined && !this.has('memory')) throw this.unsupported('memory', 'resources.memoryBytes');
    if (res.pidsMax !== undefined && !this.has('pids')) throw this.unsupported('pids', 'resources.pidsMax');
    if (res.cpuShares !== undefined && !this.has('cpu')) throw this.unsupported('cpu', 'resources.cpuShares');
  }

  /** The synchronous variant of createAsync (it blocks its thread on the kernel and, for a reservation, on the host lock). */
  create(allocId: string, taskName: string, opts: CreateOptions = {}): TaskCgroup {
    const { name, res } = this.admit(allocId, taskName, opts);
    this.ensureParent();
    const r = this.recipe(allocId, taskName, name, res);
    const make = () => this.applyPlan(planOf(r), r.reserves);
    if (r.reserves) this.lock.hold(make);
    else make();
    const g = r.build();
    this.groups.set(name, g);
    return g;
  }

  async createAsync(allocId: string, taskName: string, opts: CreateOptions = {}): Promise<TaskCgroup> {
    const { name, res } = this.admit(allocId, taskName, opts);
    this.creating.add(name);
    try {
      await this.ensureParentAsync();
      const r = this.recipe(allocId, taskName, name, res);
      const make = () => this.applyPlanAsync(planOf(r, opts.before), r.reserves);
      await (r.reserves ? this.lock.holdAsync(make) : make());
      const g = r.build();
      this.groups.set(name, g);
      return g;
    } finally {
      this.creating.delete(name);
    }
  }

  private admit(allocId: string, taskName: string, opts: CreateOptions): { name: string; res: TaskResources } {
    const name = groupName(allocId, taskName);
    const res = validateResources(opts.resources);
    this.checkSupported(res);
    if (this.groups.has(name)) throw eexist(Object.values(this.groups.get(name)!.paths)[0] ?? name);
    if (this.creating.has(name)) throw eexist(name);
    return { name, res };
  }

  protected ensureParent(): void {
    const s = this.parentSetup();
    if (!s) return;
    if (s.locked) this.lock.hold(s.locked);
    s.done();
  }

  /** ensureParent with the lock taken without blocking the loop; concurrent callers share one set-up. */
  protected ensureParentAsync(): Promise<void> {
    if (this.parentSetting) return this.parentSetting;
    const dirs = this.parentDirs();
    if (dirs.length === 0) return Promise.resolve();
    this.parentSetting = (async () => {
      // The directories first, off the loop (a cgroup mkdir waits for the kernel's cgroup mutex): the
      // set-up then finds them made and does only its reads and control-file writes here.
      await this.io.mkdirsAsync(dirs);
      const s = this.parentSetup();
      if (!s) return;
      if (s.locked) await this.lock.holdAsync(s.locked);
      s.done();
    })().finally(() => { this.parentSetting = undefined; });
    return this.parentSetting;
  }

  /** Runs a group's steps on this thread; on failure undoes what they did and throws the step's error. */
  private applyPlan(ops: FsOp[], reserves: boolean): void {
    try {
      this.io.applySync(ops);
    } catch (err) {
      throw this.undoPlan(ops, err, reserves);
    }
  }

  /** Runs a group's steps off the loop (libuv pool); on failure undoes what they did and throws the step's error. */
  private async applyPlanAsync(ops: FsOp[], reserves: boolean): Promise<void> {
    try {
      await this.io.applyAsync(ops);
    } catch (err) {
      throw this.undoPlan(ops, err, reserves);
    }
  }

  /** Removes the directories the steps before the failed one made; a reservation's partition is put back. */
  private undoPlan(ops: FsOp[], err: unknown, reserves: boolean): unknown {
    const failed = (err as { index?: number }).index ?? ops.length;
    const made = ops.slice(0, failed).filter((o) => o[0] === 'mkdir').map((o) => o[1]);
    for (const d of made.reverse()) tryRmdir(d);
    if (reserves) this.io.writeSome(this.resyncWrites());
    const op = ops[failed];
    if ((op?.[0] === 'mkdir' || op?.[0] === 'absent') && (err as CgroupError).code === 'EEXIST') return Object.assign(eexist(op[1]), { index: failed });
    return err;
  }

  open(allocId: string, taskName: string, opts: { resources?: TaskResources } = {}): TaskCgroup {
    const name = groupName(allocId, taskName);
    const existing = this.groups.get(name);
    if (existing) return existing;
    const g = this.openGroup(allocId, taskName, name, validateResources(opts.resources));
    this.groups.set(name, g);
    return g;
  }

  async cleanupStale(opts: { keep?: (name: string) => boolean } = {}): Promise<{ removed: string[]; nonEmpty: string[] }> {
    const removed: string[] = [];
    const nonEmpty: string[] = [];
    let freed = false;
    for (const [name, g] of this.groupsOnDisk()) {
      if (this.groups.has(name) || opts.keep?.(name)) continue;
      const busy = g.dirs.some((d) => {
        try {
          return this.io.readProcs(`${d}/cgroup.procs`).length > 0;
        } catch {
          return false; // gone
        }
      });
      if (busy) { nonEmpty.push(name); continue; }
      const ok = g.dirs.every((d) => tryRmdir(d) === true);
      (ok ? removed : nonEmpty).push(name);
      if (ok && g.reserved) freed = true;
    }
    if (freed) await this.lock.holdAsync(() => this.resyncPartition());
    return { removed, nonEmpty };
  }

  async removeParentIfEmpty(): Promise<void> {
    if (this.groups.size > 0 || this.creating.size > 0) return;
    await this.lock.holdAsync(() => {
      if (this.groupsOnDisk().size > 0) return;
      if (this.removeTree()) this.lock.unlinkHeld();
    });
  }

  /** A group's directories are gone: drop what the version keeps about it in memory. */
  protected cleanupForgotten(_name: string): void { /* nothing by default */ }

  private async forget(g: G): Promise<void> {
    if (this.groups.get(g.name) === g) this.groups.delete(g.name);
    this.cleanupForgotten(g.name);
    // The cores go back to the share pool as the tree now says (whoever else reserved meanwhile).
    if (g.reserved && this.has('cpuset')) await this.lock.holdAsync(() => this.resyncPartition());
  }

  /** Throws the first failure of a best-effort batch other than a group that vanished meanwhile. */
  protected writeTolerant(writes: ReadonlyArray<readonly [string, string]>): void {
    const bad = this.io.writeSome(writes).find((e) => e.code !== 'ENOENT');
    if (bad) throw bad;
  }
}

export function eexist(dir: string): CgroupError {
  return new CgroupError('EEXIST', 17, 'mkdir', dir, `EEXIST: cgroup ${dir} already exists`);
}

export function enoent(dir: string): CgroupError {
  return new CgroupError('ENOENT', 2, 'open', dir, `ENOENT: cgroup ${dir} does not exist`);
}

/** Removes a nested parent name's directories under `base`, deepest first, stopping at the first that stays. */
export function removeSegments(base: string, parentName: string): void {
  const segs = parentName.split('/');
  for (let i = segs.length; i > 0; i--) {
    if (tryRmdir([base, ...segs.slice(0, i)].join('/')) !== true) break;
  }
}

/** Words of a control file (cgroup.controllers, subtree_control). */
export function words(text: string | undefined): string[] {
  return (text ?? '').split(/\s+/).filter((w) => w !== '');
}

/** Reads limit-hit counters in one batch: each [field, file, key of its "key value" lines]; unreadable → left out. */
export function readLimitHits(io: CgroupIO, want: [keyof LimitHits, string, string][]): LimitHits {
  const r = io.readAll(want.map((w) => w[1]));
  const out: LimitHits = {};
  want.forEach(([field, , key], i) => {
    const text = r[i];
    const n = parseKeyValues(typeof text === 'string' ? text : undefined).get(key);
    if (n !== undefined) out[field] = n;
  });
  return out;
}
