/**
 * The cgroups v1 manager (legacy and hybrid hosts), laid out as Nomad 1.7: `<mount>/<parent>/<allocId>-<task>`
 * under each per-task controller (freezer, cpu, cpuacct, memory, pids; comma-joined mounts such as
 * cpu,cpuacct share one directory). In the cpuset hierarchy a task without a reservation joins
 * `<parent>/share` itself, and a task with one gets `<parent>/reserve/<allocId>-<task>`. So a
 * reservation beginning or ending is a constant number of writes (share, reserve, the reserved group),
 * whatever the number of shared tasks: the kernel moves every task of `share` with its mask.
 *
 * A v1 cpuset child must stay a subset of its parent and needs cpuset.cpus and cpuset.mems before a
 * process may join: `reserve` holds the union of the reservations, written before a reserved group's own.
 * The reservations are read from `reserve/*` under the host lock. corral 0.1's layout (`shared/<group>`
 * and `reserved/<group>`, one cpuset group per task) is still opened, kept in line, stopped and removed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupUnsupportedError } from '../errors.js';
import { PAGE_SIZE } from '../util/auxv.js';
import { coresMinus, parseCpuList, sameCores } from './cpulist.js';
import type { FsOp } from '../native.js';
import {
  BaseTaskCgroup, type GroupOnDisk, type GroupPlace, type GroupRecipe, ManagerCore, type ParentSetup, enoent, readLimitHits, removeSegments,
} from './core.js';
import { childGroups, ensureDirCg, tryRmdir } from './io.js';
import { parseGroupName } from './names.js';
import { type ManagerOptions, onlineCores, readCpuListFile } from './options.js';
import {
  type FileWrite, type Reservations, checkReservation, cpusetValue, planV1SharedRewrite, reservedCores,
} from './partition.js';
import { parseKeyValues, parseNumber, statsFromV1 } from './stats.js';
import type { CgroupLayout, CgroupStats, GroupKillOutcome, LimitHits, TaskResources } from './types.js';

/** Controllers corral uses on v1, in the order their directories are created. */
export const V1_USED_CONTROLLERS = ['freezer', 'cpuset', 'cpu', 'cpuacct', 'memory', 'pids'] as const;
export const DEFAULT_V1_PARENT = 'corral';
export const SHARE_GROUP = 'share';
export const RESERVE_GROUP = 'reserve';
/** corral 0.1's cpuset parents (one child per task in each). */
const LEGACY_SHARED = 'shared';
const LEGACY_RESERVED = 'reserved';

/** Where a task's cpuset is: the share group itself, its own reserve group, or a 0.1 per-task group. */
type CpusetKind = 'share' | 'reserve' | 'legacy-shared' | 'legacy-reserved';
const CPUSET_SUBDIR: Record<Exclude<CpusetKind, 'share'>, string> = { reserve: RESERVE_GROUP, 'legacy-shared': LEGACY_SHARED, 'legacy-reserved': LEGACY_RESERVED };

interface MountGroup {
  mountPoint: string;
  /** The used controllers this mount carries (cpu,cpuacct → both). */
  controllers: string[];
  cpuset: boolean;
}

function v1Available(layout: CgroupLayout): number[] {
  const cs = layout.v1Mounts.cpuset;
  return cs ? readCpuListFile(path.join(cs, 'cpuset.effective_cpus'), path.join(cs, 'cpuset.cpus')) ?? onlineCores() : onlineCores();
}

export class CgroupV1Manager extends ManagerCore<V1TaskCgroup> {
  readonly version = 'v1' as const;
  private readonly mounts: MountGroup[];
  private readonly used: string[];
  /** `<cpuset mount>/<parent>`, when cpuset is mounted. */
  private readonly cpusetBase: string | undefined;
  private readonly mems: string;
  private parentReady = false;
  private hasMemsw = false;

  constructor(opts: ManagerOptions = {}) {
    super(opts, 'v1', DEFAULT_V1_PARENT, v1Available);
    this.used = V1_USED_CONTROLLERS.filter((c) => this.layout.v1Mounts[c] !== undefined);
    const byMount = new Map<string, MountGroup>();
    for (const c of this.used) {
      const mp = this.layout.v1Mounts[c]!;
      const g = byMount.get(mp) ?? { mountPoint: mp, controllers: [], cpuset: false };
      g.controllers.push(c);
      if (c === 'cpuset') g.cpuset = true;
      byMount.set(mp, g);
    }
    this.mounts = [...byMount.values()];
    const cs = this.layout.v1Mounts.cpuset;
    this.cpusetBase = cs ? path.join(cs, this.parentName) : undefined;
    this.mems = cs ? rootMems(cs) : '0';
  }

  controllers(): string[] {
    return [...this.used];
  }

  protected has(controller: string): boolean {
    return this.used.includes(controller);
  }

  protected unsupported(controller: string, what: string): CgroupUnsupportedError {
    return new CgroupUnsupportedError(controller,
      `${what} needs it, but no cgroup v1 ${controller} controller is mounted under ${this.layout.root} (mounted: ${this.used.join(', ') || 'none'})`);
  }

  /**
   * The parent's set-up (idempotent): `<parent>` under each mount now; `share` and `reserve` in the
   * cpuset one, and the partition synced, under the lock by the caller.
   */
  protected parentDirs(): string[] {
    if (this.parentReady) return [];
    const out: string[] = [];
    for (const m of this.mounts) {
      let dir = m.mountPoint;
      for (const seg of this.parentName.split('/')) out.push((dir = path.join(dir, seg)));
    }
    const cs = this.cpusetBase;
    if (cs) out.push(path.join(cs, SHARE_GROUP), path.join(cs, RESERVE_GROUP));
    return out;
  }

  protected parentSetup(): ParentSetup | undefined {
    if (this.parentReady) return undefined;
    const writes: FileWrite[] = [];
    for (const m of this.mounts) {
      let dir = m.mountPoint;
      for (const seg of this.parentName.split('/')) {
        dir = path.join(dir, seg);
        const created = ensureDirCg(dir);
        if (m.cpuset && (created || this.fileEmpty(path.join(dir, 'cpuset.cpus')))) {
          writes.push([path.join(dir, 'cpuset.mems'), this.mems], [path.join(dir, 'cpuset.cpus'), cpusetValue(this.usable)]);
        }
      }
    }
    this.io.writeAll(writes);
    const cs = this.cpusetBase;
    const mem = this.layout.v1Mounts.memory;
    return {
      ...(cs ? {
        locked: () => {
          const w: FileWrite[] = [];
          for (const d of [SHARE_GROUP, RESERVE_GROUP].map((g) => path.join(cs, g))) {
            if (ensureDirCg(d) || this.fileEmpty(path.join(d, 'cpuset.mems'))) w.push([path.join(d, 'cpuset.mems'), this.mems]);
          }
          this.io.writeAll(w);
          this.resyncPartition();
        },
      } : {}),
      done: () => {
        this.hasMemsw = mem !== undefined && fs.existsSync(path.join(mem, this.parentName, 'memory.memsw.limit_in_bytes'));
        this.parentReady = true;
      },
    };
  }

  private fileEmpty(file: string): boolean {
    const t = this.io.readMaybe(file);
    return t !== undefined && t.trim() === '';
  }

  private readCpus(file: string): number[] | undefined {
    const t = this.io.readMaybe(file);
    return t === undefined ? undefined : parseCpuList(t);
  }

  protected reservations(): Reservations {
    const out = new Map<string, number[]>();
    const cs = this.cpusetBase;
    if (!cs) return out;
    const files: Array<[string, string]> = [];
    for (const sub of [RESERVE_GROUP, LEGACY_RESERVED]) {
      for (const n of childGroups(path.join(cs, sub))) if (parseGroupName(n)) files.push([n, path.join(cs, sub, n, 'cpuset.cpus')]);
    }
    const texts = this.io.readAll(files.map((f) => f[1]));
    files.forEach(([n], i) => {
      const t = texts[i];
      // A group whose cores are not written yet (its creator died in between) holds nothing.
      if (typeof t === 'string' && t.trim() !== '') out.set(n, parseCpuList(t));
    });
    return out;
  }

  /**
   * The writes that bring the partition on disk to `res`: the share pool (shrinking before a reserved
   * group may take a core), the reserve parent's union (before its children's), and corral 0.1's
   * `shared` parent and children when they exist. Nothing for what already has its value.
   */
  private partitionWrites(res: Reservations): FileWrite[] {
    const cs = this.cpusetBase!;
    const union = reservedCores(res);
    const share = coresMinus(this.usable, union);
    const out: FileWrite[] = [];
    for (const [dir, want] of [[SHARE_GROUP, share], [RESERVE_GROUP, union]] as const) {
      const file = path.join(cs, dir, 'cpuset.cpus');
      const now = this.readCpus(file);
      if (!now || !sameCores(now, want)) out.push([file, cpusetValue(want)]);
    }
    const legacy = path.join(cs, LEGACY_SHARED);
    const before = this.readCpus(path.join(legacy, 'cpuset.cpus'));
    if (before) {
      const children = childGroups(legacy).map((n) => path.join(legacy, n, 'cpuset.cpus'));
      out.push(...planV1SharedRewrite(before, share, path.join(legacy, 'cpuset.cpus'), children));
    }
    return out;
  }

  protected resyncWrites(): FileWrite[] {
    return this.cpusetBase ? this.partitionWrites(this.reservations()) : [];
  }

  /** A group's directories for a cpuset kind: per-task ones under each other mount, and the cpuset one. */
  private place(name: string, kind: CpusetKind): GroupPlace {
    const paths: Record<string, string> = {};
    const owned: string[] = [];
    const joined: string[] = [];
    for (const m of this.mounts) {
      const base = path.join(m.mountPoint, this.parentName);
      const dir = !m.cpuset ? path.join(base, name) : kind === 'share' ? path.join(base, SHARE_GROUP) : path.join(base, CPUSET_SUBDIR[kind], name);
      for (const c of m.controllers) paths[c] = dir;
      (m.cpuset && kind === 'share' ? joined : owned).push(dir);
    }
    // Every running task holds these paths: the share group's are one string per manager, and a
    // group's cgroup.procs is one string however many fields name it (about 1 KiB per task on v1).
    if (kind === 'share' && paths.cpuset) paths.cpuset = this.shared(paths.cpuset);
    const joinProcs = [...owned.map((d) => path.join(d, 'cgroup.procs')), ...joined.map((d) => this.shared(path.join(d, 'cgroup.procs')))];
    const main = paths.freezer ?? owned.find((d) => d !== paths.cpuset) ?? owned[0];
    const procs = path.join(main ?? joined[0] ?? path.join(this.layout.root, this.parentName, name), 'cgroup.procs');
    return {
      paths,
      owned,
      procs: joinProcs.find((p) => p === procs) ?? procs,
      placement: { joinProcs },
      reserved: kind === 'reserve' || kind === 'legacy-reserved',
      ...(paths.cpuset && (kind === 'share' || kind === 'legacy-shared') ? { cpusFile: this.shared(path.join(paths.cpuset, 'cpuset.cpus')) } : {}),
    };
  }

  private readonly sharedStrings = new Map<string, string>();

  /** One instance of a path that many groups hold (the share group's). Only shared parents' paths come here. */
  private shared(p: string): string {
    const have = this.sharedStrings.get(p);
    if (have !== undefined) return have;
    this.sharedStrings.set(p, p);
    return p;
  }

  protected recipe(allocId: string, taskName: string, name: string, res: TaskResources): GroupRecipe<V1TaskCgroup> {
    const cores = res.cores ?? [];
    const kind: CpusetKind = cores.length > 0 ? 'reserve' : 'share';
    const place = this.place(name, kind);
    if (kind === 'share' && place.owned.length === 0) {
      throw this.unsupported('freezer', 'a task on the share pool (it needs a group of its own besides cpuset)');
    }
    const cs = this.cpusetBase;
    return {
      reserves: cores.length > 0,
      conflicts: cs ? (['reserve', 'legacy-shared', 'legacy-reserved'] as const).filter((k) => k !== kind).map((k) => path.join(cs, CPUSET_SUBDIR[k], name)) : [],
      plan: () => {
        const ops: FsOp[] = place.owned.map((d) => ['mkdir', d] as const);
        if (cores.length > 0) {
          const r = this.reservations();
          checkReservation(this.usable, r, name, cores);
          for (const [f, v] of this.partitionWrites(new Map([...r, [name, cores]]))) ops.push(['write', f, v]);
        }
        const p = place.paths;
        const w = (dir: string, file: string, v: string) => ops.push(['write', path.join(dir, file), v]);
        if (cores.length > 0) { w(p.cpuset!, 'cpuset.cpus', cpusetValue(cores)); w(p.cpuset!, 'cpuset.mems', this.mems); }
        if (res.cpuShares !== undefined) w(p.cpu!, 'cpu.shares', String(res.cpuShares));
        if (res.memoryBytes !== undefined) {
          w(p.memory!, 'memory.limit_in_bytes', String(res.memoryBytes));
          if (this.hasMemsw) w(p.memory!, 'memory.memsw.limit_in_bytes', String(res.memoryBytes));
        }
        if (res.pidsMax !== undefined) w(p.pids!, 'pids.max', String(res.pidsMax));
        return ops;
      },
      build: () => new V1TaskCgroup(this.ctx, allocId, taskName, name, place, res),
    };
  }

  protected openGroup(allocId: string, taskName: string, name: string, res: TaskResources): V1TaskCgroup {
    let kind: CpusetKind = 'share';
    if (this.cpusetBase) {
      for (const k of ['reserve', 'legacy-reserved', 'legacy-shared'] as const) {
        if (fs.existsSync(path.join(this.cpusetBase, CPUSET_SUBDIR[k], name))) { kind = k; break; }
      }
    }
    const all = this.place(name, kind);
    const owned = all.owned.filter((d) => fs.existsSync(d));
    if (owned.length === 0) throw enoent(all.owned[0] ?? path.join(this.layout.root, this.parentName, name));
    const paths: Record<string, string> = {};
    for (const [c, d] of Object.entries(all.paths)) if (owned.includes(d) || (c === 'cpuset' && kind === 'share')) paths[c] = d;
    const place: GroupPlace = { ...all, paths, owned };
    this.ensureParent();
    // The tree is the record: a reserved group's cores are its cpuset.cpus; the memory limit is read back.
    const found: TaskResources = {};
    if (place.reserved && paths.cpuset) {
      const cores = this.readCpus(path.join(paths.cpuset, 'cpuset.cpus')) ?? [];
      if (cores.length > 0) found.cores = cores;
    }
    if (paths.memory) {
      const m = parseNumber(this.io.readMaybe(path.join(paths.memory, 'memory.limit_in_bytes')));
      if (m !== undefined && m < 2 ** 62) found.memoryBytes = m;
    }
    const { cores: _persisted, memoryBytes: _m, ...rest } = res;
    return new V1TaskCgroup(this.ctx, allocId, taskName, name, place, { ...rest, ...found });
  }

  protected groupsOnDisk(): Map<string, GroupOnDisk> {
    const out = new Map<string, GroupOnDisk>();
    const add = (dir: string, n: string, reserved: boolean) => {
      if (!parseGroupName(n)) return;
      const g = out.get(n) ?? { dirs: [], reserved: false };
      g.dirs.push(path.join(dir, n));
      g.reserved ||= reserved;
      out.set(n, g);
    };
    for (const m of this.mounts) {
      const base = path.join(m.mountPoint, this.parentName);
      if (!m.cpuset) for (const n of childGroups(base)) add(base, n, false);
    }
    if (this.cpusetBase) {
      for (const sub of [RESERVE_GROUP, LEGACY_RESERVED, LEGACY_SHARED]) {
        const dir = path.join(this.cpusetBase, sub);
        for (const n of childGroups(dir)) add(dir, n, sub !== LEGACY_SHARED);
      }
    }
    return out;
  }

  protected removeTree(): boolean {
    for (const m of this.mounts) {
      if (m.cpuset) for (const sub of [SHARE_GROUP, RESERVE_GROUP, LEGACY_SHARED, LEGACY_RESERVED]) tryRmdir(path.join(this.cpusetBase!, sub));
      removeSegments(m.mountPoint, this.parentName);
    }
    this.parentReady = false;
    return this.cpusetBase === undefined || !fs.existsSync(this.cpusetBase);
  }
}

export class V1TaskCgroup extends BaseTaskCgroup {
  private get mainDir(): string {
    return path.dirname(this.procsPath);
  }

  private freezerDir(): string {
    const d = this.paths.freezer;
    if (!d) throw new CgroupUnsupportedError('freezer', `no cgroup v1 freezer controller is mounted under ${this.ctx.layout.root}`);
    return d;
  }

  async freeze(opts: { timeoutMs?: number } = {}): Promise<void> {
    const d = this.freezerDir();
    await this.ctx.io.writeControl(path.join(d, 'freezer.state'), 'FROZEN');
    await this.ctx.io.waitFrozen(d, 1, true, opts.timeoutMs ?? this.ctx.freezeTimeoutMs, { rewrite: true });
  }

  async thaw(opts: { timeoutMs?: number } = {}): Promise<void> {
    const d = this.freezerDir();
    await this.ctx.io.writeControl(path.join(d, 'freezer.state'), 'THAWED');
    await this.ctx.io.waitFrozen(d, 1, false, opts.timeoutMs ?? this.ctx.freezeTimeoutMs);
  }

  async kill(opts: { timeoutMs?: number } = {}): Promise<GroupKillOutcome> {
    const method = this.paths.freezer ? 'freezer-v1' : 'signal-loop';
    const r = await this.ctx.io.groupKill(method, this.procsPath, this.mainDir, opts.timeoutMs ?? this.ctx.killTimeoutMs);
    return { method, signalled: r.signalled, elapsedNs: r.elapsedNs };
  }

  /**
   * `oom_kill N` of memory.oom_control (Linux 4.13+). On older kernels, with care: under_oom 1, or a
   * limit that was hit (failcnt > 0) with the peak usage within a page of the limit.
   */
  oomKilled(): boolean {
    const d = this.paths.memory;
    if (!d) return false;
    // One read on every task's exit: the others only where the kernel (before 4.13) has no count.
    const [ctl] = this.ctx.io.readAll([path.join(d, 'memory.oom_control')]);
    const kv = parseKeyValues(typeof ctl === 'string' ? ctl : undefined);
    const k = kv.get('oom_kill');
    if (k !== undefined) return k > 0;
    if (kv.get('under_oom') === 1) return true;
    const [failcnt, max, limit] = this.ctx.io.readAll(
      ['memory.failcnt', 'memory.max_usage_in_bytes', 'memory.limit_in_bytes'].map((f) => path.join(d, f)),
    ).map((x) => (typeof x === 'string' ? x : undefined));
    const f = parseNumber(failcnt) ?? 0;
    const m = parseNumber(max) ?? 0;
    const l = parseNumber(limit) ?? Infinity;
    return f > 0 && l < 2 ** 62 && m >= l - PAGE_SIZE;
  }

  /**
   * memory.oom_control `oom_kill` (absent before Linux 4.13: then no count, oomKilled() still
   * answers whether there was one) and pids.events `max`.
   */
  limitHits(): LimitHits {
    const { memory: mem, pids } = this.paths;
    const want: [keyof LimitHits, string, string][] = [];
    if (mem) want.push(['oomKills', path.join(mem, 'memory.oom_control'), 'oom_kill']);
    if (pids) want.push(['pidsLimitHits', path.join(pids, 'pids.events'), 'max']);
    return readLimitHits(this.ctx.io, want);
  }

  stats(): CgroupStats {
    const root = this.ctx.layout.root;
    const unavailable: Record<string, string> = {};
    const { cpuacct: ca, cpu, memory: mem } = this.paths;
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
    if (!ca) unavailable.cpuacct = `no cgroup v1 cpuacct controller is mounted under ${root}`;
    if (!cpu) unavailable['cpu.throttling'] = `no cgroup v1 cpu controller is mounted under ${root}`;
    if (!mem) unavailable.memory = `no cgroup v1 memory controller is mounted under ${root}`;
    const r = this.ctx.io.readAll(files).map((x) => (typeof x === 'string' ? x : undefined));
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
}

function rootMems(cpusetMount: string): string {
  for (const f of ['cpuset.effective_mems', 'cpuset.mems']) {
    try {
      const t = fs.readFileSync(path.join(cpusetMount, f), 'utf8').trim();
      if (t !== '') return t;
    } catch { /* next */ }
  }
  return '0';
}
