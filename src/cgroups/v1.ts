/**
 * The cgroups v1 manager (legacy and hybrid hosts): `<mount>/<parent>/<allocId>-<task>` under each
 * controller used (freezer, cpuset, cpu, cpuacct, memory, pids; comma-joined mounts such as
 * cpu,cpuacct share one directory). cpusets Nomad-style: `<cpuset>/<parent>/shared` holds the shared
 * pool and every task without a reservation, `<cpuset>/<parent>/reserved` the union of reservations
 * and one child per reserving task. A v1 cpuset child must stay a subset of its parent and needs
 * cpuset.cpus and cpuset.mems before a process may join: the writes are ordered accordingly.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupError, CgroupUnsupportedError, InvalidConfigError } from '../errors.js';
import { coresUnion, formatCpuList, parseCpuList, sameCores } from './cpulist.js';
import { detectCgroupLayout } from './detect.js';
import { CgroupIO, childGroups, ensureDirCg, rmdirRetry, signalNumber, tryRmdir } from './io.js';
import { groupName, parseGroupName, validateAllocId, validateParentName, validateTaskName } from './names.js';
import {
  DEFAULT_FREEZE_TIMEOUT_MS, DEFAULT_KILL_TIMEOUT_MS, type ManagerOptions, onlineCores, readCpuListFile, restrictCores,
} from './options.js';
import { CpusetPartition, type FileWrite, cpusetValue, planV1SharedRewrite } from './partition.js';
import { validateResources } from './resources.js';
import { parseKeyValues, parseNumber, statsFromV1 } from './stats.js';
import type {
  CgroupFingerprint, CgroupLayout, CgroupManager, CgroupStats, CreateOptions, GroupKillOutcome, SpawnPlacement,
  TaskCgroup, TaskResources,
} from './types.js';

/** Controllers corral uses on v1, in the order their directories are created. */
export const V1_USED_CONTROLLERS = ['freezer', 'cpuset', 'cpu', 'cpuacct', 'memory', 'pids'] as const;
export const DEFAULT_V1_PARENT = 'corral';
export const SHARED_PARTITION = 'shared';
export const RESERVED_PARTITION = 'reserved';

type Partition = typeof SHARED_PARTITION | typeof RESERVED_PARTITION;

interface MountGroup {
  mountPoint: string;
  /** The used controllers this mount carries (cpu,cpuacct → both). */
  controllers: string[];
  cpuset: boolean;
}

export class CgroupV1Manager implements CgroupManager {
  readonly version = 'v1' as const;
  readonly layout: CgroupLayout;
  readonly parentName: string;
  /** @internal */ readonly io: CgroupIO;
  /** @internal */ readonly partition: CpusetPartition;
  /** @internal */ readonly groups = new Map<string, V1TaskCgroup>();
  /** @internal */ readonly freezeTimeoutMs: number;
  /** @internal */ readonly killTimeoutMs: number;
  /** Distinct mounts of the used controllers. */
  private readonly mounts: MountGroup[];
  private readonly used: string[];
  private parentReady = false;
  private mems = '0';
  /** What the shared / reserved parents' cpuset.cpus hold on disk (as far as this manager knows). */
  private sharedOnDisk: number[] = [];
  /** @internal */ hasMemsw = false;

  constructor(opts: ManagerOptions = {}) {
    const layout = opts.layout ?? detectCgroupLayout({ ...opts, version: opts.version ?? 'v1' });
    if (layout.version !== 'v1') throw new InvalidConfigError('version', layout.version, 'CgroupV1Manager needs a v1 layout');
    this.layout = layout;
    this.parentName = validateParentName(opts.parentName ?? DEFAULT_V1_PARENT);
    this.io = new CgroupIO(opts.native);
    this.freezeTimeoutMs = opts.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
    this.killTimeoutMs = opts.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
    this.used = V1_USED_CONTROLLERS.filter((c) => layout.v1Mounts[c] !== undefined);
    const byMount = new Map<string, MountGroup>();
    for (const c of this.used) {
      const mp = layout.v1Mounts[c]!;
      const g = byMount.get(mp) ?? { mountPoint: mp, controllers: [], cpuset: false };
      g.controllers.push(c);
      if (c === 'cpuset') g.cpuset = true;
      byMount.set(mp, g);
    }
    this.mounts = [...byMount.values()];
    const cs = layout.v1Mounts.cpuset;
    const available = cs ? readCpuListFile(path.join(cs, 'cpuset.effective_cpus'), path.join(cs, 'cpuset.cpus')) ?? onlineCores() : onlineCores();
    this.partition = new CpusetPartition(restrictCores(available, opts.cores));
    this.sharedOnDisk = this.partition.shared();
  }

  controllers(): string[] {
    return [...this.used];
  }

  usableCores(): number[] {
    return this.partition.usable();
  }

  sharedCores(): number[] {
    return this.partition.shared();
  }

  fingerprint(): CgroupFingerprint {
    return {
      'unique.cgroups.version': 'v1',
      'cgroups.mode': this.layout.mode,
      'cgroups.root': this.layout.root,
      'cgroups.controllers': this.controllers().join(','),
      'cgroups.cores': formatCpuList(this.usableCores()),
    };
  }

  /** `<mount>/<parent>` of a controller, or undefined when it is not mounted. */
  parentDirOf(controller: string): string | undefined {
    const mp = this.layout.v1Mounts[controller];
    return mp && this.used.includes(controller) ? path.join(mp, this.parentName) : undefined;
  }

  private get cpusetParent(): string | undefined {
    return this.parentDirOf('cpuset');
  }

  /** @internal `<cpuset>/<parent>/shared` or `/reserved`. */
  partitionDir(p: Partition): string | undefined {
    const cp = this.cpusetParent;
    return cp ? path.join(cp, p) : undefined;
  }

  /** Creates `<parent>` under each mount and the cpuset partitions. Idempotent. */
  ensureParent(): void {
    if (this.parentReady) return;
    const writes: FileWrite[] = [];
    for (const m of this.mounts) {
      const segs = this.parentName.split('/');
      let dir = m.mountPoint;
      for (const seg of segs) {
        dir = path.join(dir, seg);
        const created = ensureDirCg(dir);
        if (m.cpuset && (created || this.fileEmpty(path.join(dir, 'cpuset.cpus')))) {
          writes.push([path.join(dir, 'cpuset.mems'), this.rootMems(m.mountPoint)], [path.join(dir, 'cpuset.cpus'), cpusetValue(this.usableCores())]);
        }
      }
    }
    this.io.writeAll(writes);
    const cp = this.cpusetParent;
    if (cp) {
      const w: FileWrite[] = [];
      const shared = path.join(cp, SHARED_PARTITION);
      const reserved = path.join(cp, RESERVED_PARTITION);
      this.mems = this.rootMems(this.layout.v1Mounts.cpuset!);
      if (ensureDirCg(shared) || this.fileEmpty(path.join(shared, 'cpuset.cpus'))) {
        w.push([path.join(shared, 'cpuset.mems'), this.mems], [path.join(shared, 'cpuset.cpus'), cpusetValue(this.partition.shared())]);
        this.sharedOnDisk = this.partition.shared();
      } else {
        this.sharedOnDisk = this.readCpus(path.join(shared, 'cpuset.cpus')) ?? [];
      }
      if (ensureDirCg(reserved) || this.fileEmpty(path.join(reserved, 'cpuset.mems'))) {
        w.push([path.join(reserved, 'cpuset.mems'), this.mems]);
      }
      this.io.writeAll(w);
    }
    const mem = this.parentDirOf('memory');
    this.hasMemsw = mem !== undefined && fs.existsSync(path.join(mem, 'memory.memsw.limit_in_bytes'));
    this.parentReady = true;
  }

  /** A cpu list control file through the addon, or undefined when unreadable. */
  private readCpus(file: string): number[] | undefined {
    const t = this.io.readMaybe(file);
    return t === undefined ? undefined : parseCpuList(t);
  }

  private fileEmpty(file: string): boolean {
    const t = this.io.readMaybe(file);
    return t !== undefined && t.trim() === '';
  }

  private rootMems(cpusetMount: string): string {
    for (const f of ['cpuset.effective_mems', 'cpuset.mems']) {
      try {
        const t = fs.readFileSync(path.join(cpusetMount, f), 'utf8').trim();
        if (t !== '') return t;
      } catch { /* next */ }
    }
    return '0';
  }

  private unsupported(controller: string, what: string): CgroupUnsupportedError {
    return new CgroupUnsupportedError(controller,
      `${what} needs it, but no cgroup v1 ${controller} controller is mounted under ${this.layout.root} (mounted: ${this.used.join(', ') || 'none'})`);
  }

  private checkSupported(res: TaskResources): void {
    if (res.cores && res.cores.length > 0 && !this.used.includes('cpuset')) throw this.unsupported('cpuset', 'resources.cores');
    if (res.memoryBytes !== undefined && !this.used.includes('memory')) throw this.unsupported('memory', 'resources.memoryBytes');
    if (res.pidsMax !== undefined && !this.used.includes('pids')) throw this.unsupported('pids', 'resources.pidsMax');
    if (res.cpuShares !== undefined && !this.used.includes('cpu')) throw this.unsupported('cpu', 'resources.cpuShares');
  }

  /** @internal controller → group directory, for a group in partition `p`. */
  dirsOf(name: string, p: Partition): Record<string, string> {
    const out: Record<string, string> = {};
    for (const m of this.mounts) {
      const base = path.join(m.mountPoint, this.parentName);
      const dir = m.cpuset ? path.join(base, p, name) : path.join(base, name);
      for (const c of m.controllers) out[c] = dir;
    }
    return out;
  }

  private sharedChildCpusFiles(except?: string): string[] {
    const sd = this.partitionDir(SHARED_PARTITION);
    if (!sd) return [];
    return childGroups(sd).filter((n) => n !== except).map((n) => path.join(sd, n, 'cpuset.cpus'));
  }

  /** Writes that bring the shared parent (and its children) from what is on disk to `target`. */
  private sharedRewrite(target: number[], except?: string, before = this.sharedOnDisk): FileWrite[] {
    const sd = this.partitionDir(SHARED_PARTITION);
    if (!sd) return [];
    return planV1SharedRewrite(before, target, path.join(sd, 'cpuset.cpus'), this.sharedChildCpusFiles(except));
  }

  create(allocId: string, taskName: string, opts: CreateOptions = {}): TaskCgroup {
    const name = groupName(allocId, taskName);
    const res = validateResources(opts.resources);
    this.checkSupported(res);
    const cores = res.cores ?? [];
    const cpusetOn = this.used.includes('cpuset');
    const p: Partition = cores.length > 0 ? RESERVED_PARTITION : SHARED_PARTITION;
    if (this.groups.has(name)) throw eexist(this.dirsOf(name, p)[this.used[0]!]!);
    if (cpusetOn) {
      if (cores.length > 0) {
        const sd = this.partitionDir(SHARED_PARTITION);
        this.partition.check(name, cores, { sharedTasks: sd !== undefined && childGroups(sd).length > 0 });
      } else if (this.partition.shared().length === 0) {
        throw new InvalidConfigError('resources.cores', [], 'every usable core is reserved; no core is left for a task that shares the pool');
      }
    }
    this.ensureParent();
    const dirs = this.dirsOf(name, p);
    if (cpusetOn) {
      const other = this.dirsOf(name, p === SHARED_PARTITION ? RESERVED_PARTITION : SHARED_PARTITION).cpuset!;
      if (fs.existsSync(other)) throw eexist(other);
    }
    const distinct = [...new Set(Object.values(dirs))];
    const created: string[] = [];
    let reserved = false;
    try {
      for (const d of distinct) {
        try {
          fs.mkdirSync(d);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw eexist(d);
          throw CgroupError.from(err, d);
        }
        created.push(d);
      }
      const writes: FileWrite[] = [];
      if (cpusetOn) {
        const cs = dirs.cpuset!;
        if (cores.length > 0) {
          const { after } = this.partition.reserve(name, cores, { sharedTasks: this.sharedChildCpusFiles().length > 0 });
          reserved = true;
          // Shared children shrink before their parent; the reserved parent grows before its child.
          writes.push(...this.sharedRewrite(after));
          writes.push([path.join(this.partitionDir(RESERVED_PARTITION)!, 'cpuset.cpus'), cpusetValue(this.partition.reserved())]);
          writes.push([path.join(cs, 'cpuset.cpus'), cpusetValue(cores)]);
        } else {
          const shared = this.partition.shared();
          if (!sameCores(shared, this.sharedOnDisk)) writes.push(...this.sharedRewrite(shared, name));
          writes.push([path.join(cs, 'cpuset.cpus'), cpusetValue(shared)]);
        }
        writes.push([path.join(cs, 'cpuset.mems'), this.mems]);
      }
      if (res.cpuShares !== undefined) writes.push([path.join(dirs.cpu!, 'cpu.shares'), String(res.cpuShares)]);
      if (res.memoryBytes !== undefined) {
        writes.push([path.join(dirs.memory!, 'memory.limit_in_bytes'), String(res.memoryBytes)]);
        if (this.hasMemsw) writes.push([path.join(dirs.memory!, 'memory.memsw.limit_in_bytes'), String(res.memoryBytes)]);
      }
      if (res.pidsMax !== undefined) writes.push([path.join(dirs.pids!, 'pids.max'), String(res.pidsMax)]);
      try {
        this.io.writeAll(writes);
      } finally {
        if (cpusetOn) this.sharedOnDisk = this.partition.shared();
      }
    } catch (err) {
      for (const d of created.reverse()) tryRmdir(d);
      if (reserved) this.releaseCores(name);
      throw err;
    }
    const g = new V1TaskCgroup(this, allocId, taskName, name, dirs, res);
    this.groups.set(name, g);
    return g;
  }

  /**
   * Releases a reservation after its group is gone: the reserved parent shrinks, then the shared
   * parent grows, then the shared children. Best effort for vanished children (ENOENT).
   */
  private releaseCores(name: string): void {
    const { released, after } = this.partition.release(name);
    if (released.length === 0) return;
    const rd = this.partitionDir(RESERVED_PARTITION);
    const sd = this.partitionDir(SHARED_PARTITION);
    if (!rd || !sd) return;
    const before = this.readCpus(path.join(sd, 'cpuset.cpus')) ?? this.sharedOnDisk;
    const writes: FileWrite[] = [[path.join(rd, 'cpuset.cpus'), cpusetValue(this.partition.reserved())], ...this.sharedRewrite(after, undefined, before)];
    const errs = this.io.writeSome(writes);
    this.sharedOnDisk = this.readCpus(path.join(sd, 'cpuset.cpus')) ?? after;
    const bad = errs.find((e) => e.code !== 'ENOENT');
    if (bad) throw bad;
  }

  open(allocId: string, taskName: string, _opts: { resources?: TaskResources } = {}): TaskCgroup {
    validateAllocId(allocId);
    validateTaskName(taskName);
    const name = `${allocId}-${taskName}`;
    const existing = this.groups.get(name);
    if (existing) return existing;
    let p: Partition = SHARED_PARTITION;
    if (this.used.includes('cpuset') && fs.existsSync(this.dirsOf(name, RESERVED_PARTITION).cpuset!)) p = RESERVED_PARTITION;
    const all = this.dirsOf(name, p);
    const dirs: Record<string, string> = {};
    for (const [c, d] of Object.entries(all)) if (fs.existsSync(d)) dirs[c] = d;
    if (Object.keys(dirs).length === 0) {
      const first = all[this.used[0]!] ?? path.join(this.layout.root, this.parentName, name);
      throw new CgroupError('ENOENT', 2, 'open', first, `ENOENT: cgroup ${first} does not exist`);
    }
    this.ensureParent();
    const res: TaskResources = {};
    if (p === RESERVED_PARTITION) {
      const cores = parseCpuList(this.io.read(path.join(dirs.cpuset!, 'cpuset.cpus')));
      if (cores.length > 0) {
        this.partition.restore(name, cores);
        res.cores = cores;
      }
    }
    if (dirs.memory) {
      const m = parseNumber(this.io.readMaybe(path.join(dirs.memory, 'memory.limit_in_bytes')));
      if (m !== undefined && m < 2 ** 62) res.memoryBytes = m;
    }
    const g = new V1TaskCgroup(this, allocId, taskName, name, dirs, res);
    this.groups.set(name, g);
    return g;
  }

  /** Every group name of ours found on disk → its directories. */
  private namesOnDisk(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    const add = (base: string, n: string) => {
      if (!parseGroupName(n)) return;
      out.set(n, [...(out.get(n) ?? []), path.join(base, n)]);
    };
    for (const m of this.mounts) {
      const base = path.join(m.mountPoint, this.parentName);
      if (m.cpuset) {
        for (const p of [SHARED_PARTITION, RESERVED_PARTITION]) for (const n of childGroups(path.join(base, p))) add(path.join(base, p), n);
      } else {
        for (const n of childGroups(base)) add(base, n);
      }
    }
    return out;
  }

  cleanupStale(opts: { keep?: (name: string) => boolean } = {}): { removed: string[]; nonEmpty: string[] } {
    const removed: string[] = [];
    const nonEmpty: string[] = [];
    let touchedReserved = false;
    for (const [name, dirs] of this.namesOnDisk()) {
      if (this.groups.has(name) || opts.keep?.(name)) continue;
      let busy = false;
      for (const d of dirs) {
        try {
          if (this.io.readProcs(path.join(d, 'cgroup.procs')).length > 0) busy = true;
        } catch { /* gone */ }
      }
      if (busy) { nonEmpty.push(name); continue; }
      let ok = true;
      for (const d of dirs) {
        if (tryRmdir(d) !== true) ok = false;
        else if (d.includes(`/${RESERVED_PARTITION}/`)) touchedReserved = true;
      }
      (ok ? removed : nonEmpty).push(name);
    }
    if (touchedReserved && this.parentReady) this.resyncPartitions();
    return { removed, nonEmpty };
  }

  /** After stale reserved groups went away: the reserved parent holds what reserved children remain, shared gets the rest. */
  private resyncPartitions(): void {
    const rd = this.partitionDir(RESERVED_PARTITION);
    const sd = this.partitionDir(SHARED_PARTITION);
    if (!rd || !sd) return;
    let union = this.partition.reserved();
    for (const n of childGroups(rd)) union = coresUnion(union, this.readCpus(path.join(rd, n, 'cpuset.cpus')) ?? []);
    const shared = this.usableCores().filter((c) => !union.includes(c));
    const before = this.readCpus(path.join(sd, 'cpuset.cpus')) ?? [];
    this.io.writeSome([[path.join(rd, 'cpuset.cpus'), cpusetValue(union)], ...this.sharedRewrite(shared, undefined, before)]);
    this.sharedOnDisk = this.readCpus(path.join(sd, 'cpuset.cpus')) ?? shared;
  }

  removeParentIfEmpty(): void {
    if (this.groups.size > 0 || this.namesOnDisk().size > 0) return;
    const segs = this.parentName.split('/');
    for (const m of this.mounts) {
      const base = path.join(m.mountPoint, this.parentName);
      if (m.cpuset) {
        tryRmdir(path.join(base, SHARED_PARTITION));
        tryRmdir(path.join(base, RESERVED_PARTITION));
      }
      for (let i = segs.length; i > 0; i--) {
        if (tryRmdir(path.join(m.mountPoint, ...segs.slice(0, i))) !== true) break;
      }
    }
    this.parentReady = false;
  }

  /** @internal Called by a group's destroy once its directories are gone. */
  forget(name: string): void {
    this.groups.delete(name);
    this.releaseCores(name);
  }
}

export class V1TaskCgroup implements TaskCgroup {
  readonly paths: Readonly<Record<string, string>>;
  readonly placement: SpawnPlacement;
  private readonly distinct: string[];
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  constructor(
    private readonly mgr: CgroupV1Manager,
    readonly allocId: string,
    readonly taskName: string,
    readonly name: string,
    dirs: Record<string, string>,
    readonly resources: Readonly<TaskResources>,
  ) {
    this.paths = Object.freeze({ ...dirs });
    this.distinct = [...new Set(Object.values(dirs))];
    this.placement = Object.freeze({ joinProcs: this.distinct.map((d) => path.join(d, 'cgroup.procs')) });
  }

  /** The directory whose cgroup.procs counts the group's processes (the freezer's, else the first). */
  private get mainDir(): string {
    return this.paths.freezer ?? this.distinct[0]!;
  }

  cpus(): number[] {
    return this.mgr.partition.coresOf(this.name);
  }

  join(pid: number): void {
    this.mgr.io.writeAll(this.placement.joinProcs!.map((p) => [p, String(pid)] as const));
  }

  pids(): number[] {
    return this.mgr.io.readProcs(path.join(this.mainDir, 'cgroup.procs'));
  }

  private freezerDir(): string {
    const d = this.paths.freezer;
    if (!d) throw new CgroupUnsupportedError('freezer', `no cgroup v1 freezer controller is mounted under ${this.mgr.layout.root}`);
    return d;
  }

  async freeze(opts: { timeoutMs?: number } = {}): Promise<void> {
    const d = this.freezerDir();
    this.mgr.io.writeAll([[path.join(d, 'freezer.state'), 'FROZEN']]);
    await this.mgr.io.waitFrozen(d, 1, true, opts.timeoutMs ?? this.mgr.freezeTimeoutMs);
  }

  async thaw(opts: { timeoutMs?: number } = {}): Promise<void> {
    const d = this.freezerDir();
    this.mgr.io.writeAll([[path.join(d, 'freezer.state'), 'THAWED']]);
    await this.mgr.io.waitFrozen(d, 1, false, opts.timeoutMs ?? this.mgr.freezeTimeoutMs);
  }

  signal(signal: NodeJS.Signals | number): number {
    return this.mgr.io.signalGroup(path.join(this.mainDir, 'cgroup.procs'), signalNumber(signal));
  }

  async kill(opts: { timeoutMs?: number } = {}): Promise<GroupKillOutcome> {
    const method = this.paths.freezer ? 'freezer-v1' : 'signal-loop';
    const procs = path.join(this.mainDir, 'cgroup.procs');
    const r = await this.mgr.io.groupKill(method, procs, this.mainDir, opts.timeoutMs ?? this.mgr.killTimeoutMs);
    return { method, signalled: r.signalled, elapsedNs: r.elapsedNs };
  }

  /**
   * `oom_kill N` of memory.oom_control (Linux 4.13+). On older kernels, with care: under_oom 1, or a
   * limit that was hit (failcnt > 0) with the peak usage at the limit.
   */
  oomKilled(): boolean {
    const d = this.paths.memory;
    if (!d) return false;
    const [ctl, failcnt, max, limit] = this.mgr.io.readAll(
      ['memory.oom_control', 'memory.failcnt', 'memory.max_usage_in_bytes', 'memory.limit_in_bytes'].map((f) => path.join(d, f)),
    ).map((x) => (typeof x === 'string' ? x : undefined));
    const kv = parseKeyValues(ctl);
    const k = kv.get('oom_kill');
    if (k !== undefined) return k > 0;
    if (kv.get('under_oom') === 1) return true;
    const f = parseNumber(failcnt) ?? 0;
    const m = parseNumber(max) ?? 0;
    const l = parseNumber(limit) ?? Infinity;
    return f > 0 && l < 2 ** 62 && m >= l - 4096;
  }

  stats(): CgroupStats {
    const unavailable: Record<string, string> = {};
    const ca = this.paths.cpuacct;
    const cpu = this.paths.cpu;
    const mem = this.paths.memory;
    const files: string[] = [];
    const idx: Record<string, number> = {};
    const want = (key: string, dir: string | undefined, file: string) => {
      if (!dir) return;
      idx[key] = files.length;
      files.push(path.join(dir, file));
    };
    want('usage', ca, 'cpuacct.usage');
    want('user', ca, 'cpuacct.usage_user');
    want('sys', ca, 'cpuacct.usage_sys');
    want('stat', ca, 'cpuacct.stat');
    want('cpuStat', cpu, 'cpu.stat');
    want('memUsage', mem, 'memory.usage_in_bytes');
    want('memStat', mem, 'memory.stat');
    want('memMax', mem, 'memory.max_usage_in_bytes');
    if (!ca) unavailable.cpuacct = `no cgroup v1 cpuacct controller is mounted under ${this.mgr.layout.root}`;
    if (!cpu) unavailable['cpu.throttling'] = `no cgroup v1 cpu controller is mounted under ${this.mgr.layout.root}`;
    if (!mem) unavailable.memory = `no cgroup v1 memory controller is mounted under ${this.mgr.layout.root}`;
    const r = this.mgr.io.readAll(files).map((x) => (typeof x === 'string' ? x : undefined));
    const get = (k: string) => (idx[k] === undefined ? undefined : r[idx[k]!]);
    return statsFromV1({
      cpuacctUsage: get('usage'),
      cpuacctUsageUser: get('user'),
      cpuacctUsageSys: get('sys'),
      cpuacctStat: get('stat'),
      cpuStat: get('cpuStat'),
      memoryUsage: get('memUsage'),
      memoryStat: get('memStat'),
      memoryMaxUsage: get('memMax'),
    }, unavailable);
  }

  destroy(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.destroying ??= this.doDestroy(opts.timeoutMs ?? this.mgr.killTimeoutMs).finally(() => { this.destroying = undefined; });
    return this.destroying;
  }

  private async doDestroy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let pids: number[] = [];
    try {
      pids = this.pids();
    } catch (err) {
      if ((err as CgroupError).code !== 'ENOENT') throw err;
    }
    if (pids.length > 0) await this.kill({ timeoutMs: Math.max(1, deadline - Date.now()) });
    await rmdirRetry(this.distinct, Math.max(1, deadline - Date.now()));
    this.destroyed = true;
    this.mgr.forget(this.name);
  }
}

function eexist(dir: string): CgroupError {
  return new CgroupError('EEXIST', 17, 'mkdir', dir, `EEXIST: cgroup ${dir} already exists`);
}
