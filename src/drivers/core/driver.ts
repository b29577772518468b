/**
 * DriverCore: what every driver does the same way, once. The task table (and the ids being
 * started), lookups (→ TaskNotFoundError), the event hub, the driver's life signal and shutdown,
 * the recovery loop, handle checks, stop/exec defaults and validation, waitTask with abort, the
 * fingerprint loop, and the contract's meaning of each call (an exited task refuses signal and exec
 * with TaskNotRunningError; a running one refuses destroy without force with TaskRunningError).
 * A driver extends it and supplies its hooks: start, recover, stop, signal, exec, destroy, stats,
 * fingerprint and shutdown. Nomad splits the same way: the plugin framework vs drivers/<name>.
 */
import { setMaxListeners } from 'node:events';
import {
  AbortError, DriverUnavailableError, InvalidConfigError, TaskExistsError, TaskNotFoundError, TaskNotRunningError, TaskOwnedError, TaskRunningError,
} from '../../errors.js';
import { parseSignal } from '../../signals.js';
import type { StoreProblem, TaskRecord, TaskStore } from '../../store/task-store.js';
import type { FsOp } from '../../native.js';
import { anySignal, sleep } from '../../util/abort.js';
import { EventHub } from '../../util/event-hub.js';
import { optMs } from '../../util/validate.js';
import type {
  Capabilities, ExecTaskResult, ExitResult, Fingerprint, TaskConfig, TaskDriver, TaskEvent, TaskHandle, TaskResourceUsage, TaskStatus,
} from '../contract.js';
import { describeExit } from './exit.js';
import { Gate } from '../../util/gate.js';
import { validateExecCmd, validateTaskId } from './task-config.js';

/** What the core needs of a driver's task. */
export interface CoreTask {
  readonly id: string;
  readonly allocId: string;
  readonly taskName: string;
  /** Resolves once with the exit result; never rejects. */
  readonly exited: Promise<ExitResult>;
  /** Set once the task has exited. */
  readonly exitResult: ExitResult | undefined;
  status(): TaskStatus;
}

/** Who an event is about. */
export interface EventSubject {
  readonly id: string;
  readonly allocId: string;
  readonly taskName: string;
}

export const DEFAULT_STOP_TIMEOUT_MS = 5_000;
export const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
export const DEFAULT_FINGERPRINT_INTERVAL_MS = 30_000;

/** The options every driver takes, with the same names and defaults. */
export interface CoreOptions {
  /** Aborting it shuts the driver down (as shutdown()). */
  signal?: AbortSignal;
  /** How often fingerprint() re-sends (default 30 s). */
  fingerprintIntervalMs?: number;
  /** stopTask's default grace between the stop signal and the kill (default 5 s). */
  stopTimeoutMs?: number;
  /** execTask's default timeout (default 60 s). */
  execTimeoutMs?: number;
}

export interface ResolvedCoreOptions {
  fingerprintIntervalMs: number;
  stopTimeoutMs: number;
  execTimeoutMs: number;
}

export function resolveCoreOptions(o: CoreOptions & { defaultKillTimeoutMs?: number }): ResolvedCoreOptions {
  return {
    fingerprintIntervalMs: optMs('fingerprintIntervalMs', o.fingerprintIntervalMs, DEFAULT_FINGERPRINT_INTERVAL_MS, 1),
    stopTimeoutMs: optMs(o.stopTimeoutMs === undefined && o.defaultKillTimeoutMs !== undefined ? 'defaultKillTimeoutMs' : 'stopTimeoutMs',
      o.stopTimeoutMs ?? o.defaultKillTimeoutMs, DEFAULT_STOP_TIMEOUT_MS),
    execTimeoutMs: optMs('execTimeoutMs', o.execTimeoutMs, DEFAULT_EXEC_TIMEOUT_MS, 1),
  };
}

export interface RecoverAllResult {
  /** Adopted and re-attached: now held by this driver. */
  recovered: string[];
  /** Bad handles (ERR_INVALID_CONFIG naming the field) and other failures: left as they are, never acted upon. */
  failed: { taskId: string; error: Error }[];
  /** Records whose owner (another agent) is alive: skipped, left to it. */
  owned: { taskId: string; ownerPid: number; ownerStartTime: number }[];
  /** State files that could not be read (corrupt or foreign), skipped. */
  problems: StoreProblem[];
}

/**
 * Starts in flight in this process, by state dir and task id. Records are owned per process, so a
 * second driver on the same state dir in this process would otherwise take another one's record,
 * still `starting`, for an interrupted start.
 */
const startsInFlight = new Set<string>();
const inFlightKey = (store: TaskStore, id: string) => `${store.dir}\0${id}`;

export abstract class DriverCore<T extends CoreTask, D extends object = object> implements TaskDriver<D> {
  readonly name: string;
  readonly store: TaskStore;
  protected readonly defaults: ResolvedCoreOptions;
  protected readonly tasks = new Map<string, T>();
  private readonly starting = new Set<string>();
  /** Starts admitted at once (the rest queue in order), made on first use from startConcurrency(). */
  private startGate?: Gate;
  /**
   * Destroys admitted at once, as many as starts: a group kill's control-file writes, signals and
   * reads are short synchronous calls, and 200 destroys called in one turn ran them all in one
   * poll phase (a loop delay of 94–177 ms).
   */
  private destroyGate?: Gate;
  private readonly hub = new EventHub<TaskEvent>();
  private readonly life = new AbortController();
  private outerSignal: AbortSignal | undefined;
  private unbindSignal: (() => void) | undefined;
  private shutdownPromise: Promise<void> | undefined;

  constructor(name: string, store: TaskStore, opts: CoreOptions & { defaultKillTimeoutMs?: number }) {
    this.name = name;
    this.store = store;
    this.defaults = resolveCoreOptions(opts);
    // Every wait, stop, call and stream listens on the life signal; thousands of tasks are normal.
    setMaxListeners(0, this.life.signal);
    const sig = opts.signal;
    if (sig?.aborted) {
      // Nothing runs yet: close at once, so the subclass's constructor starts no loop.
      this.shutdownPromise = Promise.resolve();
      this.life.abort();
      this.hub.close();
    } else {
      this.outerSignal = sig;
    }
  }

  /**
   * Ties the driver's life to the constructor's signal. A driver calls it last in its constructor,
   * so that a constructor that throws (bad options) leaves no listener on the caller's signal.
   */
  protected listen(): void {
    const sig = this.outerSignal;
    if (!sig || this.unbindSignal || this.closed) return;
    const onAbort = () => void this.shutdown();
    sig.addEventListener('abort', onAbort, { once: true });
    this.unbindSignal = () => sig.removeEventListener('abort', onAbort);
  }

  // ---- hooks -------------------------------------------------------------------------------

  abstract capabilities(): Capabilities;
  /** One fingerprint now; may throw AbortError when `signal` aborts. */
  protected abstract fingerprintOnce(signal: AbortSignal): Fingerprint | Promise<Fingerprint>;
  /** Validates the rest of `cfg`, starts the task, adds it (adopt) and returns its handle. Undoes itself on failure. */
  protected abstract start(cfg: TaskConfig<D>, id: string): Promise<TaskHandle>;
  /**
   * Re-attaches to a task of a checked handle of this driver, and adopts it. The record's owner is
   * dead, or this agent, or `force` is set; the hook calls claimRecord() after its own checks and
   * before it attaches.
   */
  protected abstract recover(handle: TaskHandle, opts: { force: boolean }): Promise<void>;
  /** The stop signal, up to `timeoutMs` for the exit, then a kill; resolves when nothing of the task runs. */
  protected abstract stop(task: T, timeoutMs: number, sig: { name: NodeJS.Signals; number: number }): Promise<void>;
  protected abstract signal(task: T, sig: { name: NodeJS.Signals; number: number }): Promise<void>;
  /** Runs `cmd` in the task; `signal` aborts when the driver shuts down (the command is then killed). */
  protected abstract exec(task: T, cmd: string[], timeoutMs: number, signal: AbortSignal): Promise<ExecTaskResult>;
  /**
   * Kills what is left and removes what the task holds; `what` is what the `destroyed` event says.
   * `record` is the step that removes the task's record: a driver may run it in its own last pool
   * job, once nothing of the task is left (`recordRemoved`); otherwise the core removes the record.
   */
  protected abstract destroy(task: T, record: FsOp): Promise<{ what: string; recordRemoved: boolean }>;
  protected abstract stats(task: T, intervalMs: number, signal: AbortSignal): AsyncIterable<TaskResourceUsage>;
  /** Ends the driver's own loops, streams and timers (the life signal has aborted already). */
  protected abstract closeDriver(): Promise<void> | void;

  /** Whether destroyTask without force must refuse; a driver whose state may lag asks its runtime. */
  protected async isRunning(task: T, _force: boolean): Promise<boolean> {
    return task.exitResult === undefined;
  }

  // ---- for the drivers ---------------------------------------------------------------------

  /** Aborts when the driver shuts down. */
  protected get lifeSignal(): AbortSignal {
    return this.life.signal;
  }

  get closed(): boolean {
    return this.life.signal.aborted;
  }

  protected assertOpen(): void {
    if (this.closed) throw new DriverUnavailableError(this.name, 'the driver was shut down');
  }

  /** The task, or TaskNotFoundError (DriverUnavailableError once shut down). */
  protected task(taskId: string): T {
    this.assertOpen();
    const t = this.tasks.get(taskId);
    if (!t) throw new TaskNotFoundError(String(taskId));
    return t;
  }

  /** Adds a started or recovered task to the table (refused once the driver is shut down). */
  protected adopt(task: T): void {
    if (this.closed) throw new DriverUnavailableError(this.name, 'the driver was shut down while the task was starting');
    this.tasks.set(task.id, task);
  }

  protected emit(subject: EventSubject, type: string, message: string, annotations?: Record<string, string>): void {
    this.hub.publish({
      taskId: subject.id, allocId: subject.allocId, taskName: subject.taskName, timestamp: Date.now(), type, message,
      ...(annotations ? { annotations } : {}),
    });
  }

  /** The `exited` event, worded the same for every driver. */
  protected emitExited(subject: EventSubject, r: ExitResult): void {
    const d = describeExit(r);
    this.emit(subject, 'exited', d.message, d.annotations);
  }

  // ---- the contract ------------------------------------------------------------------------

  fingerprint(opts: { signal?: AbortSignal; intervalMs?: number } = {}): AsyncIterable<Fingerprint> {
    const interval = optMs('intervalMs', opts.intervalMs, this.defaults.fingerprintIntervalMs, 1);
    const signal = anySignal(this.life.signal, opts.signal)!;
    const once = (s: AbortSignal) => this.fingerprintOnce(s);
    return (async function* () {
      while (!signal.aborted) {
        let fp: Fingerprint;
        try {
          fp = await once(signal);
        } catch (err) {
          if (err instanceof AbortError) return;
          throw err;
        }
        yield fp;
        if (!(await sleep(interval, signal))) return;
      }
    })();
  }

  /**
   * How many starts run their steps at once; the rest wait in order. Unbounded here: a docker start
   * can wait minutes on an image pull, and must not hold up the others. raw_exec bounds it.
   */
  protected startConcurrency(): number {
    return Number.POSITIVE_INFINITY;
  }

  /**
   * true when start() begins with the exclusive createAsync of the task's record, which refuses an
   * existing record itself (TaskExistsError): then no separate read of the state dir comes first.
   */
  protected createsRecordFirst(): boolean {
    return false;
  }

  async startTask(cfg: TaskConfig<D>): Promise<TaskHandle> {
    this.assertOpen();
    if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new InvalidConfigError('config', cfg, 'must be an object');
    const id = validateTaskId(cfg.id);
    if (this.tasks.has(id) || this.starting.has(id)) throw new TaskExistsError(id);
    this.starting.add(id);
    startsInFlight.add(inFlightKey(this.store, id));
    let release: (() => void) | undefined;
    try {
      this.startGate ??= new Gate(this.startConcurrency());
      release = await this.startGate.acquire();
      this.assertOpen(); // shut down while it waited at the gate
      // Read off the loop: many starts called in one turn must not each read the state dir on it.
      if (!this.createsRecordFirst() && (await this.store.getAsync(id))) throw new TaskExistsError(id);
      return await this.start(cfg, id);
    } finally {
      release?.();
      this.starting.delete(id);
      startsInFlight.delete(inFlightKey(this.store, id));
    }
  }

  /**
   * Checks that `handle` is one of this driver's, then reattaches (a task already held is left as it
   * is). Refused with TaskOwnedError (ERR_TASK_OWNED, naming the owner's pid) while the agent that
   * owns the task's record is alive, unless `force`.
   */
  async recoverTask(handle: TaskHandle, opts: { force?: boolean } = {}): Promise<void> {
    this.assertOpen();
    if (typeof handle !== 'object' || handle === null) throw new InvalidConfigError('handle', handle, 'must be a task handle');
    if (handle.driver !== this.name) throw new InvalidConfigError('handle.driver', handle.driver, `is not ${this.name}`);
    if (typeof handle.taskId !== 'string' || handle.taskId === '') throw new InvalidConfigError('handle.taskId', handle.taskId, 'must be a non-empty string');
    if (typeof handle.driverState !== 'object' || handle.driverState === null) {
      throw new InvalidConfigError('handle.driverState', handle.driverState, `must be the ${this.name} driver state`);
    }
    if (this.tasks.has(handle.taskId)) return;
    const force = opts.force === true;
    const rec = this.store.getRecord(handle.taskId);
    if (rec?.ownerStatus === 'alive' && !force) throw new TaskOwnedError(handle.taskId, rec.owner!);
    await this.recover(handle, { force });
  }

  /**
   * Makes this agent the owner of a task's record: adopts it (of two agents adopting at once exactly
   * one wins, the other gets TaskOwnedError) or, for a handle that came from elsewhere, creates it.
   */
  protected claimRecord(handle: TaskHandle, force: boolean): void {
    if (this.store.getRecord(handle.taskId)) this.store.adopt(handle.taskId, { force });
    else this.store.create(handle, 'running');
  }

  /** Agent start-up: recovers every task of this driver in the state dir; failures are returned, not thrown. */
  async recoverAll(): Promise<RecoverAllResult> {
    return (await this.recoverStored()).result;
  }

  /**
   * The recovery loop: every record of this driver, once. Records held already are left as they
   * are; those of another live agent go to `owned`; each other one goes through `each` (default:
   * recoverTask of its handle; it returns false for a record it resolved without recovering a task).
   * One record's failure never fails the pass.
   */
  protected async recoverStored(each?: (rec: TaskRecord) => Promise<boolean>): Promise<{ result: RecoverAllResult; records: TaskRecord[] }> {
    this.assertOpen();
    const { records, problems } = this.store.records(this.name);
    const result: RecoverAllResult = { recovered: [], failed: [], owned: [], problems };
    for (const rec of records) {
      if (this.tasks.has(rec.taskId)) continue;
      // A record of this process that is `starting` because a driver here is starting it right now.
      if (startsInFlight.has(inFlightKey(this.store, rec.taskId))) continue;
      if (rec.ownerStatus === 'alive') {
        result.owned.push({ taskId: rec.taskId, ownerPid: rec.owner!.pid, ownerStartTime: rec.owner!.startTime });
        continue;
      }
      try {
        if (each ? await each(rec) : (await this.recoverTask(rec.handle), true)) result.recovered.push(rec.taskId);
      } catch (err) {
        if (err instanceof TaskOwnedError) result.owned.push({ taskId: rec.taskId, ownerPid: err.ownerPid, ownerStartTime: err.ownerStartTime });
        else result.failed.push({ taskId: rec.taskId, error: err as Error });
      }
    }
    return { result, records };
  }

  waitTask(taskId: string, opts: { signal?: AbortSignal } = {}): Promise<ExitResult> {
    let t: T;
    try {
      t = this.task(taskId);
    } catch (err) {
      return Promise.reject(err);
    }
    if (t.exitResult) return Promise.resolve({ ...t.exitResult });
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(new AbortError('waitTask'));
    const life = this.life.signal;
    return new Promise<ExitResult>((resolve, reject) => {
      let done = false;
      const onAbort = () => finish(() => reject(new AbortError('waitTask')));
      const onShutdown = () => finish(() => reject(new AbortError('waitTask (the driver was shut down)')));
      const finish = (f: () => void) => {
        if (done) return;
        done = true;
        signal?.removeEventListener('abort', onAbort);
        life.removeEventListener('abort', onShutdown);
        f();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      life.addEventListener('abort', onShutdown, { once: true });
      void t.exited.then((r) => finish(() => resolve({ ...r })));
    });
  }

  async stopTask(taskId: string, opts: { timeoutMs?: number; signal?: string } = {}): Promise<void> {
    const t = this.task(taskId);
    const sig = parseSignal(opts.signal ?? 'SIGTERM', 'signal');
    const timeoutMs = optMs('timeoutMs', opts.timeoutMs, this.defaults.stopTimeoutMs);
    await this.stop(t, timeoutMs, sig);
  }

  async destroyTask(taskId: string, opts: { force?: boolean } = {}): Promise<void> {
    const t = this.task(taskId);
    const force = opts.force === true;
    this.destroyGate ??= new Gate(this.startConcurrency());
    const release = await this.destroyGate.acquire();
    try {
      // Destroyed by another call while this one waited (and perhaps a new task started under its id).
      if (this.tasks.get(taskId) !== t) return;
      if (await this.isRunning(t, force)) {
        if (!force) throw new TaskRunningError(taskId);
      }
      const { what, recordRemoved } = await this.destroy(t, this.store.deleteStep(taskId));
      this.tasks.delete(taskId);
      if (!recordRemoved) await this.store.deleteAsync(taskId);
      this.emit(t, 'destroyed', what);
    } finally {
      release();
    }
  }

  inspectTask(taskId: string): TaskStatus {
    return this.task(taskId).status();
  }

  /** Ids of the tasks this driver instance holds. */
  taskIds(): string[] {
    return [...this.tasks.keys()];
  }

  async signalTask(taskId: string, signal: string): Promise<void> {
    const t = this.task(taskId);
    const sig = parseSignal(signal, 'signal');
    if (t.exitResult) throw new TaskNotRunningError(taskId);
    await this.signal(t, sig);
    this.emit(t, 'signaled', `sent ${sig.name} to the task`, { signal: sig.name });
  }

  async execTask(taskId: string, cmd: string[], opts: { timeoutMs?: number } = {}): Promise<ExecTaskResult> {
    const t = this.task(taskId);
    const command = validateExecCmd(cmd);
    const timeoutMs = optMs('timeoutMs', opts.timeoutMs, this.defaults.execTimeoutMs, 1);
    if (t.exitResult) throw new TaskNotRunningError(taskId);
    return this.exec(t, command, timeoutMs, this.life.signal);
  }

  taskStats(taskId: string, opts: { intervalMs: number; signal?: AbortSignal }): AsyncIterable<TaskResourceUsage> {
    const t = this.task(taskId);
    const interval = opts?.intervalMs;
    if (typeof interval !== 'number' || !Number.isFinite(interval) || interval <= 0) {
      throw new InvalidConfigError('intervalMs', interval, 'must be a positive number of milliseconds');
    }
    return this.stats(t, interval, anySignal(this.life.signal, opts.signal)!);
  }

  taskEvents(opts: { signal?: AbortSignal } = {}): AsyncIterable<TaskEvent> {
    return this.hub.subscribe(opts);
  }

  /** Ends every loop, stream, watcher and timer of this driver; running tasks keep running. Idempotent. */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.unbindSignal?.();
      this.unbindSignal = undefined;
      this.life.abort();
      try {
        await this.closeDriver();
      } finally {
        this.hub.close();
      }
    })();
    return this.shutdownPromise;
  }
}
