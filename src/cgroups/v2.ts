/**
 * The cgroups v2 manager, laid out as Nomad 1.7: `<root>/<parent>/share.slice/<allocId>-<task>.scope`
 * for tasks on the share pool, `<parent>/reserve.slice/<allocId>-<task>.scope` for tasks with
 * reserved cores. Controllers are enabled down the tree where the root offers them; on the unified
 * hierarchy of a hybrid host there are none, and a limit that needs one is refused with a
 * CgroupUnsupportedError before anything is created.
 *
 * cpusets: shared scopes leave cpuset.cpus unset and inherit share.slice's, which is the usable cores
 * minus every reservation; a reserved scope's is its cores (v2 does not require a child's cpus to be
 * a subset of its parent's). A reservation beginning or ending is two writes, whatever the number of
 * shared tasks. The reservations are read from reserve.slice under the host lock.
 * corral 0.1 put every scope directly under the parent and kept no record of reserved cores: such
 * scopes are still opened (with the task's persisted resources), stopped and cleaned up.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupUnsupportedError } from '../errors.js';
import { parseCpuList, sameCores } from './cpulist.js';
import type { FsOp } from '../native.js';
import {
  BaseTaskCgroup, type GroupOnDisk, type GroupPlace, type GroupRecipe, ManagerCore, type ParentSetup, type TaskContext, enoent, readLimitHits,
  removeSegments, words,
} from './core.js';
import { CgroupIO, childGroups, ensureDirCg, tryRmdir } from './io.js';
import { parseGroupName } from './names.js';
import { type ManagerOptions, onlineCores, readCpuListFile } from './options.js';
import { type FileWrite, type Reservations, checkReservation, cpusetValue, shareCores } from './partition.js';
import { sharesToWeight } from './resources.js';
import { parseKeyValues, statsFromV2 } from './stats.js';
import type { CgroupLayout, CgroupStats, GroupKillOutcome, LimitHits, TaskResources } from './types.js';

/** Controllers corral enables for its tasks on v2 (io is not used for limits). */
export const V2_WANTED_CONTROLLERS = ['cpu', 'cpuset', 'memory', 'pids'] as const;
export const DEFAULT_V2_PARENT = 'corral.slice';
export const SHARE_SLICE = 'share.slice';
export const RESERVE_SLICE = 'reserve.slice';

function v2Available(layout: CgroupLayout): number[] {
  const ctl = readWords(path.join(layout.root, 'cgroup.controllers'));
  return ctl.includes('cpuset') ? readCpuListFile(path.join(layout.root, 'cpuset.cpus.effective')) ?? onlineCores() : onlineCores();
}

/** What a v2 task group can do here, fixed when the parent is set up. */
interface V2Caps {
  memory: boolean;
  cpu: boolean;
  pids: boolean;
  killFile: boolean;
}

export class CgroupV2Manager extends ManagerCore<V2TaskCgroup> {
  readonly version = 'v2' as const;
  private readonly parentDir: string;
  private readonly shareDir: string;
  private readonly reserveDir: string;
  private readonly rootControllers: string[];
  /** Controllers enabled for the scopes (share.slice's subtree_control), once the parent is set up. */
  private enabled: Set<string> | undefined;
  /** The parent's set-up is complete (its partition synced). */
  private ready = false;
  private caps: V2Caps = { memory: false, cpu: false, pids: false, killFile: false };
  private hasSwapMax = false;
  /**
   * 0.1-layout scopes this process opened, with reserved cores or without: v2 0.1 kept no record of
   * reservations, so only the task's persisted resources (and this process) know which is which. A
   * 0.1 shared scope sets its own cpus: it is rewritten with the share pool; unknown ones are left alone.
   */
  private readonly legacyReserved = new Map<string, number[]>();
  private readonly legacyShared = new Set<string>();

  constructor(opts: ManagerOptions = {}) {
    super(opts, 'v2', DEFAULT_V2_PARENT, v2Available);
    this.parentDir = path.join(this.layout.root, this.parentName);
    this.shareDir = path.join(this.parentDir, SHARE_SLICE);
    this.reserveDir = path.join(this.parentDir, RESERVE_SLICE);
    this.rootControllers = readWords(path.join(this.layout.root, 'cgroup.controllers'));
  }

  /** Controllers offered for task limits: the wanted ones the root offers (enabled down the tree on first use). */
  controllers(): string[] {
    const src = this.enabled ? [...this.enabled] : this.rootControllers;
    return V2_WANTED_CONTROLLERS.filter((c) => src.includes(c));
  }

  protected has(controller: string): boolean {
    return this.enabled ? this.enabled.has(controller) : this.rootControllers.includes(controller);
  }

  protected unsupported(controller: string, what: string): CgroupUnsupportedError {
    const where = this.layout.mode === 'hybrid'
      ? `the cgroup2 hierarchy at ${this.layout.root} is the unified mount of a hybrid host and has no controllers (the ${controller} controller is bound to cgroup v1)`
      : `the ${controller} controller is not offered by ${this.layout.root} (cgroup.controllers: ${this.rootControllers.join(' ') || 'none'})`;
    return new CgroupUnsupportedError(controller, `${what} needs it, but ${where}`);
  }

  /**
   * The parent's set-up (idempotent): the parent, share.slice and reserve.slice made and the
   * controllers enabled down to them now; the share pool synced under the lock by the caller.
   */
  protected parentDirs(): string[] {
    if (this.ready) return [];
    const out: string[] = [];
    let dir = this.layout.root;
    for (const seg of [...this.parentName.split('/'), SHARE_SLICE]) out.push((dir = path.join(dir, seg)));
    out.push(this.reserveDir);
    return out;
  }

  protected parentSetup(): ParentSetup | undefined {
    if (this.ready) return undefined;
    const want = V2_WANTED_CONTROLLERS.filter((c) => this.rootControllers.includes(c));
    enableControllers(this.io, this.layout.root, want);
    let dir = this.layout.root;
    for (const seg of [...this.parentName.split('/'), SHARE_SLICE]) {
      dir = path.join(dir, seg);
      ensureDirCg(dir);
      enableControllers(this.io, dir, want.filter((c) => words(this.io.readMaybe(path.join(dir, 'cgroup.controllers'))).includes(c)));
    }
    ensureDirCg(this.reserveDir);
    enableControllers(this.io, this.reserveDir, want.filter((c) => words(this.io.readMaybe(path.join(this.reserveDir, 'cgroup.controllers'))).includes(c)));
    const enabled = new Set(words(this.io.readMaybe(path.join(this.shareDir, 'cgroup.subtree_control'))));
    this.caps = { memory: enabled.has('memory'), cpu: enabled.has('cpu'), pids: enabled.has('pids'), killFile: fs.existsSync(path.join(this.shareDir, 'cgroup.kill')) };
    this.hasSwapMax = enabled.has('memory') && fs.existsSync(path.join(this.shareDir, 'memory.swap.max'));
    this.enabled = enabled;
    return {
      ...(enabled.has('cpuset') ? { locked: () => this.resyncPartition() } : {}),
      done: () => { this.ready = true; },
    };
  }

  protected reservations(): Reservations {
    const out = new Map<string, number[]>(this.legacyReserved);
    if (!this.has('cpuset')) return out;
    const scopes = childGroups(this.reserveDir).filter((d) => d.endsWith('.scope'));
    const texts = this.io.readAll(scopes.map((d) => path.join(this.reserveDir, d, 'cpuset.cpus')));
    scopes.forEach((d, i) => {
      const t = texts[i];
      // A scope whose cores are not written yet (its creator died in between) holds nothing.
      if (typeof t === 'string' && t.trim() !== '') out.set(d.slice(0, -'.scope'.length), parseCpuList(t));
    });
    return out;
  }

  /** The writes that give the share pool `share`: share.slice, and any 0.1-layout shared scope (they set their own cpus). */
  private shareWrites(share: number[]): FileWrite[] {
    const out: FileWrite[] = [];
    const file = path.join(this.shareDir, 'cpuset.cpus');
    const now = this.io.readMaybe(file);
    if (now === undefined || now.trim() === '' || !sameCores(parseCpuList(now), share)) out.push([file, cpusetValue(share)]);
    for (const name of this.legacyShared) {
      const d = path.join(this.parentDir, `${name}.scope`);
      if (fs.existsSync(d)) out.push([path.join(d, 'cpuset.cpus'), cpusetValue(share)]);
    }
    return out;
  }

  protected resyncWrites(): FileWrite[] {
    return this.shareWrites(shareCores(this.usable, this.reservations()));
  }

  protected recipe(allocId: string, taskName: string, name: string, res: TaskResources): GroupRecipe<V2TaskCgroup> {
    this.checkSupported(res); // what the tree really enabled may be less than the root offers
    const cores = res.cores ?? [];
    const scope = `${name}.scope`;
    const dir = path.join(cores.length > 0 ? this.reserveDir : this.shareDir, scope);
    return {
      reserves: cores.length > 0,
      conflicts: [this.shareDir, this.reserveDir, this.parentDir].map((p) => path.join(p, scope)).filter((d) => d !== dir),
      plan: () => {
        const ops: FsOp[] = [];
        if (cores.length > 0) {
          const r = this.reservations();
          checkReservation(this.usable, r, name, cores);
          // The share pool shrinks first: no instant in which a shared task may run on the reserved core.
          for (const [f, v] of this.shareWrites(shareCores(this.usable, new Map([...r, [name, cores]])))) ops.push(['write', f, v]);
        }
        ops.push(['mkdir', dir]);
        if (cores.length > 0) ops.push(['write', path.join(dir, 'cpuset.cpus'), cpusetValue(cores)]);
        if (res.cpuShares !== undefined) ops.push(['write', path.join(dir, 'cpu.weight'), String(sharesToWeight(res.cpuShares))]);
        if (res.memoryBytes !== undefined) {
          ops.push(['write', path.join(dir, 'memory.max'), String(res.memoryBytes)]);
          if (this.hasSwapMax) ops.push(['write', path.join(dir, 'memory.swap.max'), '0']);
        }
        if (res.pidsMax !== undefined) ops.push(['write', path.join(dir, 'pids.max'), String(res.pidsMax)]);
        return ops;
      },
      build: () => this.group(allocId, taskName, name, dir, res, cores.length > 0),
    };
  }

  protected openGroup(allocId: string, taskName: string, name: string, res: TaskResources): V2TaskCgroup {
    const scope = `${name}.scope`;
    const dir = [this.shareDir, this.reserveDir, this.parentDir].map((p) => path.join(p, scope)).find((d) => fs.existsSync(d));
    if (!dir) throw enoent(path.join(this.shareDir, scope));
    this.ensureParent();
    if (path.dirname(dir) === this.reserveDir) {
      // The tree is the record: the scope's own cpuset.cpus holds its cores.
      const cores = this.has('cpuset') ? parseCpuList(this.io.readMaybe(path.join(dir, 'cpuset.cpus')) ?? '') : [];
      const { cores: _persisted, ...rest } = res;
      return this.group(allocId, taskName, name, dir, cores.length > 0 ? { ...rest, cores } : rest, true);
    }
    const legacy = path.dirname(dir) === this.parentDir && this.has('cpuset');
    const legacyReserved = legacy && (res.cores?.length ?? 0) > 0;
    if (legacy) this.lock.hold(() => {
      if (legacyReserved) this.legacyReserved.set(name, [...res.cores!]);
      else this.legacyShared.add(name);
      this.resyncPartition();
    });
    const { cores: _c, ...shared } = res;
    return this.group(allocId, taskName, name, dir, legacyReserved ? res : shared, legacyReserved);
  }

  private group(allocId: string, taskName: string, name: string, dir: string, res: TaskResources, reserved: boolean): V2TaskCgroup {
    const legacy = path.dirname(dir) === this.parentDir;
    const place: GroupPlace = {
      paths: { unified: dir },
      owned: [dir],
      procs: path.join(dir, 'cgroup.procs'),
      placement: { cgroupDir: dir },
      reserved,
      ...(this.has('cpuset') ? { cpusFile: path.join(legacy ? dir : this.shareDir, 'cpuset.cpus') } : {}),
    };
    const memReason = this.caps.memory ? undefined
      : this.layout.mode === 'hybrid'
        ? `no memory controller on the unified hierarchy of a hybrid host (${this.layout.root})`
        : `the memory controller is not enabled under ${this.parentDir}`;
    return new V2TaskCgroup(this.ctx, allocId, taskName, name, place, res, this.caps, memReason);
  }

  protected groupsOnDisk(): Map<string, GroupOnDisk> {
    const out = new Map<string, GroupOnDisk>();
    for (const base of [this.shareDir, this.reserveDir, this.parentDir]) {
      for (const d of childGroups(base)) {
        const name = d.endsWith('.scope') ? d.slice(0, -'.scope'.length) : '';
        if (!parseGroupName(name)) continue;
        out.set(name, { dirs: [path.join(base, d)], reserved: base === this.reserveDir || this.legacyReserved.has(name) });
      }
    }
    return out;
  }

  protected override cleanupForgotten(name: string): void {
    this.legacyReserved.delete(name);
    this.legacyShared.delete(name);
  }

  protected removeTree(): boolean {
    for (const d of [this.shareDir, this.reserveDir]) if (childGroups(d).length === 0) tryRmdir(d);
    if (childGroups(this.parentDir).length === 0) removeSegments(this.layout.root, this.parentName);
    this.enabled = undefined;
    this.ready = false;
    return !fs.existsSync(this.parentDir);
  }
}

export class V2TaskCgroup extends BaseTaskCgroup {
  constructor(
    ctx: TaskContext, allocId: string, taskName: string, name: string, place: GroupPlace, resources: TaskResources,
    private readonly caps: V2Caps,
    private readonly memReason: string | undefined,
  ) {
    super(ctx, allocId, taskName, name, place, resources);
  }

  private get dir(): string {
    return this.owned[0]!;
  }

  async freeze(opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.ctx.io.writeControl(path.join(this.dir, 'cgroup.freeze'), '1');
    await this.ctx.io.waitFrozen(this.dir, 2, true, opts.timeoutMs ?? this.ctx.freezeTimeoutMs);
  }

  async thaw(opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.ctx.io.writeControl(path.join(this.dir, 'cgroup.freeze'), '0');
    await this.ctx.io.waitFrozen(this.dir, 2, false, opts.timeoutMs ?? this.ctx.freezeTimeoutMs);
  }

  async kill(opts: { timeoutMs?: number } = {}): Promise<GroupKillOutcome> {
    const method = this.caps.killFile ? 'cgroup.kill' : 'freeze-v2';
    const r = await this.ctx.io.groupKill(method, this.procsPath, this.dir, opts.timeoutMs ?? this.ctx.killTimeoutMs);
    return { method, signalled: r.signalled, elapsedNs: r.elapsedNs };
  }

  oomKilled(): boolean {
    if (!this.caps.memory) return false;
    return (parseKeyValues(this.ctx.io.readMaybe(path.join(this.dir, 'memory.events'))).get('oom_kill') ?? 0) > 0;
  }

  /** memory.events `oom_kill` and pids.events `max`, where those controllers are enabled. */
  limitHits(): LimitHits {
    const want: [keyof LimitHits, string, string][] = [];
    if (this.caps.memory) want.push(['oomKills', path.join(this.dir, 'memory.events'), 'oom_kill']);
    if (this.caps.pids) want.push(['pidsLimitHits', path.join(this.dir, 'pids.events'), 'max']);
    return readLimitHits(this.ctx.io, want);
  }

  stats(): CgroupStats {
    const files = [path.join(this.dir, 'cpu.stat')];
    if (this.caps.memory) files.push(...['memory.current', 'memory.stat', 'memory.peak'].map((f) => path.join(this.dir, f)));
    const r = this.ctx.io.readAll(files).map((x) => (typeof x === 'string' ? x : undefined));
    const thrReason = this.caps.cpu ? undefined : 'no cpu controller here: throttling is not accounted';
    return statsFromV2({ cpuStat: r[0], memoryCurrent: r[1], memoryStat: r[2], memoryPeak: r[3] }, this.memReason, thrReason);
  }
}

function readWords(file: string): string[] {
  try {
    return words(fs.readFileSync(file, 'utf8'));
  } catch {
    return [];
  }
}

/** Enables controllers in a cgroup's subtree_control: all at once, else one by one (a refused one is skipped). */
function enableControllers(io: CgroupIO, dir: string, controllers: readonly string[]): void {
  const file = path.join(dir, 'cgroup.subtree_control');
  const have = words(io.readMaybe(file));
  const missing = controllers.filter((c) => !have.includes(c));
  if (missing.length === 0) return;
  if (io.writeSome([[file, missing.map((c) => `+${c}`).join(' ')]]).length === 0) return;
  io.writeSome(missing.map((c) => [file, `+${c}`] as const));
}
