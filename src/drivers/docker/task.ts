/**
 * One docker task (Nomad's docker taskHandle): the persisted driver state, what is known of the
 * container, the one exit watch every waiter shares, and the log follower copying the container's
 * output to the task's stdoutPath/stderrPath.
 */
import * as fs from 'node:fs';
import { Writable } from 'node:stream';
import { AbortError } from '../../errors.js';
import { anySignal, sleep } from '../../util/abort.js';
import type { TaskCgroup } from '../../cgroups/types.js';
import type { ExitResult, TaskConfig, TaskHandle, TaskState, TaskStatus } from '../contract.js';
import type { CoreTask } from '../core/driver.js';
import { signalOfExitCode, unknownExit } from '../core/exit.js';
import { type ContainerInspect, bounded, destroyStream, statusOf } from './client.js';
import type { DockerContext } from './context.js';
import { kernelLoggedOomKill } from './oom.js';
import type { StdinAttachment } from './stdin.js';

/** What recovery needs (TaskHandle.driverState of the docker driver). */
export interface DockerDriverState {
  containerId: string;
  containerName: string;
  /** The image reference the task asked for. */
  image: string;
  /** The image ID the container was created from, when known (pulled, recovered, or seen at exit). */
  imageId?: string;
  /** The agent that created the container (its io.corral.agent_id label). */
  agentId: string;
  /** The task's group in corral's cpuset partition (`<allocId>-<task>`), when it has one (see cpusets.ts). */
  cgroup?: string;
}

export type DockerTaskHandle = TaskHandle<DockerDriverState & Record<string, unknown>>;

export class DockerTask implements CoreTask {
  state: TaskState = 'running';
  completedAt: string | undefined;
  exitResult: ExitResult | undefined;
  /** Last signal number this driver sent (to tell a signal death from an exit code > 128). */
  lastSignal: number | undefined;
  readonly exited: Promise<ExitResult>;
  private resolveExit!: (r: ExitResult) => void;
  /** Aborts the exit watch and the log follower. */
  readonly watchCtl = new AbortController();
  /** Follows the container's logs into stdoutPath/stderrPath, if any. */
  logs: Promise<void> | undefined;
  /** Its group in corral's cpuset partition (reserved cores; on v2 cgroupfs engines, the container's parent). */
  group: TaskCgroup | undefined;
  /** driver.stdin being copied into the container (closed at destroy, or when the container ends it). */
  stdin: StdinAttachment | undefined;

  constructor(
    readonly handle: DockerTaskHandle,
    readonly startedAt: string,
  ) {
    this.exited = new Promise((resolve) => { this.resolveExit = resolve; });
  }

  get id(): string { return this.handle.taskId; }
  get allocId(): string { return this.handle.allocId; }
  get taskName(): string { return this.handle.taskName; }
  get containerId(): string { return this.handle.driverState.containerId; }
  get cfg(): TaskConfig<object> { return this.handle.config; }

  /** Records the exit once; false when it was known already. */
  markExited(r: ExitResult, finishedAt?: string): boolean {
    if (this.exitResult) return false;
    this.state = 'exited';
    this.exitResult = r;
    this.completedAt = finishedAt && !finishedAt.startsWith('0001-') ? finishedAt : new Date().toISOString();
    this.resolveExit(r);
    return true;
  }

  /** Resolves true when the task exits within `ms`, false otherwise. No timer is left. */
  async exitWithin(ms: number): Promise<boolean> {
    if (this.exitResult) return true;
    const ac = new AbortController();
    const r = await Promise.race([this.exited.then(() => true), sleep(ms, ac.signal).then((elapsed) => !elapsed)]);
    ac.abort();
    return r;
  }

  status(): TaskStatus {
    const s: TaskStatus = {
      id: this.id,
      name: this.handle.taskName,
      state: this.state,
      startedAt: this.startedAt,
      driverAttributes: {
        containerId: this.containerId,
        containerName: this.handle.driverState.containerName,
        image: this.handle.driverState.image,
        agentId: this.handle.driverState.agentId,
      },
    };
    if (this.handle.driverState.imageId) s.driverAttributes.imageId = this.handle.driverState.imageId;
    if (this.completedAt !== undefined) s.completedAt = this.completedAt;
    if (this.exitResult !== undefined) s.exitResult = { ...this.exitResult };
    return s;
  }
}

/**
 * The exit result a container's inspect shows. Docker reports a signal death as 128+n; it counts as
 * a signal only when corral sent it (or the kernel's OOM kill sent SIGKILL).
 */
export function exitResultOf(info: ContainerInspect, lastSignal: number | undefined, kernelOom = false): ExitResult {
  const code = info.State.ExitCode;
  const oom = info.State.OOMKilled === true || kernelOom;
  const r: ExitResult = { exitCode: code, signal: signalOfExitCode(code, [lastSignal, oom ? 9 : undefined]), oomKilled: oom };
  if (info.State.Error) r.err = info.State.Error;
  return r;
}

/** Watches the container until it stops; calls `onExit` once with its result (never after shutdown). */
export function watchExit(ctx: DockerContext, task: DockerTask, onExit: (r: ExitResult, finishedAt?: string) => void): void {
  ctx.track(waitForExit(ctx, task).then(
    (r) => onExit(r.result, r.finishedAt),
    () => { /* aborted: the driver shut down or the task was destroyed */ },
  ));
}

async function waitForExit(ctx: DockerContext, task: DockerTask): Promise<{ result: ExitResult; finishedAt?: string }> {
  const signal = anySignal(ctx.life, task.watchCtl.signal)!;
  const container = ctx.docker.getContainer(task.containerId);
  const pause = async (ms: number) => {
    if (!(await sleep(ms, signal))) throw new AbortError('wait');
  };
  const main = await mainProcess(ctx, task, signal);
  for (;;) {
    if (signal.aborted) throw new AbortError('wait');
    try {
      // Long poll, not bounded: it is meant to last as long as the task. Ends with the driver.
      await bounded('wait container', 2 ** 31 - 1, signal, (s) => container.wait({ condition: 'not-running', abortSignal: s }));
      break;
    } catch (err) {
      if (signal.aborted || err instanceof AbortError) throw new AbortError('wait');
      if (statusOf(err) === 404) return { result: unknownExit('the container was removed') };
      ctx.markUnhealthy(err);
      // Daemon restarting or connection lost: look again shortly.
      await pause(1000);
    }
  }
  for (let i = 0; ; i++) {
    try {
      const info = await ctx.call('inspect container', (s) => container.inspect({ abortSignal: s }), { signal });
      if (info.State.Running && i < 50) {
        await pause(100);
        continue;
      }
      let last = info;
      let kernelOom = false;
      // A SIGKILL corral did not send, in a container with a memory limit: Docker's OOMKilled may be
      // missing (see oom.ts), so ask the kernel's log; without it, Docker's OOM event may still reach
      // the state just after the exit: look again briefly before reporting.
      if (main && last.State.ExitCode === 137 && !last.State.OOMKilled && task.lastSignal !== 9) {
        kernelOom = (await kernelLoggedOomKill({ containerId: task.containerId, ...main }, signal)) === true;
        for (let j = 0; j < 3 && !kernelOom && !last.State.OOMKilled; j++) {
          await pause(150);
          last = await ctx.call('inspect container', (s) => container.inspect({ abortSignal: s }), { signal });
        }
      }
      if (!task.handle.driverState.imageId && last.Image) task.handle.driverState.imageId = last.Image;
      return { result: exitResultOf(last, task.lastSignal, kernelOom), finishedAt: last.State.FinishedAt };
    } catch (err) {
      if (signal.aborted || err instanceof AbortError) throw new AbortError('wait');
      if (statusOf(err) === 404) return { result: unknownExit('the container was removed before its exit could be read') };
      await pause(1000);
    }
  }
}

/**
 * For a container with a memory limit (the only kind its memory cgroup's OOM killer ends): the host
 * pid of its main process and its start, which the kernel log's OOM kill records are matched
 * against after the exit (see oom.ts). undefined without a limit; pid 0 when it could not be read
 * (the container already stopped, Docker did not answer): the records naming its cgroup still count.
 */
async function mainProcess(ctx: DockerContext, task: DockerTask, signal: AbortSignal): Promise<{ pid: number; startedAtMs: number } | undefined> {
  if (!((task.cfg.resources?.memoryBytes ?? 0) > 0)) return undefined;
  const fallback = { pid: 0, startedAtMs: Date.parse(task.startedAt) || Date.now() };
  try {
    const info = await ctx.call('inspect container', (s) => ctx.docker.getContainer(task.containerId).inspect({ abortSignal: s }), { signal });
    const started = Date.parse(info.State.StartedAt ?? '');
    return { pid: info.State.Running ? (info.State.Pid ?? 0) : 0, startedAtMs: Number.isFinite(started) && started > 0 ? started : fallback.startedAtMs };
  } catch (err) {
    if (signal.aborted || err instanceof AbortError) throw new AbortError('wait');
    return fallback;
  }
}

/** Copies the container's output to stdoutPath/stderrPath (when set) until it stops. */
export function followLogs(ctx: DockerContext, task: DockerTask, sinceSec: number): void {
  const { stdoutPath, stderrPath } = task.cfg;
  if (!stdoutPath && !stderrPath) return;
  const signal = anySignal(ctx.life, task.watchCtl.signal)!;
  const sink = (p: string | undefined): Writable => {
    if (!p) return new Writable({ write(_c, _e, cb) { cb(); } });
    // This process's own stdout/stderr: write through them (opening /dev/stdout anew would get a
    // second file offset and overwrite a regular file the parent is also writing).
    const own = p === '/dev/stdout' ? process.stdout : p === '/dev/stderr' ? process.stderr : undefined;
    if (own) return new Writable({ write(c, _e, cb) { own.write(c, () => cb()); } });
    return fs.createWriteStream(p, { flags: 'a' });
  };
  const out = sink(stdoutPath);
  const err = sink(stderrPath);
  const closeAll = () => new Promise<void>((resolve) => { let n = 2; const done = () => { if (--n === 0) resolve(); }; out.end(done); err.end(done); });
  task.logs = ctx.track((async () => {
    try {
      const stream = await ctx.call('container logs', (s) => ctx.docker.getContainer(task.containerId).logs({
        follow: true, stdout: true, stderr: true, since: sinceSec, abortSignal: s,
      }), { signal });
      await new Promise<void>((resolve) => {
        const onAbort = () => { destroyStream(stream); resolve(); };
        signal.addEventListener('abort', onAbort, { once: true });
        ctx.docker.modem.demuxStream(stream, out, err);
        const end = () => { signal.removeEventListener('abort', onAbort); resolve(); };
        stream.on('end', end);
        stream.on('close', end);
        stream.on('error', end);
      });
    } catch (error) {
      if (!signal.aborted) ctx.logger.warn('cannot follow container logs', { taskId: task.id, error: (error as Error).message });
    } finally {
      await closeAll();
    }
  })());
}
