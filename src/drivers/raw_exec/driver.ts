/**
 * RawExecDriver: host commands, each in its own cgroup (or, with noCgroups, its own session), on the
 * driver contract. Nomad's drivers/rawexec/driver.go with the executor folded in: validation first,
 * then cgroup, then a native spawn already inside the group, a pidfd watch for the exit, and every
 * failure undone. What every driver shares (task table, events, waits, recovery loop, shutdown) is
 * DriverCore's; this file holds raw_exec's hooks.
 */
import { DriverUnavailableError, InvalidConfigError, SpawnError, TaskExistsError } from '../../errors.js';
import { groupName } from '../../cgroups/names.js';
import { native } from '../../native.js';
import { TaskStore } from '../../store/task-store.js';
import { sleepUnless } from '../../util/abort.js';
import type { CgroupManager, TaskCgroup } from '../../cgroups/types.js';
import type {
  Capabilities, ExecTaskResult, Fingerprint, TaskConfig, TaskHandle, TaskResourceUsage,
} from '../contract.js';
import { type CoreOptions, DriverCore, type RecoverAllResult as CoreRecoverAllResult } from '../core/driver.js';
import { isLive, killUntilGone, readProcStat, sessionMembers } from '../core/proc.js';
import { openCgroupManager } from './cgroups.js';
import { type RawExecPluginConfig, type ResolvedPluginConfig, resolvePluginConfig, validateTask } from './config.js';
import { execInTask } from './exec.js';
import { type RawExecDriverState, RawExecTask } from './task.js';
import { FdSet, openOutput } from './stdio.js';

export const RAW_EXEC = 'raw_exec';

export interface RawExecDriverOptions extends RawExecPluginConfig, CoreOptions {}

export interface RecoverAllResult extends CoreRecoverAllResult {
  /** Empty groups of ours that no task owned, removed. */
  staleRemoved: string[];
  /** Groups of ours that no task owns but that still hold processes: reported, left alone. */
  staleNonEmpty: string[];
}

type Sig = { name: NodeJS.Signals; number: number };

export class RawExecDriver extends DriverCore<RawExecTask> {
  readonly config: ResolvedPluginConfig;
  private readonly opts: RawExecDriverOptions;
  private manager: CgroupManager | undefined;

  constructor(opts: RawExecDriverOptions = {}) {
    const config = resolvePluginConfig(opts);
    super(RAW_EXEC, new TaskStore(config.stateDir), opts);
    this.config = config;
    this.opts = opts;
    this.manager = opts.cgroupManager;
  }

  capabilities(): Capabilities {
    return { sendSignals: true, exec: true, fsIsolation: 'none' };
  }

  /** The cgroup manager (created on first use), or undefined with noCgroups. */
  cgroupManager(): CgroupManager | undefined {
    if (this.config.noCgroups) return undefined;
    if (!this.manager) {
      try {
        this.manager = openCgroupManager({
          ...(this.config.cgroupParent !== undefined ? { parent: this.config.cgroupParent } : {}),
          ...(this.opts.cgroupRoot !== undefined ? { root: this.opts.cgroupRoot } : {}),
          ...(this.opts.cgroupVersion !== undefined ? { version: this.opts.cgroupVersion } : {}),
          killTimeoutMs: this.config.groupKillTimeoutMs,
        });
      } catch (err) {
        throw new DriverUnavailableError(RAW_EXEC, `cgroups cannot be used (${(err as Error).message}); set noCgroups to run without them`, { cause: err });
      }
    }
    return this.manager;
  }

  private emitterFor(subject: { id: string; allocId: string; taskName: string }) {
    return (type: string, message: string, annotations?: Record<string, string>) => this.emit(subject, type, message, annotations);
  }

  protected fingerprintOnce(): Fingerprint {
    if (!this.config.enabled) return { health: 'undetected', healthDescription: 'raw_exec is disabled', attributes: { 'driver.raw_exec': false } };
    const attributes: Record<string, string | number | boolean> = { 'driver.raw_exec': true };
    try {
      native();
    } catch (err) {
      return { health: 'unhealthy', healthDescription: (err as Error).message, attributes: { ...attributes, 'driver.raw_exec': false } };
    }
    if (this.config.noCgroups) {
      attributes['driver.raw_exec.cgroups'] = 'off';
      attributes['cgroups.mode'] = 'off';
      return { health: 'healthy', healthDescription: 'healthy (cgroups off: tasks are tracked by session and process group)', attributes };
    }
    try {
      const m = this.cgroupManager()!;
      Object.assign(attributes, m.fingerprint());
      attributes['driver.raw_exec.cgroups'] = 'on';
      attributes['driver.raw_exec.cgroup_parent'] = m.parentName;
      return { health: 'healthy', healthDescription: 'healthy', attributes };
    } catch (err) {
      attributes['driver.raw_exec.cgroups'] = 'unavailable';
      return { health: 'unhealthy', healthDescription: (err as Error).message, attributes };
    }
  }

  // ---- start -------------------------------------------------------------------------------

  protected async start(cfg: TaskConfig): Promise<TaskHandle> {
    if (!this.config.enabled) throw new DriverUnavailableError(RAW_EXEC, 'it is disabled in the plugin config (enabled: false)');
    const mgr = this.cgroupManager();
    const v = await validateTask(cfg, { plugin: this.config, ...(mgr ? { usableCores: mgr.usableCores(), controllers: mgr.controllers() } : {}) });
    if (this.tasks.has(v.id)) throw new TaskExistsError(v.id);
    const fds = new FdSet();
    let cg: TaskCgroup | undefined;
    let spawned: { pid: number; pidfd: number } | undefined;
    let sigPidfd = -1;
    let persisted = false;
    try {
      const out = v.stdoutFd ?? (v.stdoutPath ? fds.add(openOutput(v.stdoutPath)) : -1);
      const errFd = v.stderrFd ?? (v.stderrPath ? fds.add(openOutput(v.stderrPath)) : -1);
      if (mgr) cg = mgr.create(v.allocId, v.name, { resources: v.resources });
      const placement = cg?.placement ?? {};
      spawned = native().spawn({
        file: v.file,
        argv: v.argv,
        envp: v.envp,
        cwd: v.cwd,
        ...(v.user ? { uid: v.uid, gid: v.gid, groups: v.user.groups } : {}),
        setsid: true,
        stdio: [v.stdinFd ?? -1, out, errFd],
        ...(placement.cgroupDir ? { cgroupDir: placement.cgroupDir } : {}),
        ...(placement.joinProcs ? { joinProcs: [...placement.joinProcs] } : {}),
        ...(v.oomScoreAdj !== undefined ? { oomScoreAdj: v.oomScoreAdj } : {}),
      });
      fds.closeAll();
      sigPidfd = native().pidfdOpen(spawned.pid);
      // Not reaped yet (only our watch reaps), so the stat is there even if it already exited.
      const st = readProcStat(spawned.pid);
      if (!st) throw new SpawnError(v.id, `/proc/${spawned.pid}/stat unreadable right after spawn`);
      const state: RawExecDriverState = {
        pid: spawned.pid,
        startTime: st.starttime,
        pgid: spawned.pid,
        cgroup: cg && mgr ? { version: mgr.version, parentName: mgr.parentName, name: cg.name, paths: { ...cg.paths } } : null,
        uid: v.uid,
        gid: v.gid,
        groups: v.user?.groups ?? [],
        file: v.file,
        cwd: v.cwd,
        env: v.env,
      };
      const handle: TaskHandle<RawExecDriverState> = {
        version: 1,
        driver: RAW_EXEC,
        taskId: v.id,
        allocId: v.allocId,
        taskName: v.name,
        startedAt: new Date().toISOString(),
        config: cfg,
        driverState: state,
      };
      this.store.put(handle as unknown as TaskHandle);
      persisted = true;
      const task = this.newTask(handle, cg, false);
      task.attach(spawned.pidfd, sigPidfd, true);
      this.adopt(task);
      task.emitStarted(v.removedEnv);
      return JSON.parse(JSON.stringify(handle)) as TaskHandle;
    } catch (err) {
      await this.undoStart(v.id, spawned, sigPidfd, cg, persisted).catch(() => {});
      throw err;
    } finally {
      fds.closeAll();
    }
  }

  private newTask(handle: TaskHandle<RawExecDriverState>, cgroup: TaskCgroup | undefined, recovered: boolean): RawExecTask {
    return new RawExecTask({
      handle, cgroup, recovered, groupKillTimeoutMs: this.config.groupKillTimeoutMs,
      emit: this.emitterFor({ id: handle.taskId, allocId: handle.allocId, taskName: handle.taskName }),
    });
  }

  /** Undoes a failed start: no process, no group, no state file. Every step runs even if one before it failed. */
  private async undoStart(id: string, spawned: { pid: number; pidfd: number } | undefined, sigPidfd: number, cg: TaskCgroup | undefined, persisted: boolean): Promise<void> {
    const n = native();
    const errors: unknown[] = [];
    const step = async (f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    if (spawned) {
      await step(async () => {
        const exited = new Promise<void>((resolve, reject) => {
          try {
            n.pidfdSendSignal(spawned.pidfd, 9);
          } catch {
            /* already gone */
          }
          try {
            n.watchExit(spawned.pidfd, spawned.pid, true, () => resolve());
          } catch (err) {
            reject(err);
          }
        });
        await sleepUnless(this.config.groupKillTimeoutMs, [], exited);
      });
    }
    if (sigPidfd >= 0) await step(() => n.closeFd(sigPidfd));
    if (cg) await step(() => cg.destroy({ timeoutMs: this.config.groupKillTimeoutMs }));
    else if (spawned && this.config.noCgroups) {
      await step(() => killUntilGone(() => sessionMembers(spawned.pid).map((p) => p.pid), this.config.groupKillTimeoutMs, `task ${id}`));
    }
    if (persisted) await step(() => this.store.delete(id));
    if (errors.length > 0) throw errors[0];
  }

  // ---- recovery ----------------------------------------------------------------------------

  /**
   * Agent start-up: re-attaches every raw_exec task in the state dir, then removes the empty groups of
   * ours that no task owns (left by a crash) and reports the non-empty ones. Recovery comes first so
   * that reserved cores are known before a new task computes the shared pool. Assumes one agent per
   * cgroup parent (two would also disagree on the cpuset partition).
   */
  override async recoverAll(): Promise<RecoverAllResult> {
    const { result: base, handles } = await this.recoverStored();
    const result: RecoverAllResult = { ...base, staleRemoved: [], staleNonEmpty: [] };
    const mgr = this.cgroupManager();
    if (mgr) {
      const owned = new Set(handles.map((h) => groupName(h.allocId, h.taskName)));
      const stale = mgr.cleanupStale({ keep: (name) => owned.has(name) });
      result.staleRemoved = stale.removed;
      result.staleNonEmpty = stale.nonEmpty;
    }
    return result;
  }

  protected async recover(handle: TaskHandle): Promise<void> {
    const s = handle.driverState as unknown as RawExecDriverState;
    if (!Number.isInteger(s.pid) || s.pid <= 1 || !Number.isInteger(s.startTime)) {
      throw new InvalidConfigError('handle.driverState', s, 'is not a raw_exec driver state (pid, startTime)');
    }
    let cg: TaskCgroup | undefined;
    if (s.cgroup) {
      const mgr = this.cgroupManager();
      if (mgr) {
        try {
          // The persisted resources tell a v2 manager which cores this group holds (v2 keeps no partition on disk).
          const resources = handle.config?.resources;
          cg = mgr.open(handle.allocId, handle.taskName, resources ? { resources } : undefined);
        } catch {
          cg = undefined; // the group is gone: so is the task
        }
      }
    }
    const task = this.newTask(handle as unknown as TaskHandle<RawExecDriverState>, cg, true);
    const same = () => {
      const st = readProcStat(s.pid);
      return isLive(st) && st.starttime === s.startTime;
    };
    let attached = false;
    if (same()) {
      const n = native();
      let a = -1;
      let b = -1;
      try {
        a = n.pidfdOpen(s.pid);
        b = n.pidfdOpen(s.pid);
        // Checked again after opening: the pidfds now pin this very process.
        if (same()) {
          task.attach(a, b, false);
          attached = true;
        }
      } catch {
        /* it exited meanwhile */
      }
      if (!attached) {
        if (a >= 0) n.closeFd(a);
        if (b >= 0) n.closeFd(b);
      }
    }
    this.adopt(task);
    task.emitRecovered(attached);
    if (!attached) {
      task.markGone(`exit status unknown: the task (pid ${s.pid}) ended while the agent was not attached to it${readProcStat(s.pid) ? ' (its pid now belongs to another process)' : ''}`);
    }
  }

  // ---- the task's life ---------------------------------------------------------------------

  protected stop(task: RawExecTask, timeoutMs: number, sig: Sig): Promise<void> {
    return task.stop(timeoutMs, sig.number, this.lifeSignal);
  }

  protected async destroy(task: RawExecTask): Promise<string> {
    if (task.running || task.pids().length > 0) await task.stop(0, 9, this.lifeSignal);
    if (task.cgroup) await task.cgroup.destroy({ timeoutMs: this.config.groupKillTimeoutMs });
    task.detach();
    task.destroyed = true;
    return 'task destroyed: processes killed, cgroup removed, handle forgotten';
  }

  protected async signal(task: RawExecTask, sig: Sig): Promise<void> {
    task.signal(sig.number);
  }

  protected exec(task: RawExecTask, cmd: string[], timeoutMs: number, signal: AbortSignal): Promise<ExecTaskResult> {
    return execInTask(task, cmd, timeoutMs, this.config.groupKillTimeoutMs, signal);
  }

  // ---- stats -------------------------------------------------------------------------------

  /** One resource sample now (the CLI reads peak usage with it before destroying). */
  sampleStats(taskId: string): TaskResourceUsage {
    return this.task(taskId).sample(undefined);
  }

  protected stats(task: RawExecTask, intervalMs: number, signal: AbortSignal): AsyncIterable<TaskResourceUsage> {
    return (async function* () {
      let prev: TaskResourceUsage | undefined;
      while (!signal.aborted && !task.destroyed) {
        const wasRunning = task.running;
        let s: TaskResourceUsage;
        try {
          s = task.sample(prev);
        } catch (err) {
          if (!task.running || task.destroyed) return;
          throw err;
        }
        yield s;
        prev = s;
        if (!wasRunning) return;
        await sleepUnless(intervalMs, [signal], task.exited);
      }
    })();
  }

  /** Stops watching every task (they keep running). */
  protected closeDriver(): void {
    for (const t of this.tasks.values()) t.detach();
    this.tasks.clear();
  }
}
