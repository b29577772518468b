/**
 * RawExecDriver: host commands, each in its own cgroup (or, with noCgroups, its own session), on the
 * driver contract. Nomad's drivers/rawexec/driver.go with the executor folded in: validation first,
 * then cgroup, then a native spawn already inside the group, a pidfd watch for the exit, and every
 * failure undone.
 */
import { AbortError, CorralError, DriverUnavailableError, InvalidConfigError, TaskExistsError, TaskNotFoundError, TaskRunningError } from '../../errors.js';
import { setMaxListeners } from 'node:events';
import { groupName } from '../../cgroups/names.js';
import { native } from '../../native.js';
import { parseSignal } from '../../signals.js';
import { type StoreProblem, TaskStore } from '../../store/task-store.js';
import { EventHub } from '../../util/event-hub.js';
import type { CgroupManager, TaskCgroup } from '../../cgroups/types.js';
import type {
  Capabilities, ExecTaskResult, ExitResult, Fingerprint, TaskConfig, TaskDriver, TaskEvent, TaskHandle, TaskResourceUsage, TaskStatus,
} from '../contract.js';
import { openCgroupManager } from './cgroups.js';
import { type RawExecPluginConfig, type ResolvedPluginConfig, resolvePluginConfig, validateTask } from './config.js';
import { DEFAULT_EXEC_TIMEOUT_MS, execInTask } from './exec.js';
import { type RawExecDriverState, TaskRunner } from './handle.js';
import { killUntilGone, readProcStat, sessionMembers, sleep } from './procfs.js';
import { FdSet, openOutput } from './stdio.js';

export const RAW_EXEC = 'raw_exec';

export interface RawExecDriverOptions extends RawExecPluginConfig {
  /** Aborting it shuts the driver down (as shutdown()). */
  signal?: AbortSignal;
}

export interface RecoverAllResult {
  recovered: string[];
  failed: { taskId: string; error: Error }[];
  /** State files that could not be read (corrupt or foreign), skipped. */
  problems: StoreProblem[];
  /** Empty groups of ours that no task owned, removed. */
  staleRemoved: string[];
  /** Groups of ours that no task owns but that still hold processes: reported, left alone. */
  staleNonEmpty: string[];
}

export class RawExecDriver implements TaskDriver {
  readonly name = RAW_EXEC;
  readonly config: ResolvedPluginConfig;
  readonly store: TaskStore;
  private readonly tasks = new Map<string, TaskRunner>();
  private readonly starting = new Set<string>();
  private readonly hub = new EventHub<TaskEvent>();
  private readonly life = new AbortController();
  private readonly execs = new Set<() => void>();
  private readonly opts: RawExecDriverOptions;
  private manager: CgroupManager | undefined;
  private unbindSignal: (() => void) | undefined;
  private closed = false;

  constructor(opts: RawExecDriverOptions = {}) {
    this.opts = opts;
    // Every wait, stop and stats stream listens on the driver's life signal; thousands of tasks are normal.
    setMaxListeners(0, this.life.signal);
    this.config = resolvePluginConfig(opts);
    this.store = new TaskStore(this.config.stateDir);
    this.manager = opts.cgroupManager;
    const sig = opts.signal;
    if (sig) {
      if (sig.aborted) {
        void this.shutdown();
      } else {
        const onAbort = () => void this.shutdown();
        sig.addEventListener('abort', onAbort, { once: true });
        this.unbindSignal = () => sig.removeEventListener('abort', onAbort);
      }
    }
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

  private assertOpen(): void {
    if (this.closed) throw new DriverUnavailableError(RAW_EXEC, 'the driver was shut down');
  }

  private runner(taskId: string): TaskRunner {
    this.assertOpen();
    const r = this.tasks.get(taskId);
    if (!r) throw new TaskNotFoundError(String(taskId));
    return r;
  }

  private emitter(taskId: string, allocId: string, taskName: string) {
    return (type: string, message: string, annotations?: Record<string, string>) => {
      this.hub.publish({ taskId, allocId, taskName, timestamp: Date.now(), type, message, ...(annotations ? { annotations } : {}) });
    };
  }

  // ---- fingerprint -------------------------------------------------------------------------

  private fingerprintOnce(): Fingerprint {
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

  fingerprint(opts: { signal?: AbortSignal; intervalMs?: number } = {}): AsyncIterable<Fingerprint> {
    const interval = opts.intervalMs ?? this.config.fingerprintIntervalMs;
    if (!(interval > 0)) throw new InvalidConfigError('intervalMs', opts.intervalMs, 'must be a positive number of milliseconds');
    const self = this;
    return (async function* () {
      while (!self.closed && !opts.signal?.aborted) {
        yield self.fingerprintOnce();
        await self.sleepUntil(interval, opts.signal);
      }
    })();
  }

  /** Sleeps for `ms` unless `signal` or the driver's life ends first; holds nothing afterwards. */
  private async sleepUntil(ms: number, signal?: AbortSignal, also?: Promise<unknown>): Promise<void> {
    const ac = new AbortController();
    const abort = () => ac.abort();
    signal?.addEventListener('abort', abort, { once: true });
    this.life.signal.addEventListener('abort', abort, { once: true });
    void also?.then(abort);
    try {
      await sleep(ms, ac.signal);
    } finally {
      ac.abort();
      signal?.removeEventListener('abort', abort);
      this.life.signal.removeEventListener('abort', abort);
    }
  }

  // ---- start -------------------------------------------------------------------------------

  async startTask(cfg: TaskConfig): Promise<TaskHandle> {
    this.assertOpen();
    if (!this.config.enabled) throw new DriverUnavailableError(RAW_EXEC, 'it is disabled in the plugin config (enabled: false)');
    const id = cfg?.id;
    if (typeof id === 'string' && (this.tasks.has(id) || this.starting.has(id))) throw new TaskExistsError(id);
    const mgr = this.cgroupManager();
    const v = validateTask(cfg, { plugin: this.config, ...(mgr ? { usableCores: mgr.usableCores(), controllers: mgr.controllers() } : {}) });
    if (this.tasks.has(v.id) || this.starting.has(v.id)) throw new TaskExistsError(v.id);
    if (this.store.get(v.id)) throw new TaskExistsError(v.id);
    this.starting.add(v.id);
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
        stdio: [-1, out, errFd],
        ...(placement.cgroupDir ? { cgroupDir: placement.cgroupDir } : {}),
        ...(placement.joinProcs ? { joinProcs: [...placement.joinProcs] } : {}),
        ...(v.oomScoreAdj !== undefined ? { oomScoreAdj: v.oomScoreAdj } : {}),
      });
      fds.closeAll();
      sigPidfd = native().pidfdOpen(spawned.pid);
      // Not reaped yet (only our watch reaps), so the stat is there even if it already exited.
      const st = readProcStat(spawned.pid);
      if (!st) throw new CorralError('ERR_SPAWN', `task ${v.id}: /proc/${spawned.pid}/stat unreadable right after spawn`);
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
      const runner = new TaskRunner({
        handle, cgroup: cg, recovered: false, emit: this.emitter(v.id, v.allocId, v.name), groupKillTimeoutMs: this.config.groupKillTimeoutMs,
      });
      runner.attach(spawned.pidfd, sigPidfd, true);
      this.tasks.set(v.id, runner);
      runner.emitStarted(v.removedEnv);
      return JSON.parse(JSON.stringify(handle)) as TaskHandle;
    } catch (err) {
      await this.undoStart(v.id, spawned, sigPidfd, cg, persisted).catch(() => {});
      throw err;
    } finally {
      fds.closeAll();
      this.starting.delete(v.id);
    }
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
        const ac = new AbortController();
        await Promise.race([exited, sleep(this.config.groupKillTimeoutMs, ac.signal)]).finally(() => ac.abort());
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
  async recoverAll(): Promise<RecoverAllResult> {
    this.assertOpen();
    const { handles, problems } = this.store.list(RAW_EXEC);
    const result: RecoverAllResult = { recovered: [], failed: [], problems, staleRemoved: [], staleNonEmpty: [] };
    for (const h of handles) {
      try {
        await this.recoverTask(h);
        result.recovered.push(h.taskId);
      } catch (err) {
        result.failed.push({ taskId: h.taskId, error: err as Error });
      }
    }
    const mgr = this.cgroupManager();
    if (mgr) {
      const owned = new Set(handles.map((h) => groupName(h.allocId, h.taskName)));
      const stale = mgr.cleanupStale({ keep: (name) => owned.has(name) });
      result.staleRemoved = stale.removed;
      result.staleNonEmpty = stale.nonEmpty;
    }
    return result;
  }

  async recoverTask(handle: TaskHandle): Promise<void> {
    this.assertOpen();
    if (typeof handle !== 'object' || handle === null) throw new InvalidConfigError('handle', handle, 'must be a task handle');
    if (handle.driver !== RAW_EXEC) throw new InvalidConfigError('handle.driver', handle.driver, `is not ${RAW_EXEC}`);
    if (typeof handle.taskId !== 'string' || handle.taskId === '') throw new InvalidConfigError('handle.taskId', handle.taskId, 'must be a non-empty string');
    if (this.tasks.has(handle.taskId)) return;
    const s = handle.driverState as unknown as RawExecDriverState;
    if (typeof s !== 'object' || s === null || !Number.isInteger(s.pid) || s.pid <= 1 || !Number.isInteger(s.startTime)) {
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
    const runner = new TaskRunner({
      handle: handle as unknown as TaskHandle<RawExecDriverState>, cgroup: cg, recovered: true,
      emit: this.emitter(handle.taskId, handle.allocId, handle.taskName), groupKillTimeoutMs: this.config.groupKillTimeoutMs,
    });
    const same = () => {
      const st = readProcStat(s.pid);
      return st !== undefined && st.state !== 'Z' && st.state !== 'X' && st.starttime === s.startTime;
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
          runner.attach(a, b, false);
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
    this.tasks.set(handle.taskId, runner);
    runner.emitRecovered(attached);
    if (!attached) {
      runner.markGone(`exit status unknown: the task (pid ${s.pid}) ended while the agent was not attached to it${readProcStat(s.pid) ? ' (its pid now belongs to another process)' : ''}`);
    }
  }

  // ---- wait / stop / destroy ---------------------------------------------------------------

  waitTask(taskId: string, opts: { signal?: AbortSignal } = {}): Promise<ExitResult> {
    let r: TaskRunner;
    try {
      r = this.runner(taskId);
    } catch (err) {
      return Promise.reject(err);
    }
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(new AbortError('waitTask'));
    return new Promise<ExitResult>((resolve, reject) => {
      let done = false;
      const onAbort = () => finish(() => reject(new AbortError('waitTask')));
      const onShutdown = () => finish(() => reject(new AbortError('waitTask (the driver was shut down)')));
      const finish = (f: () => void) => {
        if (done) return;
        done = true;
        signal?.removeEventListener('abort', onAbort);
        this.life.signal.removeEventListener('abort', onShutdown);
        f();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.life.signal.addEventListener('abort', onShutdown, { once: true });
      void r.exited.then((res) => finish(() => resolve({ ...res })));
    });
  }

  async stopTask(taskId: string, opts: { timeoutMs?: number; signal?: string } = {}): Promise<void> {
    const r = this.runner(taskId);
    const sig = parseSignal(opts.signal ?? 'SIGTERM', 'signal');
    const timeoutMs = opts.timeoutMs ?? this.config.defaultKillTimeoutMs;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new InvalidConfigError('timeoutMs', opts.timeoutMs, 'must be a number of milliseconds ≥ 0');
    }
    await r.stop(timeoutMs, sig.number, this.life.signal);
  }

  async destroyTask(taskId: string, opts: { force?: boolean } = {}): Promise<void> {
    const r = this.runner(taskId);
    if (r.running && !opts.force) throw new TaskRunningError(taskId);
    if (r.running || r.pids().length > 0) await r.stop(0, 9, this.life.signal);
    if (r.cgroup) await r.cgroup.destroy({ timeoutMs: this.config.groupKillTimeoutMs });
    r.detach();
    r.destroyed = true;
    this.tasks.delete(taskId);
    this.store.delete(taskId);
    this.emitter(taskId, r.handle.allocId, r.handle.taskName)('destroyed', 'task destroyed: processes killed, cgroup removed, handle forgotten');
  }

  inspectTask(taskId: string): TaskStatus {
    return this.runner(taskId).status();
  }

  /** Ids of the tasks this driver instance knows. */
  taskIds(): string[] {
    return [...this.tasks.keys()];
  }

  async signalTask(taskId: string, signal: string): Promise<void> {
    const r = this.runner(taskId);
    const sig = parseSignal(signal, 'signal');
    r.signal(sig.number);
    this.emitter(taskId, r.handle.allocId, r.handle.taskName)('signaled', `sent ${sig.name} to the task`, { signal: sig.name });
  }

  async execTask(taskId: string, cmd: string[], opts: { timeoutMs?: number } = {}): Promise<ExecTaskResult> {
    const r = this.runner(taskId);
    if (!r.running) throw new CorralError('ERR_TASK_NOT_RUNNING', `task ${JSON.stringify(taskId)} is not running`);
    const tracker = {
      add: (close: () => void) => {
        this.execs.add(close);
        return () => { this.execs.delete(close); };
      },
    };
    return execInTask(r, cmd, opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS, this.config.groupKillTimeoutMs, tracker);
  }

  // ---- stats and events --------------------------------------------------------------------

  /** One resource sample now (the CLI reads peak usage with it before destroying). */
  sampleStats(taskId: string): TaskResourceUsage {
    return this.runner(taskId).sample(undefined);
  }

  taskStats(taskId: string, opts: { intervalMs: number; signal?: AbortSignal }): AsyncIterable<TaskResourceUsage> {
    const r = this.runner(taskId);
    const interval = opts?.intervalMs;
    if (typeof interval !== 'number' || !(interval > 0)) throw new InvalidConfigError('intervalMs', interval, 'must be a positive number of milliseconds');
    const self = this;
    return (async function* () {
      let prev: TaskResourceUsage | undefined;
      while (!self.closed && !opts.signal?.aborted && !r.destroyed) {
        const wasRunning = r.running;
        let s: TaskResourceUsage;
        try {
          s = r.sample(prev);
        } catch (err) {
          if (!r.running || r.destroyed) return;
          throw err;
        }
        yield s;
        prev = s;
        if (!wasRunning) return;
        await self.sleepUntil(interval, opts.signal, r.exited);
      }
    })();
  }

  taskEvents(opts: { signal?: AbortSignal } = {}): AsyncIterable<TaskEvent> {
    return this.hub.subscribe(opts);
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /** Ends every timer, watcher and stream of this driver; running tasks keep running. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unbindSignal?.();
    this.unbindSignal = undefined;
    this.life.abort();
    for (const close of [...this.execs]) close();
    this.execs.clear();
    for (const r of this.tasks.values()) r.detach();
    this.tasks.clear();
    this.hub.close();
  }
}
