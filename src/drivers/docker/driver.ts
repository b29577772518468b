/**
 * DockerDriver: the TaskDriver contract on a Docker Engine, through dockerode (Nomad's docker driver).
 *
 * Every Docker call is bounded (callTimeoutMs; pulls by pullTimeoutMs); the long ones (exit watch,
 * stats and log streams) are owned by the driver and end when it shuts down. Running containers keep
 * running across shutdown; a new driver (even in a new process) finds them again through the
 * TaskStore (`recoverTask` / `recoverAll`).
 */
import * as fs from 'node:fs';
import { setMaxListeners } from 'node:events';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import type Docker from 'dockerode';
import {
  AbortError, CorralError, DockerError, DockerTimeoutError, DriverUnavailableError, ExecTimeoutError, InvalidConfigError,
  TaskExistsError, TaskNotFoundError, TaskRunningError,
} from '../../errors.js';
import { parseSignal } from '../../signals.js';
import { DEFAULT_STATE_DIR, TaskStore } from '../../store/task-store.js';
import type {
  Capabilities, ExecTaskResult, ExitResult, Fingerprint, TaskConfig, TaskDriver, TaskEvent, TaskHandle,
  TaskResourceUsage, TaskStatus,
} from '../contract.js';
import { EventHub } from '../../util/event-hub.js';
import { bounded, createDockerClient, DRIVER_NAME, isConnectionError, type Logger, sleep, statusOf, stderrLogger } from './call.js';
import {
  DEFAULT_CALL_TIMEOUT_MS, DEFAULT_CGROUP_PARENT, DEFAULT_FINGERPRINT_INTERVAL_MS, DEFAULT_PULL_TIMEOUT_MS, type DockerGcConfig,
  type ResolvedGcConfig, resolveGcConfig, validateTaskConfig,
} from './config.js';
import { type DockerDriverState, type DockerTaskHandle, exitResultOf, TaskEntry } from './handle.js';
import { anySignal, ImageCoordinator } from './images.js';
import { DanglingContainerReconciler, LABEL_TASK_ID } from './reconciler.js';

export interface DockerDriverOptions {
  /** `unix:///var/run/docker.sock`, `tcp://host:2375`, ...; default DOCKER_HOST, else the unix socket. */
  endpoint?: string;
  /** A client to use instead of one built from `endpoint` (e.g. a wrapper that counts calls). */
  docker?: Docker;
  /** Allow `privileged: true` in task configs. Default false. */
  allowPrivileged?: boolean;
  /** Bound on an image pull. Default 5 min. */
  pullTimeoutMs?: number;
  /** Bound on every other Docker call. Default 30 s. */
  callTimeoutMs?: number;
  /** This agent's id (label io.corral.agent_id). Default: read from, or generated once into, <stateDir>/agent-id. */
  agentId?: string;
  /** Where handles (and the agent id) persist. Default /var/lib/corral. */
  stateDir?: string;
  /** A TaskStore to use instead of one on stateDir. */
  store?: TaskStore;
  gc?: DockerGcConfig;
  /** How often fingerprint() re-checks Docker (and the health the reconciler relies on). Default 30 s. */
  fingerprintIntervalMs?: number;
  /** On cgroups v2, containers go under this slice. Default corral.slice. */
  cgroupParent?: string;
  logger?: Logger;
  /** Aborting it is the same as shutdown(). */
  signal?: AbortSignal;
}

export interface RecoverAllResult {
  recovered: string[];
  failed: Array<{ taskId: string; error: CorralError | Error }>;
}

const AGENT_ID_FILE = 'agent-id';
const TRANSIENT_START_ERROR = /ttrpc|\bEOF\b|connection reset|broken pipe|transport is closing|temporarily unavailable|context deadline exceeded/i;
const PERMANENT_START_ERROR = /executable file not found|no such file or directory|permission denied|not permitted|invalid argument/i;
const MAX_EXEC_OUTPUT = 16 * 1024 * 1024;

/** Reads <stateDir>/agent-id, or writes a new UUID there (first writer wins). */
export function loadOrCreateAgentId(stateDir: string): string {
  const file = path.join(stateDir, AGENT_ID_FILE);
  const read = (): string | undefined => {
    try {
      const s = fs.readFileSync(file, 'utf8').trim();
      return s === '' ? undefined : s;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  };
  const existing = read();
  if (existing) return existing;
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const id = randomUUID();
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  fs.writeFileSync(tmp, id + '\n', { mode: 0o600 });
  try {
    fs.linkSync(tmp, file); // atomic "create if absent"
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return read() ?? id;
}

export class DockerDriver implements TaskDriver {
  readonly name = DRIVER_NAME;
  readonly agentId: string;
  readonly store: TaskStore;
  readonly docker: Docker;
  readonly gc: ResolvedGcConfig;
  /** The dangling-container reconciler (started at construction when gc.danglingContainers.enabled). */
  readonly reconciler: DanglingContainerReconciler;

  private readonly allowPrivileged: boolean;
  private readonly pullTimeoutMs: number;
  private readonly callTimeoutMs: number;
  private readonly fingerprintIntervalMs: number;
  private readonly cgroupParent: string;
  private readonly logger: Logger;
  private readonly life = new AbortController();
  private readonly images: ImageCoordinator;
  private readonly hub = new EventHub<TaskEvent>();
  private readonly tasks = new Map<string, TaskEntry>();
  private readonly starting = new Set<string>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly outerSignal: AbortSignal | undefined;
  private readonly onOuterAbort = () => { void this.shutdown(); };
  private closed = false;
  private shutdownPromise: Promise<void> | undefined;
  private detected = false;
  private lastFingerprint: Fingerprint = { health: 'undetected', healthDescription: 'not checked yet', attributes: {} };
  private engineInfo: Promise<{ cgroupVersion: string; cgroupDriver: string }> | undefined;

  constructor(opts: DockerDriverOptions = {}) {
    if (opts.allowPrivileged !== undefined && typeof opts.allowPrivileged !== 'boolean') throw new InvalidConfigError('allowPrivileged', opts.allowPrivileged, 'must be true or false');
    // Every call in flight listens on the driver's lifetime signal; many tasks mean many listeners.
    setMaxListeners(0, this.life.signal);
    this.allowPrivileged = opts.allowPrivileged ?? false;
    this.pullTimeoutMs = positive('pullTimeoutMs', opts.pullTimeoutMs, DEFAULT_PULL_TIMEOUT_MS);
    this.callTimeoutMs = positive('callTimeoutMs', opts.callTimeoutMs, DEFAULT_CALL_TIMEOUT_MS);
    this.fingerprintIntervalMs = positive('fingerprintIntervalMs', opts.fingerprintIntervalMs, DEFAULT_FINGERPRINT_INTERVAL_MS);
    if (opts.cgroupParent !== undefined && (typeof opts.cgroupParent !== 'string' || !/^[a-zA-Z0-9_.@-]+$/.test(opts.cgroupParent))) {
      throw new InvalidConfigError('cgroupParent', opts.cgroupParent, 'must be a slice/group name like corral.slice');
    }
    this.cgroupParent = opts.cgroupParent ?? DEFAULT_CGROUP_PARENT;
    this.gc = resolveGcConfig(opts.gc);
    this.logger = opts.logger ?? stderrLogger;
    const stateDir = opts.stateDir ?? opts.store?.dir ?? DEFAULT_STATE_DIR;
    if (!path.isAbsolute(stateDir)) throw new InvalidConfigError('stateDir', stateDir, 'must be an absolute path');
    this.store = opts.store ?? new TaskStore(stateDir);
    if (opts.agentId !== undefined) {
      if (typeof opts.agentId !== 'string' || !/^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,127}$/.test(opts.agentId)) {
        throw new InvalidConfigError('agentId', opts.agentId, 'must be 1-128 characters of [a-zA-Z0-9_.:-]');
      }
      this.agentId = opts.agentId;
    } else {
      this.agentId = loadOrCreateAgentId(stateDir);
    }
    this.docker = opts.docker ?? createDockerClient(opts.endpoint);
    this.images = new ImageCoordinator({
      docker: this.docker, callTimeoutMs: this.callTimeoutMs, pullTimeoutMs: this.pullTimeoutMs, gc: this.gc.image,
      delayMs: this.gc.imageDelayMs, logger: this.logger, signal: this.life.signal,
    });
    // Image references of stored tasks count from the start (Nomad issue 26452): GC must neither
    // remove an image a not-yet-recovered task uses nor forget it once that task is destroyed.
    try {
      for (const h of this.store.list(DRIVER_NAME).handles) {
        const ds = h.driverState as Partial<DockerDriverState>;
        if (typeof ds.image === 'string') this.images.addRef(ds.image, h.taskId);
      }
    } catch (err) {
      this.logger.warn('cannot read the task store', { dir: this.store.dir, error: (err as Error).message });
    }
    const dc = this.gc.danglingContainers;
    this.reconciler = new DanglingContainerReconciler({
      ...dc,
      docker: this.docker,
      agentId: this.agentId,
      trackedContainers: () => this.trackedContainers(),
      isDriverHealthy: () => this.lastFingerprint.health === 'healthy',
      logger: this.logger,
      signal: this.life.signal,
    });
    this.outerSignal = opts.signal;
    if (opts.signal?.aborted) {
      void this.shutdown();
      return;
    }
    opts.signal?.addEventListener('abort', this.onOuterAbort, { once: true });
    if (dc.enabled) {
      this.reconciler.start();
      this.track(this.healthLoop());
    }
  }

  capabilities(): Capabilities {
    return { sendSignals: true, exec: true, fsIsolation: 'image' };
  }

  /** The last health the driver saw (fingerprint, health loop, or a failed call). */
  get health(): Fingerprint {
    return { ...this.lastFingerprint, attributes: { ...this.lastFingerprint.attributes } };
  }

  /** Container IDs of every task this agent tracks: in memory and in the TaskStore. */
  trackedContainers(): Set<string> {
    const ids = new Set<string>();
    for (const e of this.tasks.values()) ids.add(e.containerId);
    try {
      for (const h of this.store.list(DRIVER_NAME).handles) {
        const id = (h.driverState as Partial<DockerDriverState>).containerId;
        if (typeof id === 'string') ids.add(id);
      }
    } catch { /* the in-memory set still holds */ }
    return ids;
  }

  /** Image reference counts (image reference → tasks using it, whether its removal is scheduled). */
  imageUsage(): Map<string, { tasks: string[]; removalScheduled: boolean }> {
    return this.images.usage();
  }

  // ---------------------------------------------------------------- health

  /** One health check now (a bounded `version` call). */
  async checkHealth(signal?: AbortSignal): Promise<Fingerprint> {
    let fp: Fingerprint;
    try {
      const v = await bounded('version', this.callTimeoutMs, anySignal(this.life.signal, signal), (s) => (this.docker.version as unknown as (o: object) => Promise<Docker.DockerVersion>).call(this.docker, { abortSignal: s }));
      this.detected = true;
      fp = {
        health: 'healthy',
        healthDescription: 'healthy',
        attributes: {
          'driver.docker': true,
          'driver.docker.version': String(v.Version),
          'driver.docker.api_version': String(v.ApiVersion),
          'driver.docker.privileged.enabled': this.allowPrivileged,
          'driver.docker.agent_id': this.agentId,
        },
      };
    } catch (err) {
      if (err instanceof AbortError) throw err;
      const reason = (err as Error).message;
      const missing = !this.detected && isConnectionError((err as { cause?: unknown }).cause ?? err)
        && ['ENOENT', 'ECONNREFUSED'].includes(String(((err as { cause?: { code?: string } }).cause ?? err as { code?: string }).code));
      fp = missing
        ? { health: 'undetected', healthDescription: `Docker is not reachable: ${reason}`, attributes: {} }
        : { health: 'unhealthy', healthDescription: `Docker is unhealthy: ${reason}`, attributes: { 'driver.docker': false } };
    }
    if (fp.health !== this.lastFingerprint.health) this.logger.info('docker driver health changed', { health: fp.health, reason: fp.healthDescription });
    this.lastFingerprint = fp;
    return { ...fp, attributes: { ...fp.attributes } };
  }

  async *fingerprint(opts: { signal?: AbortSignal; intervalMs?: number } = {}): AsyncIterable<Fingerprint> {
    const interval = positive('intervalMs', opts.intervalMs, this.fingerprintIntervalMs);
    const signal = anySignal(this.life.signal, opts.signal)!;
    while (!signal.aborted) {
      let fp: Fingerprint;
      try {
        fp = await this.checkHealth(signal);
      } catch (err) {
        if (err instanceof AbortError) return;
        throw err;
      }
      yield fp;
      if (!(await sleep(interval, signal))) return;
    }
  }

  /** Keeps `lastFingerprint` fresh for the reconciler. */
  private async healthLoop(): Promise<void> {
    const signal = this.life.signal;
    while (!signal.aborted) {
      try {
        await this.checkHealth(signal);
      } catch { /* aborted */ }
      if (!(await sleep(this.fingerprintIntervalMs, signal))) return;
    }
  }

  private markUnhealthy(err: unknown): void {
    if (err instanceof DockerTimeoutError || err instanceof DriverUnavailableError) {
      if (this.lastFingerprint.health === 'healthy') this.logger.info('docker driver health changed', { health: 'unhealthy', reason: (err as Error).message });
      this.lastFingerprint = { health: 'unhealthy', healthDescription: `Docker is unhealthy: ${(err as Error).message}`, attributes: { 'driver.docker': false } };
    }
  }

  /** A bounded Docker call on behalf of the driver; connection failures and timeouts mark it unhealthy. */
  private async call<T>(op: string, fn: (signal: AbortSignal) => Promise<T>, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<T> {
    try {
      return await bounded(op, opts.timeoutMs ?? this.callTimeoutMs, anySignal(this.life.signal, opts.signal), fn);
    } catch (err) {
      this.markUnhealthy(err);
      throw err;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new DriverUnavailableError(DRIVER_NAME, 'the driver was shut down');
  }

  private track<T>(p: Promise<T>): Promise<T> {
    const q = p.finally(() => this.background.delete(q));
    q.catch(() => {});
    this.background.add(q);
    return p;
  }

  private entry(taskId: string): TaskEntry {
    const e = this.tasks.get(taskId);
    if (!e) throw new TaskNotFoundError(taskId);
    return e;
  }

  private publish(e: TaskEntry | TaskHandle, type: string, message: string, annotations?: Record<string, string>): void {
    const h = e instanceof TaskEntry ? e.handle : e;
    const ev: TaskEvent = { taskId: h.taskId, allocId: h.allocId, taskName: h.taskName, timestamp: Date.now(), type, message };
    if (annotations) ev.annotations = annotations;
    this.hub.publish(ev);
  }

  private async engine(): Promise<{ cgroupVersion: string; cgroupDriver: string }> {
    if (!this.engineInfo) {
      this.engineInfo = this.call('info', (s) => (this.docker.info as unknown as (o: object) => Promise<{ CgroupVersion?: string; CgroupDriver?: string }>).call(this.docker, { abortSignal: s })).then(
        (i: { CgroupVersion?: string; CgroupDriver?: string }) => ({ cgroupVersion: String(i.CgroupVersion ?? '1'), cgroupDriver: String(i.CgroupDriver ?? 'cgroupfs') }),
      );
      this.engineInfo.catch(() => { this.engineInfo = undefined; });
    }
    return this.engineInfo;
  }

  // ---------------------------------------------------------------- start

  async startTask(cfg: TaskConfig): Promise<TaskHandle> {
    this.assertOpen();
    const spec = validateTaskConfig(cfg, { allowPrivileged: this.allowPrivileged, agentId: this.agentId });
    if (this.tasks.has(cfg.id) || this.starting.has(cfg.id)) throw new TaskExistsError(cfg.id);
    this.starting.add(cfg.id);
    try {
      return await this.doStart(cfg, spec);
    } finally {
      this.starting.delete(cfg.id);
    }
  }

  private async doStart(cfg: TaskConfig, spec: ReturnType<typeof validateTaskConfig>): Promise<TaskHandle> {
    const meta = { taskId: cfg.id, allocId: cfg.allocId, taskName: cfg.name };
    const pull = (forcePull: boolean) => this.images.ensure(spec.image, {
      forcePull,
      signal: this.life.signal,
      onProgress: (p) => this.hub.publish({
        ...meta, timestamp: Date.now(), type: 'image-pull',
        message: `${spec.image}: ${p.status}${p.id ? ` ${p.id}` : ''}${p.progress ? ` ${p.progress}` : ''}`,
        annotations: { image: spec.image, status: p.status },
      }),
    });
    // Counted before anything else, so that image GC cannot remove it under a start in progress.
    this.images.addRef(spec.image, cfg.id);
    let containerId: string | undefined;
    try {
      // A local image is used as it is: create straight away (as `docker run` does) and pull only
      // when Docker says the image is missing, or first when forcePull asks for it.
      let imageId = spec.forcePull ? await pull(true) : undefined;
      const eng = await this.engine();
      const create = structuredClone(spec.createOptions);
      if (cfg.taskDir) addTaskDirMounts(cfg.taskDir, create);
      if (eng.cgroupVersion === '2') {
        create.HostConfig.CgroupParent = eng.cgroupDriver === 'systemd' ? this.cgroupParent : `/${this.cgroupParent}`;
      }
      containerId = await this.createContainer(cfg.id, spec.containerName, create, async () => {
        imageId = await pull(false);
      });
      await this.startContainer(containerId);
      const startedAt = new Date().toISOString();
      const driverState: DockerDriverState = { containerId, containerName: spec.containerName, image: spec.image, agentId: this.agentId };
      if (imageId) driverState.imageId = imageId;
      const handle: DockerTaskHandle = {
        version: 1, driver: DRIVER_NAME, taskId: cfg.id, allocId: cfg.allocId, taskName: cfg.name, startedAt,
        config: structuredClone(cfg) as TaskConfig, driverState: driverState as DockerDriverState & Record<string, unknown>,
      };
      this.store.put(handle as TaskHandle);
      if (this.closed) throw new DriverUnavailableError(DRIVER_NAME, 'the driver was shut down during startTask');
      const e = new TaskEntry(handle, startedAt);
      this.tasks.set(cfg.id, e);
      this.watch(e);
      this.followLogs(e, 0);
      this.publish(e, 'started', `container ${spec.containerName} (${containerId.slice(0, 12)}) started from ${spec.image}`,
        { containerId, image: spec.image });
      return structuredClone(handle) as TaskHandle;
    } catch (err) {
      // Undo: remove the container, forget the handle and the image reference.
      if (containerId) {
        try {
          await bounded('remove container', this.callTimeoutMs, undefined, (s) => this.docker.getContainer(containerId!).remove({ force: true, v: true, abortSignal: s }));
        } catch (rmErr) {
          if (statusOf(rmErr) !== 404) this.logger.warn('could not remove the container of a failed start', { containerId, error: (rmErr as Error).message });
        }
        try { this.store.delete(cfg.id); } catch { /* best effort */ }
      }
      this.tasks.delete(cfg.id);
      this.images.release(spec.image, cfg.id);
      throw err;
    }
  }

  /**
   * Starts a created container. As in Nomad, a daemon-side failure that looks transient (the shim or
   * containerd connection dropping under load: "ttrpc: closed", "EOF", ...) is retried a few times.
   */
  private async startContainer(containerId: string): Promise<void> {
    const container = this.docker.getContainer(containerId);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.call('start container', (s) => container.start({ abortSignal: s } as object));
        return;
      } catch (err) {
        const st = statusOf(err);
        if (st === 304) return; // already started
        const transient = st === 500 && TRANSIENT_START_ERROR.test((err as Error).message) && !PERMANENT_START_ERROR.test((err as Error).message);
        if (!transient || attempt >= 4 || this.closed) throw err;
        this.logger.info('transient error starting a container; retrying', { containerId, attempt, error: (err as Error).message });
        if (!(await sleep(100 * 2 ** attempt, this.life.signal))) throw err;
      }
    }
  }

  /** Creates the container; a stopped leftover of the same task with the same name is replaced. */
  private async createContainer(taskId: string, name: string, create: Docker.ContainerCreateOptions, onMissingImage: () => Promise<void>): Promise<string> {
    let pulled = false;
    for (let attempt = 0; ; attempt++) {
      try {
        const c = await this.call('create container', (s) => this.docker.createContainer({ ...create, name, abortSignal: s } as Docker.ContainerCreateOptions));
        return c.id;
      } catch (err) {
        if (statusOf(err) === 404 && /no such image/i.test((err as Error).message) && !pulled) {
          pulled = true;
          await onMissingImage();
          continue;
        }
        if (statusOf(err) !== 409 || attempt > 1) throw err;
        let old: Docker.ContainerInspectInfo;
        try {
          old = await this.call('inspect container', (s) => this.docker.getContainer(name).inspect({ abortSignal: s } as object));
        } catch {
          throw err;
        }
        if (old.Config.Labels?.[LABEL_TASK_ID] !== taskId || old.State.Running) {
          throw new DockerError('create container', `a container named ${name} already exists (${old.Id.slice(0, 12)}, ${old.State.Status})`, 409);
        }
        this.logger.info('replacing a stopped container left by an earlier start', { name, containerId: old.Id });
        await this.call('remove container', (s) => this.docker.getContainer(old.Id).remove({ force: true, v: true, abortSignal: s }));
      }
    }
  }

  /** Starts the one exit watch of a task; every waiter shares its result. */
  private watch(e: TaskEntry): void {
    e.exit = this.watchExit(e).then((r) => {
      if (e.state !== 'exited') {
        e.markExited(r.result, r.finishedAt);
        this.publish(e, 'exited', `exit code ${r.result.exitCode}${r.result.signal ? `, signal ${r.result.signal}` : ''}${r.result.oomKilled ? ', OOM killed' : ''}`,
          { exitCode: String(r.result.exitCode), oomKilled: String(r.result.oomKilled) });
      }
      return e.exitResult!;
    });
    this.track(e.exit);
  }

  private async watchExit(e: TaskEntry): Promise<{ result: ExitResult; finishedAt?: string }> {
    const signal = anySignal(this.life.signal, e.watchCtl.signal)!;
    const container = this.docker.getContainer(e.containerId);
    for (;;) {
      if (signal.aborted) throw new AbortError('wait');
      try {
        // Long poll, not bounded: it is meant to last as long as the task. Ends with the driver.
        await bounded('wait container', 2 ** 31 - 1, signal, (s) => container.wait({ condition: 'not-running', abortSignal: s } as object));
        break;
      } catch (err) {
        if (signal.aborted || err instanceof AbortError) throw new AbortError('wait');
        if (statusOf(err) === 404) return { result: { exitCode: null, signal: null, oomKilled: false, err: 'the container was removed' } };
        this.markUnhealthy(err);
        // Daemon restarting or connection lost: look again shortly.
        if (!(await sleep(1000, signal))) throw new AbortError('wait');
      }
    }
    for (let i = 0; ; i++) {
      try {
        const info = await this.call('inspect container', (s) => container.inspect({ abortSignal: s } as object), { signal });
        if (info.State.Running && i < 50) {
          if (!(await sleep(100, signal))) throw new AbortError('wait');
          continue;
        }
        let last = info;
        // SIGKILL that corral did not send: the OOM event may reach dockerd just after the exit
        // event, and it marks the state later. Look again briefly before reporting.
        for (let j = 0; j < 3 && last.State.ExitCode === 137 && !last.State.OOMKilled && e.lastSignal !== 9; j++) {
          if (!(await sleep(150, signal))) throw new AbortError('wait');
          last = await this.call('inspect container', (s) => container.inspect({ abortSignal: s } as object), { signal });
        }
        if (!e.handle.driverState.imageId && last.Image) e.handle.driverState.imageId = last.Image;
        return { result: exitResultOf(last, e.lastSignal), finishedAt: last.State.FinishedAt };
      } catch (err) {
        if (signal.aborted || err instanceof AbortError) throw new AbortError('wait');
        if (statusOf(err) === 404) return { result: { exitCode: null, signal: null, oomKilled: false, err: 'the container was removed before its exit could be read' } };
        if (!(await sleep(1000, signal))) throw new AbortError('wait');
      }
    }
  }

  /** Copies the container's output to stdoutPath/stderrPath (when set) until it stops. */
  private followLogs(e: TaskEntry, sinceSec: number): void {
    const { stdoutPath, stderrPath } = e.cfg;
    if (!stdoutPath && !stderrPath) return;
    const signal = anySignal(this.life.signal, e.watchCtl.signal)!;
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
    e.logs = this.track((async () => {
      try {
        const stream = await this.call('container logs', (s) => this.docker.getContainer(e.containerId).logs({
          follow: true, stdout: true, stderr: true, since: sinceSec, abortSignal: s,
        } as Docker.ContainerLogsOptions & { follow: true }), { signal }) as unknown as NodeJS.ReadableStream & { destroy(): void };
        await new Promise<void>((resolve) => {
          const onAbort = () => { stream.destroy(); resolve(); };
          signal.addEventListener('abort', onAbort, { once: true });
          this.docker.modem.demuxStream(stream, out, err);
          const end = () => { signal.removeEventListener('abort', onAbort); resolve(); };
          stream.on('end', end);
          stream.on('close', end);
          stream.on('error', end);
        });
      } catch (error) {
        if (!signal.aborted) this.logger.warn('cannot follow container logs', { taskId: e.taskId, error: (error as Error).message });
      } finally {
        await closeAll();
      }
    })());
  }

  // ---------------------------------------------------------------- wait / stop / destroy

  async waitTask(taskId: string, opts: { signal?: AbortSignal } = {}): Promise<ExitResult> {
    const e = this.entry(taskId);
    if (e.exitResult) return { ...e.exitResult };
    const signal = opts.signal;
    if (signal?.aborted) throw new AbortError('waitTask');
    if (!signal) return { ...(await e.exit) };
    return new Promise<ExitResult>((resolve, reject) => {
      const onAbort = () => reject(new AbortError('waitTask'));
      signal.addEventListener('abort', onAbort, { once: true });
      e.exit.then(
        (r) => { signal.removeEventListener('abort', onAbort); resolve({ ...r }); },
        (err) => { signal.removeEventListener('abort', onAbort); reject(err); },
      );
    });
  }

  /** Resolves true when the task exits within `ms`, false otherwise. No timer is left. */
  private async exitWithin(e: TaskEntry, ms: number): Promise<boolean> {
    if (e.state === 'exited') return true;
    const ac = new AbortController();
    const timedOut = sleep(ms, ac.signal).then((t) => t);
    const exited = e.exit.then(() => true, () => true);
    const r = await Promise.race([exited.then(() => 'exit' as const), timedOut.then((t) => (t ? 'timeout' as const : 'exit' as const))]);
    ac.abort();
    return r === 'exit';
  }

  async stopTask(taskId: string, opts: { timeoutMs?: number; signal?: string } = {}): Promise<void> {
    this.assertOpen();
    const e = this.entry(taskId);
    const timeoutMs = opts.timeoutMs ?? 5000;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) throw new InvalidConfigError('timeoutMs', opts.timeoutMs, 'must be a number of milliseconds ≥ 0');
    const sig = parseSignal(opts.signal ?? 'SIGTERM', 'signal');
    if (e.state === 'exited') return;
    const container = this.docker.getContainer(e.containerId);
    const kill = async (name: string, num: number) => {
      e.lastSignal = num;
      try {
        await this.call('kill container', (s) => container.kill({ signal: name, abortSignal: s }));
      } catch (err) {
        const st = statusOf(err);
        if (st === 409 || st === 404) return; // not running / gone: the exit watch reports it
        throw err;
      }
    };
    this.publish(e, 'killing', `sending ${sig.name}, then SIGKILL after ${timeoutMs} ms`, { signal: sig.name });
    await kill(sig.name, sig.number);
    if (!(await this.exitWithin(e, timeoutMs))) {
      await kill('SIGKILL', 9);
      this.publish(e, 'killed', `did not exit within ${timeoutMs} ms of ${sig.name}: sent SIGKILL`, { signal: 'SIGKILL' });
    }
    if (!(await this.exitWithin(e, this.callTimeoutMs))) {
      throw new DockerTimeoutError('stop container (waiting for the exit)', this.callTimeoutMs);
    }
  }

  async destroyTask(taskId: string, opts: { force?: boolean } = {}): Promise<void> {
    this.assertOpen();
    const e = this.entry(taskId);
    const container = this.docker.getContainer(e.containerId);
    if (e.state !== 'exited') {
      // The in-memory state may lag an exit that just happened: ask Docker.
      let running = true;
      try {
        const info = await this.call('inspect container', (s) => container.inspect({ abortSignal: s } as object));
        running = info.State.Running || info.State.Restarting;
      } catch (err) {
        if (statusOf(err) === 404) running = false;
        else if (!opts.force) throw err;
      }
      if (running && !opts.force) throw new TaskRunningError(taskId);
    }
    try {
      if (this.gc.container) {
        await this.call('remove container', (s) => container.remove({ force: true, v: true, abortSignal: s }));
      } else if (e.state !== 'exited') {
        e.lastSignal = 9;
        await this.call('kill container', (s) => container.kill({ signal: 'SIGKILL', abortSignal: s }));
      }
    } catch (err) {
      const st = statusOf(err);
      if (st !== 404 && st !== 409) throw err;
    }
    // Let the watch see the end (a forced removal ends the wait), then stop it.
    await this.exitWithin(e, Math.min(this.callTimeoutMs, 5000));
    e.watchCtl.abort();
    if (e.logs) await e.logs;
    this.tasks.delete(taskId);
    this.store.delete(taskId);
    this.images.release(e.handle.driverState.image, taskId);
    this.publish(e, 'destroyed', `container ${e.handle.driverState.containerName} ${this.gc.container ? 'removed' : 'left in place (gc.container is off)'}`);
  }

  async signalTask(taskId: string, signal: string): Promise<void> {
    this.assertOpen();
    const e = this.entry(taskId);
    const sig = parseSignal(signal, 'signal');
    if (e.state === 'exited') throw new DockerError('signal container', `task ${taskId} has exited`, 409);
    e.lastSignal = sig.number;
    await this.call('kill container', (s) => this.docker.getContainer(e.containerId).kill({ signal: sig.name, abortSignal: s }));
    this.publish(e, 'signaled', `sent ${sig.name}`, { signal: sig.name });
  }

  // ---------------------------------------------------------------- exec

  async execTask(taskId: string, cmd: string[], opts: { timeoutMs?: number } = {}): Promise<ExecTaskResult> {
    this.assertOpen();
    const e = this.entry(taskId);
    if (!Array.isArray(cmd) || cmd.length === 0 || cmd.some((c) => typeof c !== 'string' || c.includes('\0'))) {
      throw new InvalidConfigError('cmd', cmd, 'must be a non-empty array of strings');
    }
    const timeoutMs = opts.timeoutMs ?? 60_000;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new InvalidConfigError('timeoutMs', opts.timeoutMs, 'must be a positive number of milliseconds');
    if (e.state === 'exited') throw new DockerError('exec', `task ${taskId} has exited`, 409);
    const container = this.docker.getContainer(e.containerId);
    const exec = await this.call('create exec', (s) => container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, abortSignal: s } as Docker.ExecCreateOptions));
    const ac = new AbortController();
    const signal = anySignal(this.life.signal, ac.signal)!;
    const stream = await this.call('start exec', (s) => exec.start({ hijack: true, stdin: false, abortSignal: s } as Docker.ExecStartOptions), { signal }) as unknown as NodeJS.ReadableStream & { destroy(): void };
    const collect = () => {
      const chunks: Buffer[] = [];
      let size = 0;
      const pt = new PassThrough();
      pt.on('data', (c: Buffer) => { if (size < MAX_EXEC_OUTPUT) { chunks.push(c); size += c.length; } });
      return { pt, text: () => Buffer.concat(chunks).subarray(0, MAX_EXEC_OUTPUT).toString('utf8') };
    };
    const out = collect();
    const err = collect();
    this.docker.modem.demuxStream(stream, out.pt, err.pt);
    const ended = new Promise<void>((resolve) => {
      stream.on('end', () => resolve());
      stream.on('close', () => resolve());
      stream.on('error', () => resolve());
    });
    const finished = await Promise.race([ended.then(() => true), sleep(timeoutMs, ac.signal).then(() => false)]);
    if (!finished || this.life.signal.aborted) {
      ac.abort();
      stream.destroy();
      // Docker has no "kill exec": kill its process on the host (same machine as dockerd), best effort.
      // Under load the exec may not have begun yet: look until it runs or has ended.
      for (let i = 0; i < 30; i++) {
        try {
          const info = await this.call('inspect exec', (s) => exec.inspect({ abortSignal: s } as object));
          if (info.Running && info.Pid > 0) {
            killTree(info.Pid);
            break;
          }
          if (info.ExitCode !== null && info.ExitCode !== undefined) break;
        } catch {
          break; // gone already, or a daemon we cannot reach
        }
        if (!(await sleep(100, this.life.signal))) break;
      }
      if (this.life.signal.aborted) throw new AbortError('execTask');
      throw new ExecTimeoutError(cmd, timeoutMs);
    }
    ac.abort(); // clears the timer of the race
    let info: Docker.ExecInspectInfo | undefined;
    for (let i = 0; i < 20; i++) {
      info = await this.call('inspect exec', (s) => exec.inspect({ abortSignal: s } as object));
      if (!info.Running) break;
      await sleep(50);
    }
    const code = info?.ExitCode ?? null;
    return {
      stdout: out.text(),
      stderr: err.text(),
      exitResult: { exitCode: code, signal: null, oomKilled: false },
    };
  }

  // ---------------------------------------------------------------- stats / events / inspect

  async *taskStats(taskId: string, opts: { intervalMs: number; signal?: AbortSignal }): AsyncIterable<TaskResourceUsage> {
    const e = this.entry(taskId);
    const intervalMs = opts?.intervalMs;
    if (typeof intervalMs !== 'number' || !Number.isFinite(intervalMs) || intervalMs <= 0) throw new InvalidConfigError('intervalMs', intervalMs, 'must be a positive number of milliseconds');
    this.assertOpen();
    if (opts.signal?.aborted || e.state === 'exited') return;
    const ac = new AbortController();
    const stop = () => ac.abort();
    const signal = anySignal(this.life.signal, opts.signal, e.watchCtl.signal);
    signal?.addEventListener('abort', stop, { once: true });
    void e.exit?.then(stop, stop);
    let stream: (NodeJS.ReadableStream & { destroy(): void }) | undefined;
    try {
      try {
        stream = await this.call('stats', () => this.docker.getContainer(e.containerId).stats({ stream: true, abortSignal: ac.signal } as object) as unknown as Promise<NodeJS.ReadableStream & { destroy(): void }>, { signal: ac.signal });
      } catch (err) {
        if (ac.signal.aborted) return;
        throw err;
      }
      if (ac.signal.aborted) return;
      const s = stream;
      ac.signal.addEventListener('abort', () => s.destroy(), { once: true });
      let buf = '';
      let lastEmit = 0;
      let prev: { t: number; total: number } | undefined;
      try {
        for await (const chunk of s as AsyncIterable<Buffer | string>) {
          buf += chunk.toString();
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            let raw: DockerStats;
            try { raw = JSON.parse(line) as DockerStats; } catch { continue; }
            const u = mapStats(taskId, raw, prev);
            if (!u) continue;
            prev = { t: u.timestamp, total: u.cpu.totalNs };
            if (lastEmit !== 0 && u.timestamp - lastEmit < intervalMs - 50) continue;
            lastEmit = u.timestamp;
            yield u;
            if (ac.signal.aborted) return;
          }
        }
      } catch (err) {
        if (ac.signal.aborted) return;
        throw err;
      }
    } finally {
      ac.abort();
      signal?.removeEventListener('abort', stop);
      stream?.destroy();
    }
  }

  taskEvents(opts: { signal?: AbortSignal } = {}): AsyncIterable<TaskEvent> {
    return this.hub.subscribe(opts);
  }

  inspectTask(taskId: string): TaskStatus {
    return this.entry(taskId).status();
  }

  /** IDs of the tasks this driver holds. */
  listTasks(): string[] {
    return [...this.tasks.keys()];
  }

  // ---------------------------------------------------------------- recovery

  async recoverTask(handle: TaskHandle): Promise<void> {
    this.assertOpen();
    if (typeof handle !== 'object' || handle === null) throw new InvalidConfigError('handle', handle, 'must be a task handle');
    if (handle.driver !== DRIVER_NAME) throw new InvalidConfigError('handle.driver', handle.driver, `is not ${DRIVER_NAME}`);
    const ds = handle.driverState as Partial<DockerDriverState>;
    if (typeof ds?.containerId !== 'string' || !/^[0-9a-f]{12,64}$/.test(ds.containerId)) {
      throw new InvalidConfigError('handle.driverState.containerId', ds?.containerId, 'must be a container ID');
    }
    if (this.tasks.has(handle.taskId)) return;
    const container = this.docker.getContainer(ds.containerId);
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.call('inspect container', (s) => container.inspect({ abortSignal: s } as object));
    } catch (err) {
      if (statusOf(err) === 404) {
        // Gone while the agent was away: forget it, and let image GC know.
        this.store.delete(handle.taskId);
        if (typeof ds.image === 'string') this.images.release(ds.image, handle.taskId);
        this.publish(handle, 'lost', `container ${ds.containerId.slice(0, 12)} no longer exists`);
        throw new DockerError('recover task', `container ${ds.containerId.slice(0, 12)} of task ${handle.taskId} no longer exists`, 404, { cause: err });
      }
      throw err;
    }
    const owner = info.Config.Labels?.[LABEL_TASK_ID];
    if (owner !== undefined && owner !== handle.taskId) {
      throw new InvalidConfigError('handle.driverState.containerId', ds.containerId, `the container belongs to task ${JSON.stringify(owner)}`);
    }
    if (this.tasks.has(handle.taskId)) return;
    const full: DockerDriverState = {
      containerId: info.Id,
      containerName: ds.containerName ?? info.Name.replace(/^\//, ''),
      image: ds.image ?? info.Config.Image,
      imageId: ds.imageId ?? info.Image,
      agentId: ds.agentId ?? info.Config.Labels?.['io.corral.agent_id'] ?? this.agentId,
    };
    const h: DockerTaskHandle = { ...(handle as DockerTaskHandle), driverState: { ...handle.driverState, ...full } };
    const e = new TaskEntry(h, handle.startedAt);
    this.images.addRef(full.image, handle.taskId);
    this.tasks.set(handle.taskId, e);
    try {
      this.store.put(h as TaskHandle);
    } catch (err) {
      this.logger.warn('cannot persist a recovered handle', { taskId: handle.taskId, error: (err as Error).message });
    }
    if (info.State.Running || info.State.Restarting || info.State.Paused) {
      this.watch(e);
      this.followLogs(e, Math.floor(Date.now() / 1000));
      this.publish(e, 'recovered', `reattached to running container ${full.containerName} (${info.Id.slice(0, 12)})`, { containerId: info.Id });
    } else {
      e.markExited(exitResultOf(info, undefined), info.State.FinishedAt);
      e.exit = Promise.resolve(e.exitResult!);
      this.publish(e, 'recovered', `container ${full.containerName} exited while the agent was away (exit code ${info.State.ExitCode})`, { containerId: info.Id });
    }
  }

  /** Recovers every docker task in the TaskStore; failures are returned, not thrown. */
  async recoverAll(): Promise<RecoverAllResult> {
    this.assertOpen();
    const res: RecoverAllResult = { recovered: [], failed: [] };
    for (const h of this.store.list(DRIVER_NAME).handles) {
      try {
        await this.recoverTask(h);
        res.recovered.push(h.taskId);
      } catch (err) {
        res.failed.push({ taskId: h.taskId, error: err as Error });
      }
    }
    return res;
  }

  // ---------------------------------------------------------------- shutdown

  /** Ends every loop, stream and timer of the driver. Containers keep running. Idempotent. */
  shutdown(): Promise<void> {
    if (!this.shutdownPromise) {
      this.closed = true;
      this.shutdownPromise = (async () => {
        this.outerSignal?.removeEventListener('abort', this.onOuterAbort);
        this.life.abort();
        this.reconciler.stop();
        this.hub.close();
        await this.images.close();
        await Promise.allSettled([...this.background]);
      })();
    }
    return this.shutdownPromise;
  }
}

/**
 * Nomad's task directory layout inside the container: <taskDir>/alloc → /alloc, <taskDir>/local →
 * /local, <taskDir>/secrets → /secrets (created when missing), unless a volume already targets them.
 */
function addTaskDirMounts(taskDir: string, create: { HostConfig: { Binds?: string[] } }): void {
  const binds = create.HostConfig.Binds ?? [];
  const taken = new Set(binds.map((b) => path.posix.normalize(b.split(':')[1] ?? '').replace(/(.)\/+$/, '$1')));
  for (const sub of ['alloc', 'local', 'secrets']) {
    if (taken.has(`/${sub}`)) continue;
    const host = path.join(taskDir, sub);
    fs.mkdirSync(host, { recursive: true, mode: sub === 'secrets' ? 0o700 : 0o755 });
    binds.push(`${host}:/${sub}`);
  }
  create.HostConfig.Binds = binds;
}

/** SIGKILL a process and its descendants (children first found through /proc). Best effort. */
function killTree(pid: number): void {
  const all: number[] = [];
  const visit = (p: number, depth: number) => {
    all.push(p);
    if (depth > 32) return;
    let tids: string[] = [];
    try { tids = fs.readdirSync(`/proc/${p}/task`); } catch { return; }
    for (const tid of tids) {
      let kids = '';
      try { kids = fs.readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8'); } catch { continue; }
      for (const k of kids.trim().split(/\s+/)) if (k) visit(Number(k), depth + 1);
    }
  };
  visit(pid, 0);
  for (const p of all) {
    try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
  }
}

function positive(field: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidConfigError(field, v, 'must be a positive number of milliseconds');
  return v;
}

interface DockerStats {
  read?: string;
  preread?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number; usage_in_usermode?: number; usage_in_kernelmode?: number }; system_cpu_usage?: number; online_cpus?: number; throttling_data?: { throttled_time?: number } };
  precpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: { usage?: number; max_usage?: number; stats?: Record<string, number> };
}

/** Docker's stats JSON → TaskResourceUsage; undefined for an empty sample (container not running). */
export function mapStats(taskId: string, s: DockerStats, prev: { t: number; total: number } | undefined): TaskResourceUsage | undefined {
  const t = Date.parse(s.read ?? '');
  if (!Number.isFinite(t) || (s.read ?? '').startsWith('0001-')) return undefined;
  const cu = s.cpu_stats?.cpu_usage ?? {};
  const total = cu.total_usage ?? 0;
  let percent = 0;
  if (prev && t > prev.t) {
    percent = ((total - prev.total) / ((t - prev.t) * 1e6)) * 100;
  } else {
    const pt = Date.parse(s.preread ?? '');
    const ptotal = s.precpu_stats?.cpu_usage?.total_usage;
    if (Number.isFinite(pt) && !(s.preread ?? '').startsWith('0001-') && t > pt && ptotal !== undefined) {
      percent = ((total - ptotal) / ((t - pt) * 1e6)) * 100;
    }
  }
  const ms = s.memory_stats ?? {};
  const st = ms.stats ?? {};
  const v2 = st.anon !== undefined && st.rss === undefined;
  const usage: TaskResourceUsage = {
    taskId,
    timestamp: t,
    cpu: {
      userNs: cu.usage_in_usermode ?? 0,
      systemNs: cu.usage_in_kernelmode ?? 0,
      totalNs: total,
      percent: Math.max(0, Math.round(percent * 100) / 100),
      throttledNs: s.cpu_stats?.throttling_data?.throttled_time ?? 0,
    },
    memory: {
      usageBytes: ms.usage ?? 0,
      rssBytes: st.rss ?? st.anon ?? 0,
      cacheBytes: st.cache ?? st.file ?? 0,
      maxUsageBytes: ms.max_usage ?? 0,
    },
    source: 'docker',
  };
  if (v2 || ms.max_usage === undefined) usage.unavailable = { 'memory.maxUsageBytes': 'Docker does not report max usage on cgroups v2' };
  return usage;
}
