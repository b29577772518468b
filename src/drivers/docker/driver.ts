/**
 * DockerDriver: the TaskDriver contract on a Docker Engine (Nomad's docker driver). DriverCore holds
 * what every driver shares; this file holds docker's hooks and wires its parts: client.ts (bounded
 * calls), fingerprint.ts (health), start.ts (create/start), task.ts (exit watch, logs), exec.ts,
 * stats.ts, images.ts (pulls and image GC), reconcile_dangling.ts (containers nobody tracks).
 *
 * Every Docker call is bounded (callTimeoutMs; pulls by pullTimeoutMs); the long ones (exit watch,
 * stats and log streams) end when the driver shuts down. Running containers keep running across
 * shutdown; a new driver (even in a new process) finds them again through the TaskStore.
 */
import * as path from 'node:path';
import type { CgroupManager, TaskCgroup } from '../../cgroups/types.js';
import { DockerError, DockerTimeoutError, InvalidConfigError } from '../../errors.js';
import { DEFAULT_STATE_DIR, TaskStore } from '../../store/task-store.js';
import { anySignal } from '../../util/abort.js';
import { loadOrCreateAgentId } from '../../util/agent-id.js';
import { type Logger, stderrLogger } from '../../util/logger.js';
import { optBool, optMs } from '../../util/validate.js';
import type { Capabilities, ExecTaskResult, Fingerprint, TaskConfig, TaskHandle, TaskResourceUsage } from '../contract.js';
import { type CoreOptions, DriverCore } from '../core/driver.js';
import { type DockerApi, DRIVER_NAME, bounded, createDockerClient, statusOf } from './client.js';
import {
  DEFAULT_CALL_TIMEOUT_MS, DEFAULT_CGROUP_PARENT, DEFAULT_PULL_TIMEOUT_MS, type DockerGcConfig, type DockerTaskDriverConfig, type DockerTaskSpec,
  type ResolvedGcConfig, hostUsableCores, resolveGcConfig, validateTaskConfig,
} from './config.js';
import type { DockerContext } from './context.js';
import { DockerCpusets } from './cpusets.js';
import { execInContainer } from './exec.js';
import { DockerHealth } from './fingerprint.js';
import { ImageCoordinator } from './images.js';
import { DanglingContainerReconciler, LABEL_AGENT_ID, LABEL_TASK_ID } from './reconcile_dangling.js';
import { addTaskDirMounts, createContainer, startContainer } from './start.js';
import { containerStats } from './stats.js';
import { StdinAttachment, withoutStdin } from './stdin.js';
import { type DockerDriverState, type DockerTaskHandle, DockerTask, exitResultOf, followLogs, watchExit } from './task.js';

export interface DockerDriverOptions extends CoreOptions {
  /** `unix:///var/run/docker.sock`, `tcp://host:2375`, ...; default DOCKER_HOST, else the unix socket. */
  endpoint?: string;
  /** A client to use instead of one built from `endpoint` (a dockerode instance, or a wrapper that counts calls). */
  docker?: DockerApi;
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
  /**
   * corral's cgroup parent, shared with raw_exec's partition (v1: without `.slice`). On cgroups v2,
   * containers go under its share.slice or reserve.slice. Default corral.slice.
   */
  cgroupParent?: string;
  /**
   * The manager whose cpuset partition holds the containers' reserved cores (tests inject one); null:
   * none (cores become CpusetCpus unchecked). Default: the host's, opened on first need, unless the
   * engine is remote (a tcp/http endpoint), whose cgroups are not this host's.
   */
  cgroupManager?: CgroupManager | null;
  logger?: Logger;
}

type Sig = { name: NodeJS.Signals; number: number };

export class DockerDriver extends DriverCore<DockerTask, DockerTaskDriverConfig> {
  readonly agentId: string;
  readonly docker: DockerApi;
  readonly gc: ResolvedGcConfig;
  /** The dangling-container reconciler (started at construction when gc.danglingContainers.enabled). */
  readonly reconciler: DanglingContainerReconciler;

  private readonly allowPrivileged: boolean;
  private readonly callTimeoutMs: number;
  private readonly cpusets: DockerCpusets;
  private readonly logger: Logger;
  private readonly images: ImageCoordinator;
  private readonly healthState: DockerHealth;
  private readonly ctx: DockerContext;
  private readonly background = new Set<Promise<unknown>>();
  private engineInfo: Promise<{ cgroupVersion: string; cgroupDriver: string }> | undefined;
  private usableCores: number[] | undefined;

  constructor(opts: DockerDriverOptions = {}) {
    const stateDir = opts.stateDir ?? opts.store?.dir ?? DEFAULT_STATE_DIR;
    if (!path.isAbsolute(stateDir)) throw new InvalidConfigError('stateDir', stateDir, 'must be an absolute path');
    const allowPrivileged = optBool('allowPrivileged', opts.allowPrivileged, false);
    const pullTimeoutMs = optMs('pullTimeoutMs', opts.pullTimeoutMs, DEFAULT_PULL_TIMEOUT_MS, 1);
    const callTimeoutMs = optMs('callTimeoutMs', opts.callTimeoutMs, DEFAULT_CALL_TIMEOUT_MS, 1);
    if (opts.cgroupParent !== undefined && (typeof opts.cgroupParent !== 'string' || !/^[a-zA-Z0-9_.@-]+$/.test(opts.cgroupParent))) {
      throw new InvalidConfigError('cgroupParent', opts.cgroupParent, 'must be a slice/group name like corral.slice');
    }
    const gc = resolveGcConfig(opts.gc);
    if (opts.agentId !== undefined && (typeof opts.agentId !== 'string' || !/^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,127}$/.test(opts.agentId))) {
      throw new InvalidConfigError('agentId', opts.agentId, 'must be 1-128 characters of [a-zA-Z0-9_.:-]');
    }
    const docker = opts.docker ?? createDockerClient(opts.endpoint);
    super(DRIVER_NAME, opts.store ?? new TaskStore(stateDir), opts);
    this.allowPrivileged = allowPrivileged;
    this.callTimeoutMs = callTimeoutMs;
    this.gc = gc;
    this.logger = opts.logger ?? stderrLogger;
    const ep = opts.endpoint ?? process.env.DOCKER_HOST ?? '';
    const remote = opts.docker === undefined && /^(tcp|https?|ssh):/.test(ep);
    this.cpusets = new DockerCpusets(opts.cgroupParent ?? DEFAULT_CGROUP_PARENT, opts.cgroupManager !== undefined ? opts.cgroupManager : remote ? null : undefined, this.logger);
    this.agentId = opts.agentId ?? loadOrCreateAgentId(stateDir);
    this.docker = docker;
    this.healthState = new DockerHealth({
      docker, callTimeoutMs, allowPrivileged, agentId: this.agentId, logger: this.logger, life: this.lifeSignal,
    });
    const health = this.healthState;
    const life = this.lifeSignal;
    const background = this.background;
    this.ctx = {
      docker, logger: this.logger, callTimeoutMs, life,
      async call(op, fn, o = {}) {
        try {
          return await bounded(op, o.timeoutMs ?? callTimeoutMs, anySignal(life, o.signal), fn);
        } catch (err) {
          health.markUnhealthy(err);
          throw err;
        }
      },
      markUnhealthy: (err) => health.markUnhealthy(err),
      track<T>(p: Promise<T>): Promise<T> {
        const q = p.finally(() => background.delete(q));
        q.catch(() => {});
        background.add(q);
        return p;
      },
    };
    this.images = new ImageCoordinator({
      docker, callTimeoutMs, pullTimeoutMs, gc: gc.image, delayMs: gc.imageDelayMs, logger: this.logger, signal: life,
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
    const dc = gc.danglingContainers;
    this.reconciler = new DanglingContainerReconciler({
      ...dc,
      docker,
      agentId: this.agentId,
      trackedContainers: () => this.trackedContainers(),
      isDriverHealthy: () => health.healthy,
      logger: this.logger,
      signal: life,
    });
    if (this.reconciler.enabled && !this.closed) {
      this.reconciler.start();
      this.ctx.track(health.loop(this.defaults.fingerprintIntervalMs));
    }
    this.listen();
  }

  capabilities(): Capabilities {
    return { sendSignals: true, exec: true, fsIsolation: 'image', exitStatusAfterRecovery: true, noCgroups: false };
  }

  /** The last health the driver saw (fingerprint, health loop, or a failed call). */
  get health(): Fingerprint {
    return this.healthState.current;
  }

  /** One health check now (a bounded `version` call). */
  checkHealth(signal?: AbortSignal): Promise<Fingerprint> {
    return this.healthState.check(signal);
  }

  protected fingerprintOnce(signal: AbortSignal): Promise<Fingerprint> {
    return this.healthState.check(signal);
  }

  /** Container IDs of every task this agent tracks: in memory and in the TaskStore. */
  trackedContainers(): Set<string> {
    const ids = new Set<string>();
    for (const t of this.tasks.values()) ids.add(t.containerId);
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

  /** Deprecated: the old name of taskIds(). */
  listTasks(): string[] {
    return this.taskIds();
  }

  private engine(): Promise<{ cgroupVersion: string; cgroupDriver: string }> {
    if (!this.engineInfo) {
      this.engineInfo = this.ctx.call('info', (s) => this.docker.info({ abortSignal: s })).then(
        (i) => ({ cgroupVersion: String(i.CgroupVersion ?? '1'), cgroupDriver: String(i.CgroupDriver ?? 'cgroupfs') }),
      );
      this.engineInfo.catch(() => { this.engineInfo = undefined; });
    }
    return this.engineInfo;
  }

  private watch(task: DockerTask): void {
    watchExit(this.ctx, task, (r, finishedAt) => {
      if (task.markExited(r, finishedAt)) this.emitExited(task, r);
    });
  }

  // ---- start -------------------------------------------------------------------------------

  protected async start(cfg: TaskConfig<DockerTaskDriverConfig>): Promise<TaskHandle> {
    this.usableCores ??= hostUsableCores();
    const spec = validateTaskConfig(cfg, { allowPrivileged: this.allowPrivileged, agentId: this.agentId, usableCores: this.usableCores });
    const subject = { id: cfg.id, allocId: cfg.allocId, taskName: cfg.name };
    const pull = (forcePull: boolean) => this.images.ensure(spec.image, {
      forcePull,
      signal: this.lifeSignal,
      onProgress: (p) => this.emit(subject, 'image-pull', `${spec.image}: ${p.status}${p.id ? ` ${p.id}` : ''}${p.progress ? ` ${p.progress}` : ''}`,
        { image: spec.image, status: p.status }),
    });
    // Counted before anything else, so that image GC cannot remove it under a start in progress.
    this.images.addRef(spec.image, cfg.id);
    let containerId: string | undefined;
    let group: TaskCgroup | undefined;
    let stdin: StdinAttachment | undefined;
    try {
      // A local image is used as it is: create straight away (as `docker run` does) and pull only
      // when Docker says the image is missing, or first when forcePull asks for it.
      let imageId = spec.forcePull ? await pull(true) : undefined;
      const placed = await this.createOptions(cfg, spec);
      group = placed.group;
      const create = placed.create;
      containerId = await createContainer(this.ctx, cfg.id, spec.containerName, create, async () => {
        imageId = await pull(false);
      });
      if (spec.stdin) stdin = await StdinAttachment.open(this.ctx, containerId); // before start: no early input lost
      await startContainer(this.ctx, containerId);
      const startedAt = new Date().toISOString();
      const driverState: DockerDriverState = { containerId, containerName: spec.containerName, image: spec.image, agentId: this.agentId };
      if (imageId) driverState.imageId = imageId;
      if (group) driverState.cgroup = group.name;
      const handle: DockerTaskHandle = {
        version: 1, driver: DRIVER_NAME, taskId: cfg.id, allocId: cfg.allocId, taskName: cfg.name, startedAt,
        config: structuredClone(withoutStdin(cfg)), driverState: { ...driverState },
      };
      this.store.put(handle);
      const task = new DockerTask(handle, startedAt);
      task.group = group;
      this.adopt(task);
      this.watch(task);
      followLogs(this.ctx, task, 0);
      if (stdin && spec.stdin) (task.stdin = stdin).pipeFrom(spec.stdin);
      this.emit(task, 'started', `container ${spec.containerName} (${containerId.slice(0, 12)}) started from ${spec.image}`,
        { containerId, image: spec.image });
      return structuredClone(handle) as TaskHandle;
    } catch (err) {
      // Undo: remove the container, forget the handle and the image reference.
      stdin?.close();
      if (containerId) {
        const id = containerId;
        try {
          await bounded('remove container', this.callTimeoutMs, undefined, (s) => this.docker.getContainer(id).remove({ force: true, v: true, abortSignal: s }));
        } catch (rmErr) {
          if (statusOf(rmErr) !== 404) this.logger.warn('could not remove the container of a failed start', { containerId, error: (rmErr as Error).message });
        }
        try { this.store.delete(cfg.id); } catch { /* best effort */ }
      }
      this.tasks.delete(cfg.id);
      this.images.release(spec.image, cfg.id);
      if (group) await group.destroy().catch((gErr: Error) => this.logger.warn('could not remove the cgroup of a failed start', { group: group!.name, error: gErr.message }));
      throw err;
    }
  }

  /** The container's create options with its place in the cpuset partition (see cpusets.ts); its group, if it has one. */
  private async createOptions(cfg: TaskConfig<object>, spec: DockerTaskSpec): Promise<{ create: DockerTaskSpec['createOptions']; group?: TaskCgroup }> {
    const eng = await this.engine();
    const create = structuredClone(spec.createOptions);
    if (cfg.taskDir) addTaskDirMounts(cfg.taskDir, create);
    const p = await this.cpusets.place(cfg, eng);
    if (p.cgroupParent !== undefined) create.HostConfig.CgroupParent = p.cgroupParent;
    if (p.cpusetCpus !== undefined) create.HostConfig.CpusetCpus = p.cpusetCpus;
    return { create, ...(p.group ? { group: p.group } : {}) };
  }

  /** The cgroup manager whose partition holds the containers' cores (null: none). */
  cgroupManager(): CgroupManager | null {
    return this.cpusets.cgroupManager();
  }

  // ---- recovery ----------------------------------------------------------------------------

  protected async recover(handle: TaskHandle, opts: { force: boolean }): Promise<void> {
    const ds = handle.driverState as Partial<DockerDriverState>;
    if (typeof ds.containerId !== 'string' || !/^[0-9a-f]{12,64}$/.test(ds.containerId)) {
      throw new InvalidConfigError('handle.driverState.containerId', ds.containerId, 'must be a container ID');
    }
    const containerId = ds.containerId;
    const subject = { id: handle.taskId, allocId: handle.allocId, taskName: handle.taskName };
    let info;
    try {
      info = await this.ctx.call('inspect container', (s) => this.docker.getContainer(containerId).inspect({ abortSignal: s }));
    } catch (err) {
      if (statusOf(err) === 404) {
        // Gone while the agent was away: forget it, and let image GC know.
        this.store.delete(handle.taskId);
        if (typeof ds.image === 'string') this.images.release(ds.image, handle.taskId);
        this.emit(subject, 'lost', `container ${containerId.slice(0, 12)} no longer exists`);
        throw new DockerError('recover task', `container ${containerId.slice(0, 12)} of task ${handle.taskId} no longer exists`, 404, { cause: err });
      }
      throw err;
    }
    const owner = info.Config.Labels?.[LABEL_TASK_ID];
    if (owner !== undefined && owner !== handle.taskId) {
      throw new InvalidConfigError('handle.driverState.containerId', containerId, `the container belongs to task ${JSON.stringify(owner)}`);
    }
    if (this.tasks.has(handle.taskId)) return;
    const full: DockerDriverState = {
      containerId: info.Id,
      containerName: ds.containerName ?? info.Name.replace(/^\//, ''),
      image: ds.image ?? info.Config.Image,
      imageId: ds.imageId ?? info.Image,
      agentId: ds.agentId ?? info.Config.Labels?.[LABEL_AGENT_ID] ?? this.agentId,
    };
    const h: DockerTaskHandle = { ...(handle as DockerTaskHandle), driverState: { ...handle.driverState, ...full } };
    const task = new DockerTask(h, handle.startedAt);
    this.claimRecord(handle, opts.force);
    if (typeof ds.cgroup === 'string') task.group = this.cpusets.reopen(handle.allocId, handle.taskName);
    this.images.addRef(full.image, handle.taskId);
    this.adopt(task);
    try {
      this.store.put(h);
    } catch (err) {
      this.logger.warn('cannot persist a recovered handle', { taskId: handle.taskId, error: (err as Error).message });
    }
    if (info.State.Running || info.State.Restarting || info.State.Paused) {
      this.watch(task);
      followLogs(this.ctx, task, Math.floor(Date.now() / 1000));
      this.emit(task, 'recovered', `reattached to running container ${full.containerName} (${info.Id.slice(0, 12)})`, { containerId: info.Id });
    } else {
      task.markExited(exitResultOf(info, undefined), info.State.FinishedAt);
      this.emit(task, 'recovered', `container ${full.containerName} exited while the agent was away (exit code ${info.State.ExitCode})`, { containerId: info.Id });
    }
  }

  // ---- the task's life ---------------------------------------------------------------------

  /** Sends a signal to the container; 409/404 (not running, gone) are left to the exit watch to report. */
  private async kill(task: DockerTask, name: string, num: number, quiet: boolean): Promise<void> {
    task.lastSignal = num;
    try {
      await this.ctx.call('kill container', (s) => this.docker.getContainer(task.containerId).kill({ signal: name, abortSignal: s }));
    } catch (err) {
      const st = statusOf(err);
      if (quiet && (st === 409 || st === 404)) return;
      throw err;
    }
  }

  protected async stop(task: DockerTask, timeoutMs: number, sig: Sig): Promise<void> {
    this.assertOpen();
    if (task.exitResult) return;
    this.emit(task, 'killing', `sending ${sig.name}, then SIGKILL after ${timeoutMs} ms`, { signal: sig.name });
    await this.kill(task, sig.name, sig.number, true);
    if (!(await task.exitWithin(timeoutMs))) {
      await this.kill(task, 'SIGKILL', 9, true);
      this.emit(task, 'killed', `did not exit within ${timeoutMs} ms of ${sig.name}: sent SIGKILL`, { signal: 'SIGKILL' });
    }
    if (!(await task.exitWithin(this.callTimeoutMs))) {
      throw new DockerTimeoutError('stop container (waiting for the exit)', this.callTimeoutMs);
    }
  }

  /** The in-memory state may lag an exit that just happened: ask Docker. */
  protected override async isRunning(task: DockerTask, force: boolean): Promise<boolean> {
    if (task.exitResult) return false;
    try {
      const info = await this.ctx.call('inspect container', (s) => this.docker.getContainer(task.containerId).inspect({ abortSignal: s }));
      return info.State.Running || info.State.Restarting;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      if (!force) throw err;
      return true;
    }
  }

  protected async destroy(task: DockerTask): Promise<{ what: string; recordRemoved: boolean }> {
    if (task.exitResult === undefined && !this.gc.container) await this.kill(task, 'SIGKILL', 9, true);
    if (this.gc.container) {
      try {
        await this.ctx.call('remove container', (s) => this.docker.getContainer(task.containerId).remove({ force: true, v: true, abortSignal: s }));
      } catch (err) {
        const st = statusOf(err);
        if (st !== 404 && st !== 409) throw err;
      }
    }
    // Let the watch see the end (a forced removal ends the wait), then stop it.
    await task.exitWithin(Math.min(this.callTimeoutMs, 5000));
    task.watchCtl.abort();
    task.stdin?.close();
    if (task.logs) await task.logs;
    // The container (inside the group, on a v2 cgroupfs engine) is gone: the group and its cores go too.
    if (task.group) await task.group.destroy();
    this.images.release(task.handle.driverState.image, task.id);
    return { what: `container ${task.handle.driverState.containerName} ${this.gc.container ? 'removed' : 'left in place (gc.container is off)'}`, recordRemoved: false };
  }

  protected async signal(task: DockerTask, sig: Sig): Promise<void> {
    await this.kill(task, sig.name, sig.number, false);
  }

  protected exec(task: DockerTask, cmd: string[], timeoutMs: number, signal: AbortSignal): Promise<ExecTaskResult> {
    return execInContainer(this.ctx, task, cmd, timeoutMs, signal);
  }

  protected stats(task: DockerTask, intervalMs: number, signal: AbortSignal): AsyncIterable<TaskResourceUsage> {
    return containerStats(this.ctx, task, intervalMs, signal);
  }

  protected async closeDriver(): Promise<void> {
    this.reconciler.stop();
    await this.images.close();
    await Promise.allSettled([...this.background]);
  }
}
