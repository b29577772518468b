/**
 * The per-task state of the docker driver (Nomad's taskHandle): the persisted driver state, what is
 * known of the container, and the one exit watch that every waiter shares.
 */
import type Docker from 'dockerode';
import type { ExitResult, TaskConfig, TaskHandle, TaskState, TaskStatus } from '../contract.js';

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
}

export type DockerTaskHandle = TaskHandle<DockerDriverState & Record<string, unknown>>;

export class TaskEntry {
  state: TaskState = 'running';
  completedAt: string | undefined;
  exitResult: ExitResult | undefined;
  /** Last signal number this driver sent (to tell a signal death from an exit code > 128). */
  lastSignal: number | undefined;
  /** Resolves with the exit result; rejects with AbortError when the driver shuts down first. */
  exit!: Promise<ExitResult>;
  /** Aborts the exit watch and the log follower. */
  readonly watchCtl = new AbortController();
  /** Follows the container's logs into stdoutPath/stderrPath, if any. */
  logs: Promise<void> | undefined;

  constructor(
    readonly handle: DockerTaskHandle,
    readonly startedAt: string,
  ) {}

  get taskId(): string { return this.handle.taskId; }
  get containerId(): string { return this.handle.driverState.containerId; }
  get cfg(): TaskConfig { return this.handle.config; }

  markExited(r: ExitResult, finishedAt?: string): void {
    if (this.state === 'exited') return;
    this.state = 'exited';
    this.exitResult = r;
    this.completedAt = finishedAt && !finishedAt.startsWith('0001-') ? finishedAt : new Date().toISOString();
  }

  status(): TaskStatus {
    const s: TaskStatus = {
      id: this.taskId,
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

/** The exit result a container's inspect shows. */
export function exitResultOf(info: Docker.ContainerInspectInfo, lastSignal: number | undefined): ExitResult {
  const code = info.State.ExitCode;
  const oom = info.State.OOMKilled === true;
  let signal: number | null = null;
  // Docker reports a signal death as 128+n. Say which signal only when it is one corral sent
  // (or the kernel's OOM kill), so that a program's own `exit 130` is not misread.
  if (code > 128 && code < 128 + 65) {
    const n = code - 128;
    if (n === lastSignal || (oom && n === 9)) signal = n;
  }
  const r: ExitResult = { exitCode: code, signal, oomKilled: oom };
  if (info.State.Error) r.err = info.State.Error;
  return r;
}
