/**
 * One running (or finished) raw_exec task: its main process (watched through a pidfd), its cgroup
 * (or, with noCgroups, its session/process group), its exit result shared by every waiter, and the
 * stop/kill/signal/stats operations on it. Nomad's rawexec taskHandle plus the executor's
 * Shutdown/Wait/Stats.
 */
import { AbortError, StopTimeoutError, TaskNotRunningError } from '../../errors.js';
import type { ExitInfo, ProcessHandle, Rusage } from '../../native.js';
import type { TaskCgroup } from '../../cgroups/types.js';
import { sleep } from '../../util/abort.js';
import type { ExitResult, TaskHandle, TaskResourceUsage, TaskStatus } from '../contract.js';
import type { CoreTask } from '../core/driver.js';
import { describeExit, reapedExit, unknownExit } from '../core/exit.js';
import { CLK_TCK, PAGE_SIZE, type ProcStat, killUntilGone, sessionMembers } from '../../util/proc.js';
import { signalName } from '../../signals.js';

/** What raw_exec persists in TaskHandle.driverState: exactly what recovery needs. */
export interface RawExecDriverState {
  pid: number;
  /** /proc/<pid>/stat field 22 at start: a reused pid has another. */
  startTime: number;
  /** Session and process group id (the task is started with setsid, so it is `pid`). */
  pgid: number;
  /** null with noCgroups. */
  cgroup: { version: string; parentName: string; name: string; paths: Record<string, string> } | null;
  uid: number;
  gid: number;
  groups: number[];
  /** Resolved executable. */
  file: string;
  cwd: string;
  /** The final environment (denied names removed); execTask uses it too. */
  env: Record<string, string>;
}

export type Emit = (type: string, message: string, annotations?: Record<string, string>) => void;

export interface RunnerInit {
  handle: TaskHandle<RawExecDriverState>;
  cgroup: TaskCgroup | undefined;
  recovered: boolean;
  /**
   * Recovery found the task gone (pid missing or reused): from then on it is acted upon through its
   * cgroup only, never through a pid, session or process group number that may name someone else.
   */
  gone?: boolean;
  emit: Emit;
  killTimeoutMs: number;
}

export class RawExecTask implements CoreTask {
  readonly handle: TaskHandle<RawExecDriverState>;
  readonly state: RawExecDriverState;
  readonly cgroup: TaskCgroup | undefined;
  readonly recovered: boolean;
  readonly gone: boolean;
  private readonly emit: Emit;
  private readonly killTimeoutMs: number;
  /** The main process: one pidfd, owned by this handle, for watching and signalling. */
  private proc: ProcessHandle | undefined;
  private result: ExitResult | undefined;
  private resolveExit!: (r: ExitResult) => void;
  /** Resolves once with the exit result; never rejects. */
  readonly exited: Promise<ExitResult>;
  completedAt: string | undefined;
  rusage: Rusage | undefined;
  private peakMemory = 0;
  private stopping: Promise<void> | undefined;
  destroyed = false;

  constructor(init: RunnerInit) {
    this.handle = init.handle;
    this.state = init.handle.driverState;
    this.cgroup = init.cgroup;
    this.recovered = init.recovered;
    this.gone = init.gone === true;
    this.emit = init.emit;
    this.killTimeoutMs = init.killTimeoutMs;
    this.exited = new Promise((resolve) => { this.resolveExit = resolve; });
  }

  get id(): string {
    return this.handle.taskId;
  }

  get allocId(): string {
    return this.handle.allocId;
  }

  get taskName(): string {
    return this.handle.taskName;
  }

  get running(): boolean {
    return this.result === undefined;
  }

  get exitResult(): ExitResult | undefined {
    return this.result;
  }

  /**
   * Starts watching the main process. The task owns `proc` from here on: it signals through it, and
   * it is closed once the exit is delivered (or at detach).
   */
  attach(proc: ProcessHandle, reap: boolean): void {
    this.proc = proc;
    proc.watch(reap, (info) => this.onExit(info));
  }

  /** Marks a task found dead at recovery. */
  markGone(err: string): void {
    this.finish(unknownExit(err, this.readOom()));
  }

  private readOom(): boolean {
    try {
      return this.cgroup?.oomKilled() ?? false;
    } catch {
      return false;
    }
  }

  private onExit(info: ExitInfo): void {
    if (info.rusage) this.rusage = info.rusage;
    const oomKilled = this.readOom();
    this.finish(info.reaped
      ? reapedExit(info.exitCode, info.signal, oomKilled)
      : unknownExit('exit status unknown: the task was recovered after an agent restart, so this agent is not its parent and cannot read how it ended', oomKilled));
  }

  private finish(r: ExitResult): void {
    if (this.result) return;
    this.result = r;
    this.completedAt = new Date().toISOString();
    this.proc?.close();
    const d = describeExit(r);
    this.emit('exited', d.message, d.annotations);
    this.resolveExit(r);
  }

  emitStarted(removedEnv: string[]): void {
    this.emit('started', `task started (pid ${this.state.pid}${this.cgroup ? `, cgroup ${this.cgroup.name}` : ', no cgroup'})`,
      removedEnv.length > 0 ? { deniedEnvvarsRemoved: removedEnv.join(',') } : undefined);
  }

  emitRecovered(attached: boolean): void {
    this.emit('recovered', attached ? `task recovered (pid ${this.state.pid})` : `task recovered, but pid ${this.state.pid} is no longer the task`);
  }

  /** Sends a signal to the main process (through its pidfd: never to a reused pid). */
  signal(sig: number): void {
    if (!this.running || !this.proc || this.proc.closed) throw new TaskNotRunningError(this.id);
    try {
      this.proc.signal(sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return; // exiting right now
      throw err;
    }
  }

  /** Live pids of the task (its cgroup, or its session/process group). */
  pids(): number[] {
    if (this.cgroup) {
      try {
        return this.cgroup.pids();
      } catch {
        return [];
      }
    }
    return this.sessionPids();
  }

  private sessionPids(): number[] {
    return this.sessionStats().map((m) => m.pid);
  }

  /**
   * Without cgroups: the processes of the task's session. None for a task known gone; none either
   * when the session's number now leads someone else's session (a process with pid = sid that is
   * not the task's main process: the kernel reuses a sid only once no process of the old one is left).
   */
  private sessionStats(): ProcStat[] {
    if (this.gone) return [];
    const members = sessionMembers(this.state.pgid);
    const leader = members.find((m) => m.pid === this.state.pgid);
    if (leader && leader.starttime !== this.state.startTime) return [];
    return members;
  }

  /** Kills every process of the task and waits until none is left. */
  async killAll(): Promise<number> {
    if (this.cgroup) {
      const out = await this.cgroup.kill({ timeoutMs: this.killTimeoutMs });
      return out.signalled;
    }
    return killUntilGone(() => this.sessionPids(), this.killTimeoutMs, `task ${this.id}`);
  }

  /**
   * Nomad's executor Shutdown: the signal to the main process, up to `timeoutMs` for it to exit,
   * then a kill of the whole group; when this resolves nothing of the task runs.
   * Concurrent stops share the first one.
   */
  stop(timeoutMs: number, sig: number, abort: AbortSignal): Promise<void> {
    // A later stop with no grace (a second Ctrl-C, a forced destroy) cuts the running one's grace short.
    if (this.stopping && timeoutMs === 0) this.hurry?.abort();
    this.stopping ??= this.doStop(timeoutMs, sig, abort).finally(() => { this.stopping = undefined; });
    return this.stopping;
  }

  private hurry: AbortController | undefined;

  private async doStop(timeoutMs: number, sig: number, abort: AbortSignal): Promise<void> {
    // With no grace and a cgroup the group kill below is the signal: sending one to the main
    // process first, here on the loop, would only wake it to die while the loop waits.
    if (this.running && (timeoutMs > 0 || !this.cgroup)) {
      this.emit('killing', `sending ${signalName(sig) ?? sig} to the task, group kill after ${timeoutMs} ms`);
      try {
        this.signal(sig);
      } catch (err) {
        if (!(err instanceof TaskNotRunningError)) throw err;
      }
      if (timeoutMs > 0) {
        const ac = new AbortController();
        this.hurry = ac;
        const onAbort = () => ac.abort();
        abort.addEventListener('abort', onAbort, { once: true });
        try {
          await Promise.race([this.exited, sleep(timeoutMs, ac.signal)]);
        } finally {
          ac.abort();
          this.hurry = undefined;
          abort.removeEventListener('abort', onAbort);
        }
        // The driver shut down while we waited: leave the task as it is (shutdown never kills tasks).
        if (abort.aborted && this.running) throw new AbortError('stopTask (the driver was shut down)');
      }
    }
    const wasRunning = this.running;
    const remaining = this.pids().length;
    if (wasRunning || remaining > 0) {
      const n = await this.killAll();
      this.emit('killed', `killed the task's group (${wasRunning ? 'main process still running' : `${remaining} leftover process(es)`}; ${n} SIGKILL(s))`);
    }
    if (this.running) await this.waitExitBounded(this.killTimeoutMs);
  }

  /**
   * The last resort when stop() failed (a freeze that did not finish, a kill that timed out): no
   * freezer, no cgroup.kill — SIGKILL to the main process through its pidfd and to every pid of the
   * group, in rounds until none is left, then the main process's exit; each bounded by `timeoutMs`.
   */
  async forceKill(timeoutMs: number): Promise<void> {
    if (this.running) {
      try {
        this.signal(9);
      } catch {
        /* not watched any more: the group's pids below still get it */
      }
    }
    // A group a failed freeze left FROZEN would hold the SIGKILLs back: thaw it first (best effort).
    await this.cgroup?.thaw({ timeoutMs }).catch(() => {});
    await killUntilGone(() => this.pids(), timeoutMs, `task ${this.id}`);
    if (this.running) await this.waitExitBounded(timeoutMs);
  }

  /** Waits for the main process's exit notification after it was killed; bounded. */
  async waitExitBounded(ms: number): Promise<void> {
    const ac = new AbortController();
    try {
      await Promise.race([this.exited, sleep(ms, ac.signal)]);
    } finally {
      ac.abort();
    }
    if (this.running) throw new StopTimeoutError(this.id, `main process ${this.state.pid} did not exit`, ms);
  }

  /** Stops watching (driver shutdown): the task keeps running. */
  detach(): void {
    this.proc?.close();
  }

  status(): TaskStatus {
    const attrs: Record<string, string> = {
      pid: String(this.state.pid),
      pgid: String(this.state.pgid),
      cgroups: this.cgroup ? 'on' : 'off',
      recovered: String(this.recovered),
    };
    if (this.cgroup) for (const [k, v] of Object.entries(this.cgroup.paths)) attrs[`cgroup.${k}`] = v;
    if (this.rusage) {
      attrs['rusage.userUs'] = String(this.rusage.userUs);
      attrs['rusage.systemUs'] = String(this.rusage.systemUs);
      attrs['rusage.maxRssKb'] = String(this.rusage.maxRssKb);
    }
    return {
      id: this.id,
      name: this.handle.taskName,
      state: this.running ? 'running' : 'exited',
      startedAt: this.handle.startedAt,
      ...(this.completedAt ? { completedAt: this.completedAt } : {}),
      ...(this.result ? { exitResult: { ...this.result } } : {}),
      driverAttributes: attrs,
    };
  }

  /** One stats sample; `prev` gives the interval for cpu percent. */
  sample(prev: TaskResourceUsage | undefined): TaskResourceUsage {
    const now = Date.now();
    let usage: TaskResourceUsage;
    if (this.cgroup) {
      const s = this.cgroup.stats();
      const mem = s.memory ?? { usageBytes: 0, rssBytes: 0, cacheBytes: 0, maxUsageBytes: 0 };
      usage = {
        taskId: this.id,
        timestamp: now,
        cpu: { userNs: s.cpu.userNs, systemNs: s.cpu.systemNs, totalNs: s.cpu.totalNs, percent: 0, throttledNs: s.cpu.throttledNs },
        memory: { ...mem },
        limitHits: this.cgroup.limitHits(),
        source: 'cgroup',
        ...(Object.keys(s.unavailable).length > 0 ? { unavailable: { ...s.unavailable } } : {}),
      };
    } else {
      let ticksU = 0;
      let ticksS = 0;
      let rss = 0;
      for (const p of this.sessionStats()) {
        ticksU += p.utime;
        ticksS += p.stime;
        rss += p.rss * PAGE_SIZE;
      }
      const toNs = 1e9 / CLK_TCK;
      usage = {
        taskId: this.id,
        timestamp: now,
        cpu: { userNs: ticksU * toNs, systemNs: ticksS * toNs, totalNs: (ticksU + ticksS) * toNs, percent: 0, throttledNs: 0 },
        memory: { usageBytes: rss, rssBytes: rss, cacheBytes: 0, maxUsageBytes: 0 },
        source: 'proc',
        unavailable: {
          'memory.cache': 'not measured without cgroups',
          'cpu.throttled': 'not measured without cgroups',
          'cpu.exited': 'cpu time of processes that already exited is not counted without cgroups',
        },
      };
    }
    this.peakMemory = Math.max(this.peakMemory, usage.memory.usageBytes, usage.memory.maxUsageBytes);
    if (usage.memory.maxUsageBytes === 0) usage.memory.maxUsageBytes = this.peakMemory;
    if (prev && now > prev.timestamp) {
      const d = usage.cpu.totalNs - prev.cpu.totalNs;
      usage.cpu.percent = Math.max(0, (d / ((now - prev.timestamp) * 1e6)) * 100);
    }
    return usage;
  }
}
