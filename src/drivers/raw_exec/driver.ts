/**
 * RawExecDriver: host commands, each in its own cgroup (or, with noCgroups, its own session), on the
 * driver contract. Nomad's drivers/rawexec/driver.go with the executor folded in: validation first,
 * then cgroup, then a native spawn already inside the group, a pidfd watch for the exit, and every
 * failure undone. What every driver shares (task table, events, waits, recovery loop, shutdown) is
 * DriverCore's; this file holds raw_exec's hooks.
 */
import { DriverUnavailableError, SpawnError, TaskExistsError, TaskNotFoundError } from '../../errors.js';
import { native, spawnProcess, type FsOp, type ProcessHandle, type SpawnResult } from '../../native.js';
import { TaskStore } from '../../store/task-store.js';
import { sleepUnless } from '../../util/abort.js';
import type { CgroupManager, TaskCgroup } from '../../cgroups/types.js';
import type {
  Capabilities, ExecTaskResult, Fingerprint, TaskConfig, TaskHandle, TaskResourceUsage,
} from '../contract.js';
import { type CoreOptions, DriverCore, type RecoverAllResult as CoreRecoverAllResult } from '../core/driver.js';
import { killUntilGone, readProcStat, sessionMembers } from '../../util/proc.js';
import { openCgroupManager } from './cgroups.js';
import { type RawExecPluginConfig, type RawExecTaskConfig, type ResolvedPluginConfig, type ValidatedTask, resolvePluginConfig, validateTask } from './config.js';
import { execInTask } from './exec.js';
import { type RawExecDriverState, RawExecTask } from './task.js';
import { handleCopy, runningLine, startingHandle } from './record.js';
import { checkRecoveredHandle } from './recovered-handle.js';
import { type InterruptedStart, checkExecUser, checkGroupPaths, groupOf, identifyTaskProcess, resolveInterruptedStart } from './recover.js';
import { processStartTime } from '../../store/owner.js';
import { FdSet, openOutput } from './stdio.js';

export const RAW_EXEC = 'raw_exec';

export interface RawExecDriverOptions extends RawExecPluginConfig, CoreOptions {}

export interface RecoverAllResult extends CoreRecoverAllResult {
  /** Recovered tasks that had ended while no agent watched them: acted upon through their cgroup only. */
  gone: string[];
  /** Records a crash left `starting`: their group's processes killed, group and record removed. */
  interruptedStarts: InterruptedStart[];
  /** Empty groups of ours that no task owned, removed. */
  staleRemoved: string[];
  /** Groups of ours that no task owns but that still hold processes: reported, left alone. */
  staleNonEmpty: string[];
}

type Sig = { name: NodeJS.Signals; number: number };

export class RawExecDriver extends DriverCore<RawExecTask, RawExecTaskConfig> {
  readonly config: ResolvedPluginConfig;
  private readonly opts: RawExecDriverOptions;
  private manager: CgroupManager | undefined;

  constructor(opts: RawExecDriverOptions = {}) {
    const config = resolvePluginConfig(opts);
    super(RAW_EXEC, new TaskStore(config.stateDir), opts);
    this.config = config;
    this.opts = opts;
    this.manager = opts.cgroupManager;
    this.listen();
  }

  capabilities(): Capabilities {
    return { sendSignals: true, exec: true, fsIsolation: 'none', exitStatusAfterRecovery: false, noCgroups: true };
  }

  /** The cgroup manager (created on first use), or undefined with noCgroups. */
  cgroupManager(): CgroupManager | undefined {
    if (this.config.noCgroups) return undefined;
    if (!this.manager) {
      try {
        this.manager = openCgroupManager({
          ...(this.config.cgroupParent !== undefined ? { cgroupParent: this.config.cgroupParent } : {}),
          ...(this.opts.cgroupRoot !== undefined ? { root: this.opts.cgroupRoot } : {}),
          ...(this.opts.cgroupVersion !== undefined ? { version: this.opts.cgroupVersion } : {}),
          killTimeoutMs: this.config.killTimeoutMs,
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

  protected async start(cfg: TaskConfig<RawExecTaskConfig>): Promise<TaskHandle> {
    if (!this.config.enabled) throw new DriverUnavailableError(RAW_EXEC, 'it is disabled in the plugin config (enabled: false)');
    // What stays on the loop (validation, the few syscalls between the steps) is one start's share
    // per turn of the loop, so that many concurrent starts interleave with everything else the agent
    // does. The record writes, the cgroup's mkdirs and limit writes, and the spawn run off the loop.
    await this.nextTurn();
    const mgr = this.cgroupManager();
    const v = await validateTask(cfg, { plugin: this.config, ...(mgr ? { usableCores: mgr.usableCores(), controllers: mgr.controllers() } : {}) });
    if (this.tasks.has(v.id)) throw new TaskExistsError(v.id);
    // Write-ahead: the record (starting, ours) is on disk before the group exists and before
    // anything runs, so a crash at any later instant leaves a record that recovery resolves.
    // Exclusive: another agent's record of this id refuses the start (TaskExistsError). With a group,
    // the record's create is the first step of the group's own pool job (no hop of its own).
    const handle = startingHandle(v, cfg, mgr);
    const h = handle as unknown as TaskHandle;
    let cg: TaskCgroup | undefined;
    if (mgr) cg = await this.createGroupAndRecord(mgr, v, h);
    else await this.store.createAsync(h, 'starting');
    // Many starts' pool jobs finish together and their continuations would run in one turn: each
    // start takes its next synchronous step on a turn of its own.
    await this.nextTurn();
    const fds = new FdSet();
    let spawned: SpawnResult | undefined;
    let attached = false;
    const persisted = true;
    try {
      const out = v.stdoutFd ?? (v.stdoutPath ? fds.add(openOutput(v.stdoutPath)) : -1);
      const errFd = v.stderrFd ?? (v.stderrPath ? fds.add(openOutput(v.stderrPath)) : -1);
      const placement = cg?.placement ?? {};
      const state = handle.driverState;
      if (cg && state.cgroup) state.cgroup.paths = { ...cg.paths };
      handle.startedAt = new Date().toISOString();
      // The spawn thread appends the record's `running` line itself once the child exec'd: no
      // further hop off the loop (native/spawn.cc says why).
      const record = runningLine(this.store, handle);
      // Off the event loop (a thread of its own) and bounded: a frozen group is refused at once
      // (CgroupFrozenError), a child that never gets to exec fails the start (CgroupTimeoutError).
      spawned = await spawnProcess({
        file: v.file,
        argv: v.argv,
        envp: v.envp,
        cwd: v.cwd,
        ...(v.user ? { uid: v.uid, gid: v.gid, groups: v.user.groups } : {}),
        setsid: true,
        ...(v.tty ? { controllingTty: true } : {}),
        stdio: [v.stdinFd ?? -1, out, errFd],
        ...(placement.cgroupDir ? { cgroupDir: placement.cgroupDir } : {}),
        ...(placement.joinProcs ? { joinProcs: [...placement.joinProcs] } : {}),
        ...(v.oomScoreAdj !== undefined ? { oomScoreAdj: v.oomScoreAdj } : {}),
        ...(record ? { record } : {}),
        timeoutMs: this.config.killTimeoutMs,
      });
      fds.closeAll();
      // Not reaped yet (only our watch reaps), so the stat is there even if it already exited.
      const startTime = spawned.startTime ?? readProcStat(spawned.pid)?.starttime;
      if (startTime === undefined) throw new SpawnError(v.id, `/proc/${spawned.pid}/stat unreadable right after spawn`);
      state.pid = spawned.pid;
      state.startTime = startTime;
      state.pgid = spawned.pid;
      if (!record || spawned.recordError) await this.store.putAsync(handle as unknown as TaskHandle, { state: 'running' });
      const task = this.newTask(handle, cg, false);
      task.attach(spawned.process, true);
      attached = true;
      this.adopt(task);
      task.emitStarted(v.removedEnv);
      return handleCopy(handle);
    } catch (err) {
      await this.undoStart(v.id, spawned, attached, cg, persisted).catch(() => {});
      throw err;
    } finally {
      fds.closeAll();
    }
  }

  /**
   * The task's record, then its group, in one pool job (CreateOptions.before). A failure of the
   * record's own step (index 0) is the store's error (TaskExistsError for another agent's record);
   * one after it left our record and no group: the record goes too.
   */
  private async createGroupAndRecord(mgr: CgroupManager, v: ValidatedTask, h: TaskHandle): Promise<TaskCgroup> {
    try {
      return await mgr.createAsync(v.allocId, v.name, { resources: v.resources, before: [await this.store.createStep(h, 'starting')] });
    } catch (err) {
      const index = (err as { index?: number }).index;
      if (index === 0) throw this.store.createStepError(h, err);
      if (index !== undefined) await this.undoStart(v.id, undefined, false, undefined, true).catch(() => {});
      throw err;
    }
  }

  private turn: Promise<void> = Promise.resolve();
  /** Resolves on a later turn of the event loop than every earlier caller's. */
  private nextTurn(): Promise<void> {
    const p = this.turn.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
    this.turn = p;
    return p;
  }

  private newTask(handle: TaskHandle<RawExecDriverState>, cgroup: TaskCgroup | undefined, recovered: boolean, gone = false): RawExecTask {
    return new RawExecTask({
      handle, cgroup, recovered, gone, killTimeoutMs: this.config.killTimeoutMs,
      emit: this.emitterFor({ id: handle.taskId, allocId: handle.allocId, taskName: handle.taskName }),
    });
  }

  /** Undoes a failed start: no process, no group, no record. Every step runs even if one before it failed. */
  private async undoStart(id: string, spawned: SpawnResult | undefined, attached: boolean, cg: TaskCgroup | undefined, persisted: boolean): Promise<void> {
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
        // The handle owns the only pidfd: signal through it, and (unless the task's watch already
        // does) watch it until the kill is reaped; it closes itself then.
        const p = spawned.process;
        const exited = new Promise<void>((resolve, reject) => {
          try {
            p.signal(9);
          } catch {
            /* already gone */
          }
          if (attached) return resolve();
          try {
            p.watch(true, () => resolve());
          } catch (err) {
            reject(err);
          }
        });
        await sleepUnless(this.config.killTimeoutMs, [], exited);
        if (!attached) p.close();
      });
    }
    if (cg) await step(() => cg.destroy({ timeoutMs: this.config.killTimeoutMs }));
    else if (spawned && this.config.noCgroups) {
      await step(() => killUntilGone(() => sessionMembers(spawned.pid).map((p) => p.pid), this.config.killTimeoutMs, `task ${id}`));
    }
    // The record goes last, and only once nothing of the task is left: otherwise it stays (starting)
    // and the next recovery resolves it.
    if (persisted && errors.length === 0) await step(() => this.store.deleteAsync(id));
    if (errors.length > 0) throw errors[0];
  }

  // ---- recovery ----------------------------------------------------------------------------

  /**
   * Agent start-up: goes through every raw_exec record in the state dir (DriverCore's loop). Records
   * of another live agent are skipped (`owned`); records a crash left `starting` are resolved (their
   * group killed and removed, the record deleted: `interruptedStarts`); the others are checked as
   * strictly as a new config (a bad one goes to `failed`, is left as it is and never acted upon),
   * adopted and re-attached (`recovered`; `gone` when the task ended meanwhile). Then the empty
   * groups of ours that no record names are removed and non-empty ones reported. Recovery comes
   * first so that reserved cores are known before a new task computes the shared pool.
   */
  override async recoverAll(): Promise<RecoverAllResult> {
    const interruptedStarts: InterruptedStart[] = [];
    const mgr = this.cgroupManager();
    // Groups named by a record, whoever owns it: never stale, never killed for another record.
    const named = new Map<string, number>();
    for (const r of this.store.records(RAW_EXEC).records) {
      const g = groupOf(r.handle);
      if (g) named.set(g, (named.get(g) ?? 0) + 1);
    }
    const { result: base } = await this.recoverStored(async (rec) => {
      if (rec.state === 'running') {
        await this.recoverTask(rec.handle);
        return true;
      }
      const g = groupOf(rec.handle);
      interruptedStarts.push(await this.resolveStarting(rec.handle, g !== undefined && (named.get(g) ?? 0) > 1, false));
      if (g) named.set(g, (named.get(g) ?? 1) - 1);
      return false;
    });
    const gone = base.recovered.filter((id) => this.tasks.get(id)?.gone);
    const result: RecoverAllResult = { ...base, gone, interruptedStarts, staleRemoved: [], staleNonEmpty: [] };
    if (mgr) {
      // A group created since the listing above belongs to a record created before it (write-ahead):
      // on a miss, list once more before calling a group stale.
      let again: Set<string> | undefined;
      // A docker task's group in this parent (its reserved cores; on v1 and for systemd engines it holds
      // no process) is named by the docker record in a shared state dir: never stale either.
      const docker = new Set(this.store.records('docker').records
        .map((r) => (r.handle.driverState as { cgroup?: unknown } | undefined)?.cgroup).filter((g): g is string => typeof g === 'string'));
      const keep = (name: string) => {
        if ((named.get(name) ?? 0) > 0 || docker.has(name)) return true;
        again ??= new Set(this.store.records(RAW_EXEC).records.map((r) => groupOf(r.handle)).filter((g): g is string => g !== undefined));
        return again.has(name);
      };
      const stale = await mgr.cleanupStale({ keep });
      result.staleRemoved = stale.removed;
      result.staleNonEmpty = stale.nonEmpty;
    }
    return result;
  }

  /** Kills and removes the group of a record left `starting`, deletes the record, reports it. */
  private async resolveStarting(handle: TaskHandle, groupHeldByAnother: boolean, force: boolean): Promise<InterruptedStart> {
    const mgr = this.cgroupManager();
    const h = await checkRecoveredHandle(handle, { plugin: this.config, mgr, state: 'starting' });
    this.store.adopt(h.taskId, { force }); // exactly one agent resolves it
    const done = await resolveInterruptedStart(h, mgr, groupHeldByAnother, this.config.killTimeoutMs);
    this.store.delete(h.taskId);
    this.emit({ id: h.taskId, allocId: h.allocId, taskName: h.taskName }, 'start-interrupted',
      `the agent starting this task died before it ran: ${done.group ? `killed ${done.killed} process(es) in group ${done.group} and removed it` : 'no group existed'}; record removed`,
      { group: done.group ?? '', killed: String(done.killed) });
    return done;
  }

  /**
   * The recover hook: a record still `starting` is resolved instead (TaskNotFoundError: the task
   * never ran). Otherwise the handle is checked (ERR_INVALID_CONFIG naming the field; nothing done),
   * the process identified (the same process by start time, where the task must be), the record
   * adopted, and the task re-attached through a pidfd, or marked gone: then only its cgroup is ever
   * acted upon.
   */
  protected async recover(handle: TaskHandle, opts: { force: boolean }): Promise<void> {
    const mgr = this.cgroupManager();
    if (this.store.getRecord(handle.taskId)?.state === 'starting') {
      await this.resolveStarting(handle, false, opts.force);
      throw new TaskNotFoundError(handle.taskId);
    }
    const h = await checkRecoveredHandle(handle, { plugin: this.config, mgr, state: 'running' });
    const s = h.driverState;
    let cg: TaskCgroup | undefined;
    if (s.cgroup && mgr) {
      try {
        // The persisted resources tell a v2 manager which cores this group holds (v2 keeps no partition on disk).
        const resources = h.config?.resources;
        cg = mgr.open(h.allocId, h.taskName, resources ? { resources } : undefined);
      } catch {
        cg = undefined; // the group is gone: so is the task
      }
    }
    if (cg) checkGroupPaths(h, cg);
    // Throws (nothing done yet) when a live process has the recorded identity but is not the task.
    let found = identifyTaskProcess(h, cg);
    this.claimRecord(h as unknown as TaskHandle, opts.force);
    let proc: ProcessHandle | undefined;
    if (found.kind === 'task') {
      try {
        proc = native().openProcess(s.pid);
        // Checked again after opening: the pidfd now pins this very process.
        if (processStartTime(s.pid) !== s.startTime) found = { kind: 'gone', why: `the task (pid ${s.pid}) ended during recovery` };
      } catch {
        found = { kind: 'gone', why: `the task (pid ${s.pid}) ended during recovery` };
      }
      // One owner: the task once attached, else this close (idempotent; never a second close of a number).
      if (found.kind === 'gone') proc?.close();
    }
    const task = this.newTask(h, cg, true, found.kind === 'gone');
    if (found.kind === 'task' && proc) task.attach(proc, false);
    this.adopt(task);
    task.emitRecovered(found.kind === 'task');
    if (found.kind === 'gone') task.markGone(`exit status unknown: ${found.why}`);
  }

  // ---- the task's life ---------------------------------------------------------------------

  protected stop(task: RawExecTask, timeoutMs: number, sig: Sig): Promise<void> {
    return task.stop(timeoutMs, sig.number, this.lifeSignal);
  }

  /**
   * The last resort when stopTask failed (run() uses it): SIGKILLs without the freezer to the main
   * process and every pid of the task's group until none is left, then its exit; bounded by
   * killTimeoutMs per phase. Rejects (KillTimeoutError, StopTimeoutError) when something survives.
   */
  async forceKill(taskId: string): Promise<void> {
    await this.task(taskId).forceKill(this.config.killTimeoutMs);
  }

  /**
   * Eight starts at once: 200 starts called in one turn then showed a loop delay max of 26–72 ms and
   * p99 8–15 ms, against 110–293 ms and 27–50 ms unbounded, for about the same total time (the kernel
   * serialises v1 joins). Measured at load 9–24 beside a CI run, so read the ratio, not the figures.
   */
  protected override startConcurrency(): number {
    return 8;
  }

  protected override createsRecordFirst(): boolean {
    return true;
  }

  protected async destroy(task: RawExecTask, record: FsOp): Promise<{ what: string; recordRemoved: boolean }> {
    if (task.running || task.pids().length > 0) await task.stop(0, 9, this.lifeSignal);
    // The record goes in the job of the group's last rmdir (one pool hop less), so only once the
    // group is gone.
    const recordRemoved = task.cgroup ? await task.cgroup.destroy({ timeoutMs: this.config.killTimeoutMs, after: [record] }) : false;
    task.detach();
    task.destroyed = true;
    return { what: 'task destroyed: processes killed, cgroup removed, handle forgotten', recordRemoved };
  }

  protected async signal(task: RawExecTask, sig: Sig): Promise<void> {
    task.signal(sig.number);
  }

  protected exec(task: RawExecTask, cmd: string[], timeoutMs: number, signal: AbortSignal): Promise<ExecTaskResult> {
    checkExecUser(task, this.config);
    return execInTask(task, cmd, timeoutMs, this.config.killTimeoutMs, signal);
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
