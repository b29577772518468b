/**
 * The driver contract: the TypeScript form of Nomad's DriverPlugin.
 * Both drivers (raw_exec, docker) implement TaskDriver; everything here is JSON-serialisable
 * except the async iterables.
 */
import type { TaskResources } from '../cgroups/types.js';

export type TaskState = 'running' | 'exited' | 'unknown';

export interface Capabilities {
  sendSignals: boolean;
  exec: boolean;
  fsIsolation: 'none' | 'chroot' | 'image';
  /**
   * Whether waitTask on a task recovered after an agent restart reports how it really ended.
   * raw_exec cannot (the new agent is not the task's parent, so it cannot reap it: `err` says so);
   * docker can (the engine keeps the exit code).
   */
  exitStatusAfterRecovery: boolean;
  /** Whether the driver can run tasks without cgroups (raw_exec's noCgroups). */
  noCgroups: boolean;
}

export type HealthState = 'healthy' | 'unhealthy' | 'undetected';

export interface Fingerprint {
  health: HealthState;
  healthDescription: string;
  attributes: Record<string, string | number | boolean>;
}

/** `D` is the driver's own block: `TaskConfig<RawExecTaskConfig>`, `TaskConfig<DockerTaskDriverConfig>`. */
export interface TaskConfig<D extends object = Record<string, unknown>> {
  id: string;
  /** UUID of the allocation. */
  allocId: string;
  name: string;
  env?: Record<string, string>;
  user?: string;
  taskDir?: string;
  stdoutPath?: string;
  stderrPath?: string;
  resources?: TaskResources;
  /** Driver-specific config (raw_exec: command, args, ...; docker: image, ...). */
  driver: D;
}

/** What recovery needs, persisted by the TaskStore. `driverState` is the driver's own. */
export interface TaskHandle<S = Record<string, unknown>> {
  version: 1;
  driver: string;
  taskId: string;
  allocId: string;
  taskName: string;
  startedAt: string;
  config: TaskConfig<object>;
  driverState: S;
}

export interface ExitResult {
  exitCode: number | null;
  signal: number | null;
  oomKilled: boolean;
  /** Set when how the task ended is not known (e.g. it exited while the agent was down). */
  err?: string;
}

export interface TaskStatus {
  id: string;
  name: string;
  state: TaskState;
  startedAt: string;
  completedAt?: string;
  exitResult?: ExitResult;
  driverAttributes: Record<string, string>;
}

export interface TaskResourceUsage {
  taskId: string;
  timestamp: number;
  cpu: {
    userNs: number;
    systemNs: number;
    totalNs: number;
    /** Percent of one core over the interval. */
    percent: number;
    throttledNs: number;
  };
  memory: {
    usageBytes: number;
    rssBytes: number;
    cacheBytes: number;
    maxUsageBytes: number;
  };
  /**
   * How often the task's group hit its limits so far, as the kernel counts them (raw_exec with
   * cgroups: OOM kills, forks refused at pidsMax); a field is absent where it is not counted.
   */
  limitHits?: { oomKills?: number; pidsLimitHits?: number };
  /** Which stats were measured ('cgroup' | 'proc' | 'docker') and what could not be. */
  source: string;
  unavailable?: Record<string, string>;
}

export interface TaskEvent {
  taskId: string;
  allocId: string;
  taskName: string;
  timestamp: number;
  /** e.g. 'started', 'exited', 'signaled', 'killing', 'killed', 'recovered', 'image-pull', 'destroyed'. */
  type: string;
  message: string;
  annotations?: Record<string, string>;
}

export interface ExecTaskResult {
  stdout: string;
  stderr: string;
  exitResult: ExitResult;
}

/** `D` is the driver block its startTask takes (typed per driver, so a misspelt option is a compile error). */
export interface TaskDriver<D extends object = object> {
  readonly name: string;
  capabilities(): Capabilities;
  fingerprint(opts?: { signal?: AbortSignal; intervalMs?: number }): AsyncIterable<Fingerprint>;
  startTask(cfg: TaskConfig<D>): Promise<TaskHandle>;
  /** Re-attaches a task; refused (ERR_TASK_OWNED) while another live agent owns its record, unless `force`. */
  recoverTask(handle: TaskHandle, opts?: { force?: boolean }): Promise<void>;
  waitTask(taskId: string, opts?: { signal?: AbortSignal }): Promise<ExitResult>;
  stopTask(taskId: string, opts?: { timeoutMs?: number; signal?: string }): Promise<void>;
  destroyTask(taskId: string, opts?: { force?: boolean }): Promise<void>;
  inspectTask(taskId: string): TaskStatus;
  taskStats(taskId: string, opts: { intervalMs: number; signal?: AbortSignal }): AsyncIterable<TaskResourceUsage>;
  /**
   * One reading now, where the driver can take it without a round trip (raw_exec reads its cgroup):
   * what `run()` and `corral run` use for the peaks just before the task's group is removed.
   */
  sampleStats?(taskId: string): TaskResourceUsage;
  taskEvents(opts?: { signal?: AbortSignal }): AsyncIterable<TaskEvent>;
  signalTask(taskId: string, signal: string): Promise<void>;
  execTask(taskId: string, cmd: string[], opts?: { timeoutMs?: number }): Promise<ExecTaskResult>;
  shutdown(): Promise<void>;
}
