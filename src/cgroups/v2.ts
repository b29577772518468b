/**
 * The cgroups v2 manager: one directory per task, `<root>/<parent>/<allocId>-<task>.scope`.
 * Controllers are enabled in the parent's cgroup.subtree_control where the root offers them; on the
 * unified hierarchy of a hybrid host there are none, and a limit that needs one is refused with a
 * CgroupUnsupportedError before anything is created. cpusets are computed in-process: on every
 * reservation change every shared task's cpuset.cpus is rewritten in one native batch.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupError, CgroupUnsupportedError, InvalidConfigError } from '../errors.js';
import { formatCpuList } from './cpulist.js';
import { detectCgroupLayout } from './detect.js';
import { CgroupIO, childGroups, ensureDirCg, mkdirCg, rmdirRetry, signalNumber, tryRmdir } from './io.js';
import { groupName, parseGroupName, validateAllocId, validateParentName, validateTaskName } from './names.js';
import {
  DEFAULT_FREEZE_TIMEOUT_MS, DEFAULT_KILL_TIMEOUT_MS, type ManagerOptions, onlineCores, readCpuListFile, restrictCores,
} from './options.js';
import { CpusetPartition, type FileWrite, cpusetValue, planV2SharedRewrite } from './partition.js';
import { sharesToWeight, validateResources } from './resources.js';
import { parseKeyValues, statsFromV2 } from './stats.js';
import type {
  CgroupFingerprint, CgroupLayout, CgroupManager, CgroupStats, CreateOptions, GroupKillOutcome, SpawnPlacement,
  TaskCgroup, TaskResources,
} from './types.js';

/** Controllers corral enables for its tasks on v2 (io is not used for limits). */
export const V2_WANTED_CONTROLLERS = ['cpu', 'cpuset', 'memory', 'pids'] as const;

export const DEFAULT_V2_PARENT = 'corral.slice';

export class CgroupV2Manager implements CgroupManager {
  readonly version = 'v2' as const;
  readonly layout: CgroupLayout;
  readonly parentName: string;
  /** `<root>/<parentName>`. */
  readonly parentDir: string;
  /** @internal */ readonly io: CgroupIO;
  /** @internal */ readonly partition: CpusetPartition;
  /** @internal */ readonly groups = new Map<string, V2TaskCgroup>();
  /** @internal */ readonly freezeTimeoutMs: number;
  /** @internal */ readonly killTimeoutMs: number;
  private readonly rootControllers: string[];
  private enabled: Set<string> | undefined;
  /** @internal */ hasKillFile = false;
  /** @internal */ hasSwapMax = false;

  constructor(opts: ManagerOptions = {}) {
    const layout = opts.layout ?? detectCgroupLayout({ ...opts, version: opts.version ?? 'v2' });
    if (layout.version !== 'v2') throw new InvalidConfigError('version', layout.version, 'CgroupV2Manager needs a v2 layout');
    this.layout = layout;
    this.parentName = validateParentName(opts.parentName ?? DEFAULT_V2_PARENT);
    this.parentDir = path.join(layout.root, this.parentName);
    this.io = new CgroupIO(opts.native);
    this.freezeTimeoutMs = opts.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
    this.killTimeoutMs = opts.killTimeoutMs ?? DEFAULT_KILL_TIMEOUT_MS;
    this.rootControllers = readWords(path.join(layout.root, 'cgroup.controllers'));
    const available = this.rootControllers.includes('cpuset')
      ? readCpuListFile(path.join(layout.root, 'cpuset.cpus.effective')) ?? onlineCores()
      : onlineCores();
    this.partition = new CpusetPartition(restrictCores(available, opts.cores));
  }

  /** Controllers offered for task limits: the wanted ones the root offers (enabled in the parent on first use). */
  controllers(): string[] {
    const src = this.enabled ? [...this.enabled] : this.rootControllers;
    return V2_WANTED_CONTROLLERS.filter((c) => src.includes(c));
  }

  usableCores(): number[] {
    return this.partition.usable();
  }

  sharedCores(): number[] {
    return this.partition.shared();
  }

  fingerprint(): CgroupFingerprint {
    return {
      'unique.cgroups.version': 'v2',
      'cgroups.mode': this.layout.mode,
      'cgroups.root': this.layout.root,
      'cgroups.controllers': this.controllers().join(','),
      'cgroups.cores': formatCpuList(this.usableCores()),
    };
  }

  /** Creates the parent and enables the controllers in the root's and the parent's subtree_control. Idempotent. */
  ensureParent(): void {
    if (this.enabled) return;
    const want = V2_WANTED_CONTROLLERS.filter((c) => this.rootControllers.includes(c));
    enableControllers(this.io, this.layout.root, want);
    // Nested parent names: each level must exist and pass the controllers down.
    const segs = this.parentName.split('/');
    let dir = this.layout.root;
    for (let i = 0; i < segs.length; i++) {
      dir = path.join(dir, segs[i]!);
      ensureDirCg(dir);
      const offered = words(this.io.readMaybe(path.join(dir, 'cgroup.controllers')));
      enableControllers(this.io, dir, want.filter((c) => offered.includes(c)));
    }
    this.enabled = new Set(words(this.io.readMaybe(path.join(this.parentDir, 'cgroup.subtree_control'))));
    this.hasKillFile = fs.existsSync(path.join(this.parentDir, 'cgroup.kill'));
    this.hasSwapMax = this.enabled.has('memory') && fs.existsSync(path.join(this.parentDir, 'memory.swap.max'));
  }

  /** @internal Whether a controller is (or can be) enabled for the task groups. */
  offers(controller: string): boolean {
    return this.enabled ? this.enabled.has(controller) : this.rootControllers.includes(controller);
  }

  private unsupported(controller: string, what: string): CgroupUnsupportedError {
    const where = this.layout.mode === 'hybrid'
      ? `the cgroup2 hierarchy at ${this.layout.root} is the unified mount of a hybrid host and has no controllers (the ${controller} controller is bound to cgroup v1)`
      : `the ${controller} controller is not offered by ${this.layout.root} (cgroup.controllers: ${this.rootControllers.join(' ') || 'none'})`;
    return new CgroupUnsupportedError(controller, `${what} needs it, but ${where}`);
  }

  /** @internal Throws CgroupUnsupportedError for a limit whose controller is missing. */
  checkSupported(res: TaskResources): void {
    if (res.cores && res.cores.length > 0 && !this.offers('cpuset')) throw this.unsupported('cpuset', 'resources.cores');
    if (res.memoryBytes !== undefined && !this.offers('memory')) throw this.unsupported('memory', 'resources.memoryBytes');
    if (res.pidsMax !== undefined && !this.offers('pids')) throw this.unsupported('pids', 'resources.pidsMax');
    if (res.cpuShares !== undefined && !this.offers('cpu')) throw this.unsupported('cpu', 'resources.cpuShares');
  }

  dirOf(name: string): string {
    return path.join(this.parentDir, `${name}.scope`);
  }

  /** @internal cpuset.cpus files of every shared group (other than `except`). */
  sharedCpusFiles(except?: string): string[] {
    if (!this.offers('cpuset')) return [];
    const out: string[] = [];
    for (const [n, g] of this.groups) {
      if (n === except || this.partition.reservationOf(n)) continue;
      out.push(path.join(g.dir, 'cpuset.cpus'));
    }
    return out;
  }

  private hasSharedGroups(except?: string): boolean {
    for (const n of this.groups.keys()) if (n !== except && !this.partition.reservationOf(n)) return true;
    return false;
  }

  create(allocId: string, taskName: string, opts: CreateOptions = {}): TaskCgroup {
    const name = groupName(allocId, taskName);
    const res = validateResources(opts.resources);
    this.checkSupported(res);
    if (this.groups.has(name)) throw new CgroupError('EEXIST', 17, 'mkdir', this.dirOf(name), `EEXIST: cgroup ${this.dirOf(name)} already exists`);
    const cores = res.cores ?? [];
    const cpusetOn = this.offers('cpuset');
    if (cpusetOn) {
      if (cores.length > 0) this.partition.check(name, cores, { sharedTasks: this.hasSharedGroups() });
      else if (this.partition.shared().length === 0) {
        throw new InvalidConfigError('resources.cores', [], 'every usable core is reserved; no core is left for a task that shares the pool');
      }
    }
    this.ensureParent();
    this.checkSupported(res);
    const dir = this.dirOf(name);
    try {
      mkdirCg(dir);
    } catch (err) {
      const e = err as CgroupError;
      if (e.code === 'EEXIST') throw new CgroupError('EEXIST', 17, 'mkdir', dir, `EEXIST: cgroup ${dir} already exists`);
      throw e;
    }
    let reserved = false;
    try {
      const writes: FileWrite[] = [];
      if (res.cpuShares !== undefined) writes.push([path.join(dir, 'cpu.weight'), String(sharesToWeight(res.cpuShares))]);
      if (cpusetOn) {
        if (cores.length > 0) {
          const { before, after } = this.partition.reserve(name, cores, { sharedTasks: this.hasSharedGroups() });
          reserved = true;
          writes.push([path.join(dir, 'cpuset.cpus'), cpusetValue(cores)]);
          writes.push(...planV2SharedRewrite(before, after, this.sharedCpusFiles(name)));
        } else {
          writes.push([path.join(dir, 'cpuset.cpus'), cpusetValue(this.partition.shared())]);
        }
      }
      if (res.memoryBytes !== undefined) {
        writes.push([path.join(dir, 'memory.max'), String(res.memoryBytes)]);
        if (this.hasSwapMax) writes.push([path.join(dir, 'memory.swap.max'), '0']);
      }
      if (res.pidsMax !== undefined) writes.push([path.join(dir, 'pids.max'), String(res.pidsMax)]);
      this.io.writeAll(writes);
    } catch (err) {
      if (reserved) {
        const { before, after } = this.partition.release(name);
        this.io.writeSome(planV2SharedRewrite(before, after, this.sharedCpusFiles(name)));
      }
      tryRmdir(dir);
      throw err;
    }
    const g = new V2TaskCgroup(this, allocId, taskName, name, dir, res);
    this.groups.set(name, g);
    return g;
  }

  /**
   * Re-opens an existing group. v2 keeps no record of which cores were reserved: pass the task's
   * resources (as persisted) so its reservation is restored; without them the group counts as shared.
   */
  open(allocId: string, taskName: string, opts: { resources?: TaskResources } = {}): TaskCgroup {
    validateAllocId(allocId);
    validateTaskName(taskName);
    const name = `${allocId}-${taskName}`;
    const existing = this.groups.get(name);
    if (existing) return existing;
    const res = validateResources(opts.resources);
    const dir = this.dirOf(name);
    if (!fs.existsSync(dir)) throw new CgroupError('ENOENT', 2, 'open', dir, `ENOENT: cgroup ${dir} does not exist`);
    this.ensureParent();
    if (res.cores && res.cores.length > 0 && this.offers('cpuset')) this.partition.restore(name, res.cores);
    const g = new V2TaskCgroup(this, allocId, taskName, name, dir, res);
    this.groups.set(name, g);
    return g;
  }

  cleanupStale(opts: { keep?: (name: string) => boolean } = {}): { removed: string[]; nonEmpty: string[] } {
    const removed: string[] = [];
    const nonEmpty: string[] = [];
    for (const d of childGroups(this.parentDir)) {
      if (!d.endsWith('.scope')) continue;
      const name = d.slice(0, -'.scope'.length);
      if (!parseGroupName(name) || this.groups.has(name) || opts.keep?.(name)) continue;
      const dir = path.join(this.parentDir, d);
      let pids: number[];
      try {
        pids = this.io.readProcs(path.join(dir, 'cgroup.procs'));
      } catch {
        continue;
      }
      if (pids.length > 0) { nonEmpty.push(name); continue; }
      if (tryRmdir(dir) === true) removed.push(name);
      else nonEmpty.push(name);
    }
    return { removed, nonEmpty };
  }

  removeParentIfEmpty(): void {
    if (this.groups.size > 0 || childGroups(this.parentDir).length > 0) return;
    const segs = this.parentName.split('/');
    for (let i = segs.length; i > 0; i--) {
      const r = tryRmdir(path.join(this.layout.root, ...segs.slice(0, i)));
      if (r !== true) break;
    }
    this.enabled = undefined;
  }

  /** @internal Called by a group's destroy once its directory is gone. */
  forget(name: string): void {
    this.groups.delete(name);
    const { before, after } = this.partition.release(name);
    const errs = this.io.writeSome(planV2SharedRewrite(before, after, this.sharedCpusFiles(name)));
    const bad = errs.find((e) => e.code !== 'ENOENT');
    if (bad) throw bad;
  }
}

export class V2TaskCgroup implements TaskCgroup {
  readonly paths: Readonly<Record<string, string>>;
  readonly placement: SpawnPlacement;
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  constructor(
    private readonly mgr: CgroupV2Manager,
    readonly allocId: string,
    readonly taskName: string,
    readonly name: string,
    readonly dir: string,
    readonly resources: Readonly<TaskResources>,
  ) {
    this.paths = Object.freeze({ unified: dir });
    this.placement = Object.freeze({ cgroupDir: dir });
  }

  private get procsPath(): string {
    return path.join(this.dir, 'cgroup.procs');
  }

  cpus(): number[] {
    return this.mgr.partition.coresOf(this.name);
  }

  join(pid: number): void {
    this.mgr.io.writeAll([[this.procsPath, String(pid)]]);
  }

  pids(): number[] {
    return this.mgr.io.readProcs(this.procsPath);
  }

  async freeze(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.mgr.io.writeAll([[path.join(this.dir, 'cgroup.freeze'), '1']]);
    await this.mgr.io.waitFrozen(this.dir, 2, true, opts.timeoutMs ?? this.mgr.freezeTimeoutMs);
  }

  async thaw(opts: { timeoutMs?: number } = {}): Promise<void> {
    this.mgr.io.writeAll([[path.join(this.dir, 'cgroup.freeze'), '0']]);
    await this.mgr.io.waitFrozen(this.dir, 2, false, opts.timeoutMs ?? this.mgr.freezeTimeoutMs);
  }

  signal(signal: NodeJS.Signals | number): number {
    return this.mgr.io.signalGroup(this.procsPath, signalNumber(signal));
  }

  async kill(opts: { timeoutMs?: number } = {}): Promise<GroupKillOutcome> {
    const method = this.mgr.hasKillFile ? 'cgroup.kill' : 'freeze-v2';
    const r = await this.mgr.io.groupKill(method, this.procsPath, this.dir, opts.timeoutMs ?? this.mgr.killTimeoutMs);
    return { method, signalled: r.signalled, elapsedNs: r.elapsedNs };
  }

  oomKilled(): boolean {
    if (!this.mgr.offers('memory')) return false;
    const ev = parseKeyValues(this.mgr.io.readMaybe(path.join(this.dir, 'memory.events')));
    return (ev.get('oom_kill') ?? 0) > 0;
  }

  stats(): CgroupStats {
    const memOn = this.mgr.offers('memory');
    const files = [path.join(this.dir, 'cpu.stat')];
    if (memOn) files.push(path.join(this.dir, 'memory.current'), path.join(this.dir, 'memory.stat'), path.join(this.dir, 'memory.peak'));
    const r = this.mgr.io.readAll(files).map((x) => (typeof x === 'string' ? x : undefined));
    const memReason = memOn ? undefined
      : this.mgr.layout.mode === 'hybrid'
        ? `no memory controller on the unified hierarchy of a hybrid host (${this.mgr.layout.root})`
        : `the memory controller is not enabled under ${this.mgr.parentDir}`;
    const thrReason = this.mgr.offers('cpu') ? undefined : 'no cpu controller here: throttling is not accounted';
    return statsFromV2({ cpuStat: r[0], memoryCurrent: r[1], memoryStat: r[2], memoryPeak: r[3] }, memReason, thrReason);
  }

  destroy(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.destroying ??= this.doDestroy(opts.timeoutMs ?? this.mgr.killTimeoutMs).finally(() => { this.destroying = undefined; });
    return this.destroying;
  }

  private async doDestroy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (fs.existsSync(this.dir)) {
      let pids: number[] = [];
      try {
        pids = this.pids();
      } catch (err) {
        if ((err as CgroupError).code !== 'ENOENT') throw err;
      }
      if (pids.length > 0) await this.kill({ timeoutMs: Math.max(1, deadline - Date.now()) });
      // A frozen, empty group can still be removed; thaw is not needed.
      await rmdirRetry([this.dir], Math.max(1, deadline - Date.now()));
    }
    this.destroyed = true;
    this.mgr.forget(this.name);
  }
}

function readWords(file: string): string[] {
  try {
    return words(fs.readFileSync(file, 'utf8'));
  } catch {
    return [];
  }
}

function words(text: string | undefined): string[] {
  return (text ?? '').split(/\s+/).filter((w) => w !== '');
}

/** Enables controllers in a cgroup's subtree_control: all at once, else one by one (a refused one is skipped). */
function enableControllers(io: CgroupIO, dir: string, controllers: readonly string[]): void {
  const file = path.join(dir, 'cgroup.subtree_control');
  const have = words(io.readMaybe(file));
  const missing = controllers.filter((c) => !have.includes(c));
  if (missing.length === 0) return;
  const errs = io.writeSome([[file, missing.map((c) => `+${c}`).join(' ')]]);
  if (errs.length === 0) return;
  io.writeSome(missing.map((c) => [file, `+${c}`] as const));
}

