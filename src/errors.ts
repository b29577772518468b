/**
 * Every error corral throws is a CorralError with a stable `code` a caller can switch on.
 * Errors that come from a system call keep Node's fs-error shape: `code` is the errno name
 * ('EBUSY', 'ENOENT', ...), with `errno`, `syscall` and `path`.
 */
export class CorralError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A field of a config has a value corral refuses. `field` is the dotted path, e.g. `resources.cores`. */
export class InvalidConfigError extends CorralError {
  readonly field: string;
  readonly value: unknown;
  constructor(field: string, value: unknown, reason: string) {
    super('ERR_INVALID_CONFIG', `invalid ${field} ${describeValue(value)}: ${reason}`);
    this.field = field;
    this.value = value;
  }
}

export class TaskNotFoundError extends CorralError {
  readonly taskId: string;
  constructor(taskId: string) {
    super('ERR_TASK_NOT_FOUND', `task ${JSON.stringify(taskId)} not found`);
    this.taskId = taskId;
  }
}

export class TaskExistsError extends CorralError {
  readonly taskId: string;
  constructor(taskId: string) {
    super('ERR_TASK_EXISTS', `task ${JSON.stringify(taskId)} already exists`);
    this.taskId = taskId;
  }
}

/**
 * A task record belongs to another agent that is still alive (same pid and process start time):
 * recovering, adopting or destroying it would take it from under that agent.
 */
export class TaskOwnedError extends CorralError {
  readonly taskId: string;
  readonly ownerPid: number;
  readonly ownerStartTime: number;
  constructor(taskId: string, owner: { pid: number; startTime: number }) {
    super('ERR_TASK_OWNED', `task ${JSON.stringify(taskId)} is owned by a live agent (pid ${owner.pid}, process start time ${owner.startTime}); ` +
      'it is left to that agent (recover it with force to take it over)');
    this.taskId = taskId;
    this.ownerPid = owner.pid;
    this.ownerStartTime = owner.startTime;
  }
}

/**
 * execTask on a task that has no recorded user, or whose recorded uid/gid the plugin's
 * deniedHostUids/Gids refuse: the command would otherwise run as the agent (often root).
 */
export class ExecUserRefusedError extends CorralError {
  readonly taskId: string;
  readonly uid: number | undefined;
  readonly gid: number | undefined;
  constructor(taskId: string, uid: number | undefined, gid: number | undefined, reason: string) {
    super('ERR_TASK_NO_USER', `exec in task ${JSON.stringify(taskId)} refused: ${reason}`);
    this.taskId = taskId;
    this.uid = uid;
    this.gid = gid;
  }
}

/** destroyTask on a running task without `force`. */
export class TaskRunningError extends CorralError {
  readonly taskId: string;
  constructor(taskId: string) {
    super('ERR_TASK_RUNNING', `task ${JSON.stringify(taskId)} is still running; stop it first or destroy with force`);
    this.taskId = taskId;
  }
}

/** signalTask or execTask on a task that has exited (the same error in every driver). */
export class TaskNotRunningError extends CorralError {
  readonly taskId: string;
  constructor(taskId: string) {
    super('ERR_TASK_NOT_RUNNING', `task ${JSON.stringify(taskId)} is not running`);
    this.taskId = taskId;
  }
}

/** The task's process could not be started (after validation passed: the system refused). */
export class SpawnError extends CorralError {
  readonly taskId: string;
  constructor(taskId: string, reason: string, options?: { cause?: unknown }) {
    super('ERR_SPAWN', `task ${JSON.stringify(taskId)} could not be started: ${reason}`, options);
    this.taskId = taskId;
  }
}

/** A stopped task's main process did not report its exit within the bound after it was killed. */
export class StopTimeoutError extends CorralError {
  readonly taskId: string;
  readonly timeoutMs: number;
  constructor(taskId: string, detail: string, timeoutMs: number) {
    super('ERR_STOP_TIMEOUT', `task ${JSON.stringify(taskId)}: ${detail} within ${timeoutMs} ms of being killed`);
    this.taskId = taskId;
    this.timeoutMs = timeoutMs;
  }
}

/** Processes were still alive after being SIGKILLed for `timeoutMs` (without a cgroup to kill them as one). */
export class KillTimeoutError extends CorralError {
  readonly pids: number[];
  readonly timeoutMs: number;
  constructor(what: string, pids: number[], timeoutMs: number) {
    super('ERR_KILL_TIMEOUT', `${what}: processes ${pids.join(',')} still alive after ${timeoutMs} ms`);
    this.pids = pids;
    this.timeoutMs = timeoutMs;
  }
}

export class DriverUnavailableError extends CorralError {
  readonly driver: string;
  constructor(driver: string, reason: string, options?: { cause?: unknown }) {
    super('ERR_DRIVER_UNAVAILABLE', `driver ${driver} is unavailable: ${reason}`, options);
    this.driver = driver;
  }
}

/** The native addon is missing or was built for another Node ABI. */
export class NativeAddonError extends CorralError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NATIVE_ADDON', message, options);
  }
}

/** A cgroup controller or feature this host/layout does not offer (e.g. memory on the unified hierarchy of a hybrid host). */
export class CgroupUnsupportedError extends CorralError {
  readonly feature: string;
  constructor(feature: string, reason: string) {
    super('ERR_CGROUP_UNSUPPORTED', `cgroup ${feature} is not available: ${reason}`);
    this.feature = feature;
  }
}

/** A system call on a cgroup failed. `code` is the errno name, as in Node's fs errors. */
export class CgroupError extends CorralError {
  readonly errno: number;
  readonly syscall: string;
  readonly path: string | undefined;
  constructor(code: string, errno: number, syscall: string, path: string | undefined, message?: string) {
    super(code, message ?? `${code}: ${syscall} failed${path ? ` on ${path}` : ''}`);
    this.errno = errno;
    this.syscall = syscall;
    this.path = path;
  }
  /** Wraps an error thrown by fs or the native addon, keeping its errno fields. */
  static from(err: unknown, fallbackPath?: string): CgroupError {
    if (err instanceof CgroupError) return err;
    const e = err as NodeJS.ErrnoException;
    const code = typeof e?.code === 'string' ? e.code : 'EIO';
    const path = e?.path ?? fallbackPath;
    const c = new CgroupError(code, typeof e?.errno === 'number' ? Math.abs(e.errno) : 0, e?.syscall ?? 'unknown', path,
      e?.message ?? String(err));
    return c;
  }
}

/** Waiting for a cgroup to freeze, or to empty, hit its bound. */
export class CgroupTimeoutError extends CorralError {
  readonly path: string;
  readonly timeoutMs: number;
  readonly phase: string;
  constructor(phase: string, path: string, timeoutMs: number) {
    super('ERR_CGROUP_TIMEOUT', `cgroup ${path} did not ${phase} within ${timeoutMs} ms`);
    this.phase = phase;
    this.path = path;
    this.timeoutMs = timeoutMs;
  }
}

/** A process was to start in a frozen cgroup (it would freeze before it could exec). Nothing was started. */
export class CgroupFrozenError extends CorralError {
  readonly path: string;
  constructor(path: string) {
    super('ERR_CGROUP_FROZEN', `cgroup ${path} is frozen: a process started in it could not run (thaw it first)`);
    this.path = path;
  }
}

/** A core requested for reservation is already held by another task. */
export class CpusetConflictError extends CorralError {
  readonly cores: number[];
  readonly heldBy: string;
  constructor(cores: number[], heldBy: string) {
    super('ERR_CPUSET_CONFLICT', `core(s) ${cores.join(',')} already reserved by ${heldBy}`);
    this.cores = cores;
    this.heldBy = heldBy;
  }
}

/** execTask ran past its timeout; the command and its children were killed. */
export class ExecTimeoutError extends CorralError {
  readonly timeoutMs: number;
  constructor(cmd: readonly string[], timeoutMs: number) {
    super('ERR_EXEC_TIMEOUT', `exec ${JSON.stringify(cmd)} timed out after ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}

/** A Docker Engine API call failed or timed out. */
export class DockerError extends CorralError {
  readonly statusCode: number | undefined;
  constructor(operation: string, reason: string, statusCode?: number, options?: { cause?: unknown }) {
    super('ERR_DOCKER', `docker ${operation} failed: ${reason}`, options);
    this.statusCode = statusCode;
  }
}

/** A Docker Engine API call did not answer within its bound (a hung dockerd must not hang corral). */
export class DockerTimeoutError extends CorralError {
  readonly operation: string;
  readonly timeoutMs: number;
  constructor(operation: string, timeoutMs: number) {
    super('ERR_DOCKER_TIMEOUT', `docker ${operation} did not answer within ${timeoutMs} ms`);
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/** The operation was aborted through an AbortSignal. */
export class AbortError extends CorralError {
  constructor(what = 'operation') {
    super('ABORT_ERR', `${what} was aborted`);
  }
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 200 ? value.slice(0, 200) + '…' : value);
  try {
    const s = JSON.stringify(value);
    if (s === undefined) return String(value);
    return s.length > 200 ? s.slice(0, 200) + '…' : s;
  } catch {
    return String(value);
  }
}
