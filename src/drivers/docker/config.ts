/**
 * Plugin config and task config of the docker driver, validated up front: every invalid field is an
 * InvalidConfigError naming the field and the value, raised before anything is created. The fields
 * outside the driver block follow the rules every driver shares (core/task-config.ts).
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { InvalidConfigError } from '../../errors.js';
import { isObject, optBool, optMs, plainString, stringArray } from '../../util/validate.js';
import type { TaskConfig } from '../contract.js';
import { type ResourceLimits, optAbsolutePath, validateBaseTask, validateEnv } from '../core/task-config.js';
import type { ContainerCreate } from './client.js';
import { optStdin } from './stdin.js';
import { detectCgroupLayout } from '../../cgroups/detect.js';
import { onlineCores, readCpuListFile } from '../../cgroups/options.js';
import {
  LABEL_AGENT_ID, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME,
  RESERVED_LABEL_PREFIX, type DanglingContainersConfig,
} from './reconcile_dangling.js';

export const DEFAULT_PULL_TIMEOUT_MS = 5 * 60_000;
export const DEFAULT_IMAGE_DELAY_MS = 3 * 60_000;
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
export const DEFAULT_FINGERPRINT_INTERVAL_MS = 30_000;
export const DEFAULT_CGROUP_PARENT = 'corral.slice';
/** Docker refuses memory limits below 6 MiB. */
export const MIN_MEMORY_BYTES = 6 * 1024 * 1024;

export interface DockerGcConfig {
  /** Remove an image once no task uses it (after imageDelayMs). Default true. */
  image?: boolean;
  /** Default 3 min. */
  imageDelayMs?: number;
  /** Remove a task's container when the task is destroyed. Default true. */
  container?: boolean;
  danglingContainers?: DanglingContainersConfig;
}

export interface ResolvedGcConfig {
  image: boolean;
  imageDelayMs: number;
  container: boolean;
  danglingContainers: DanglingContainersConfig;
}


export function resolveGcConfig(gc: unknown): ResolvedGcConfig {
  if (gc !== undefined && !isObject(gc)) throw new InvalidConfigError('gc', gc, 'must be an object');
  const g = (gc ?? {}) as Record<string, unknown>;
  const dc = g.danglingContainers;
  if (dc !== undefined && !isObject(dc)) throw new InvalidConfigError('gc.danglingContainers', dc, 'must be an object');
  const d = (dc ?? {}) as Record<string, unknown>;
  return {
    image: optBool('gc.image', g.image, true),
    imageDelayMs: Math.floor(optMs('gc.imageDelayMs', g.imageDelayMs, DEFAULT_IMAGE_DELAY_MS)),
    container: optBool('gc.container', g.container, true),
    // Its fields are the reconciler's to check (it is also used on its own, e.g. by the CLI).
    danglingContainers: d as DanglingContainersConfig,
  };
}

/** What the task config of the docker driver (TaskConfig.driver) accepts. */
export interface DockerTaskDriverConfig {
  image: string;
  command?: string;
  args?: string[];
  entrypoint?: string[];
  labels?: Record<string, string>;
  env?: Record<string, string>;
  workDir?: string;
  networkMode?: string;
  /** `host:container[:ro|rw]`; host is an absolute path or a named volume. */
  volumes?: string[];
  privileged?: boolean;
  forcePull?: boolean;
  /**
   * The task's stdin: copied into the container until it ends, then the container's stdin is closed
   * (EOF), as with `docker run -i`. Default: none (the container's stdin is /dev/null). Not persisted.
   */
  stdin?: NodeJS.ReadableStream;
}

const DRIVER_FIELDS = new Set(['image', 'command', 'args', 'entrypoint', 'labels', 'env', 'workDir', 'networkMode', 'volumes', 'privileged', 'forcePull', 'stdin']);

/** Docker container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+ */
const CONTAINER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN = '(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?';
const IMAGE_REF = new RegExp(`^(?:${DOMAIN}/)?${NAME_COMPONENT}(?:/${NAME_COMPONENT})*(?::[\\w][\\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$`);
const IMAGE_ID = /^(?:sha256:)?[0-9a-f]{64}$/;
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

function str(field: string, v: unknown, opts: { nonEmpty?: boolean } = {}): string {
  const s = plainString(field, v);
  if (opts.nonEmpty && s.trim() === '') throw new InvalidConfigError(field, v, 'must not be empty');
  return s;
}

/** Parses `host:container[:ro|rw]`. */
export function parseVolume(field: string, spec: unknown): { bind: string; host: string; container: string; readOnly: boolean } {
  const s = str(field, spec, { nonEmpty: true });
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3) throw new InvalidConfigError(field, spec, 'must be host:container or host:container:ro|rw');
  const [host, container, mode] = parts as [string, string, string | undefined];
  if (host === '' || !(path.isAbsolute(host) || VOLUME_NAME.test(host))) {
    throw new InvalidConfigError(field, spec, `host side ${JSON.stringify(host)} must be an absolute path or a volume name`);
  }
  if (!path.isAbsolute(container)) throw new InvalidConfigError(field, spec, `container side ${JSON.stringify(container)} must be an absolute path`);
  if (path.normalize(container) === '/') throw new InvalidConfigError(field, spec, 'cannot mount over the container root /');
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') throw new InvalidConfigError(field, spec, `mode ${JSON.stringify(mode)} must be ro or rw`);
  return { bind: mode ? `${host}:${container}:${mode}` : `${host}:${container}`, host, container, readOnly: mode === 'ro' };
}

function validNetworkMode(v: string): boolean {
  if (['none', 'bridge', 'host', 'default'].includes(v)) return true;
  if (v.startsWith('container:')) return CONTAINER_NAME.test(v.slice('container:'.length));
  return NETWORK_NAME.test(v);
}

/**
 * The container name of a task: `<name>-<allocId>` (as Nomad names them). A task name with
 * characters Docker refuses in names is spelled with `_` instead, plus a short hash of the real
 * name so that two names never meet in one container name; the real name is in the labels.
 */
export function containerNameFor(name: string, allocId: string): string {
  if (CONTAINER_NAME.test(name)) return `${name}-${allocId}`;
  const safe = name.replace(/[^a-zA-Z0-9_.-]/g, '_').replace(/^[^a-zA-Z0-9]/, 'x');
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return `${safe}-${hash}-${allocId}`;
}

/** Everything startTask needs, computed from a validated TaskConfig. */
export interface DockerTaskSpec {
  image: string;
  forcePull: boolean;
  containerName: string;
  /** driver.stdin, when given. */
  stdin?: NodeJS.ReadableStream;
  /** What the container is created with (the name is given apart); always Env, Labels and HostConfig.Privileged. */
  createOptions: ContainerCreate & {
    Env: string[];
    Labels: Record<string, string>;
    HostConfig: NonNullable<ContainerCreate['HostConfig']> & { Privileged: boolean };
  };
}

export interface ValidateOptions {
  allowPrivileged: boolean;
  agentId: string;
}

/** What the host lets a docker task ask for: the usable cores (checked against resources.cores). */
export interface ValidateOptions extends ResourceLimits {
  allowPrivileged: boolean;
  agentId: string;
}

/** Validates a task config for the docker driver. Throws InvalidConfigError on the first bad field. */
export function validateTaskConfig(cfg: TaskConfig<object>, opts: ValidateOptions): DockerTaskSpec {
  const base = validateBaseTask(cfg, { ...(opts.usableCores ? { usableCores: opts.usableCores } : {}) }, 'an object with at least an image');
  const { id, allocId, name, env, user } = base;
  const d = base.driver;
  for (const k of Object.keys(d)) {
    if (!DRIVER_FIELDS.has(k)) throw new InvalidConfigError(`driver.${k}`, d[k], `unknown field (known: ${[...DRIVER_FIELDS].join(', ')})`);
  }
  if (d.image === undefined) throw new InvalidConfigError('driver.image', undefined, 'is required');
  const image = str('driver.image', d.image, { nonEmpty: true });
  if (!IMAGE_REF.test(image) && !IMAGE_ID.test(image)) throw new InvalidConfigError('driver.image', d.image, 'is not a valid image reference (e.g. busybox, busybox:1.36, registry:5000/org/app@sha256:...)');

  const createOptions: DockerTaskSpec['createOptions'] = { Image: image, Env: [], Labels: {}, HostConfig: { Privileged: false } };
  const hc = createOptions.HostConfig;
  const cmd: string[] = [];
  if (d.command !== undefined) cmd.push(str('driver.command', d.command, { nonEmpty: true }));
  if (d.args !== undefined) {
    // Without a command, args alone become Cmd (passed to the image's entrypoint), as Docker does.
    cmd.push(...stringArray('driver.args', d.args));
  }
  if (cmd.length > 0) createOptions.Cmd = cmd;
  if (d.entrypoint !== undefined) {
    const ep = stringArray('driver.entrypoint', d.entrypoint);
    if (ep.length === 0) throw new InvalidConfigError('driver.entrypoint', d.entrypoint, 'must not be empty');
    createOptions.Entrypoint = ep;
  }
  const labels = validateEnv(d.labels, 'driver.labels');
  for (const k of Object.keys(labels)) {
    if (k.startsWith(RESERVED_LABEL_PREFIX)) throw new InvalidConfigError(`driver.labels.${k}`, k, `labels starting with ${RESERVED_LABEL_PREFIX} are reserved for corral`);
  }
  createOptions.Labels = {
    ...labels,
    [LABEL_ALLOC_ID]: allocId,
    [LABEL_TASK_NAME]: name,
    [LABEL_TASK_ID]: id,
    [LABEL_AGENT_ID]: opts.agentId,
  };
  const denv = validateEnv(d.env, 'driver.env');
  createOptions.Env = Object.entries({ ...env, ...denv }).map(([k, v]) => `${k}=${v}`);
  const workDir = optAbsolutePath('driver.workDir', d.workDir);
  if (workDir !== undefined) createOptions.WorkingDir = workDir;
  if (user !== undefined) createOptions.User = user;
  if (d.networkMode !== undefined) {
    const nm = str('driver.networkMode', d.networkMode, { nonEmpty: true });
    if (!validNetworkMode(nm)) throw new InvalidConfigError('driver.networkMode', d.networkMode, 'must be none, bridge, host, default, container:<name> or a network name');
    hc.NetworkMode = nm;
  }
  if (d.volumes !== undefined) {
    if (!Array.isArray(d.volumes)) throw new InvalidConfigError('driver.volumes', d.volumes, 'must be an array of host:container[:ro] strings');
    const seen = new Set<string>();
    hc.Binds = d.volumes.map((v, i) => {
      const p = parseVolume(`driver.volumes[${i}]`, v);
      const dest = path.posix.normalize(p.container).replace(/(.)\/+$/, '$1');
      if (seen.has(dest)) throw new InvalidConfigError(`driver.volumes[${i}]`, v, `container path ${dest} is mounted twice`);
      seen.add(dest);
      return p.bind;
    });
  }
  const privileged = optBool('driver.privileged', d.privileged, false);
  if (privileged && !opts.allowPrivileged) {
    throw new InvalidConfigError('driver.privileged', true, 'privileged containers are refused unless the plugin config sets allowPrivileged');
  }
  hc.Privileged = privileged;
  const forcePull = optBool('driver.forcePull', d.forcePull, false);
  const stdin = optStdin(d.stdin);
  if (stdin) Object.assign(createOptions, { OpenStdin: true, StdinOnce: true, AttachStdin: true });

  const r = base.resources;
  if (r.memoryBytes !== undefined) {
    if (r.memoryBytes < MIN_MEMORY_BYTES) {
      throw new InvalidConfigError('resources.memoryBytes', r.memoryBytes, `must be at least ${MIN_MEMORY_BYTES} bytes (Docker's minimum, 6 MiB)`);
    }
    hc.Memory = r.memoryBytes;
    hc.MemorySwap = r.memoryBytes; // no swap beyond the limit, as Nomad does
  }
  if (r.cpuShares !== undefined) hc.CpuShares = r.cpuShares;
  if (r.cores !== undefined) hc.CpusetCpus = r.cores.join(',');
  if (r.pidsMax !== undefined) hc.PidsLimit = r.pidsMax;
  return { image, forcePull, containerName: containerNameFor(name, allocId), createOptions, ...(stdin ? { stdin } : {}) };
}

/**
 * The cores containers may be pinned to: the root cgroup's effective cpuset (what dockerd itself
 * may hand out), else the online cores. Read once per driver.
 */
export function hostUsableCores(): number[] {
  try {
    const layout = detectCgroupLayout();
    const files = layout.version === 'v2'
      ? [path.join(layout.root, 'cpuset.cpus.effective')]
      : layout.v1Mounts.cpuset ? [path.join(layout.v1Mounts.cpuset, 'cpuset.effective_cpus'), path.join(layout.v1Mounts.cpuset, 'cpuset.cpus')] : [];
    return readCpuListFile(...files) ?? onlineCores();
  } catch {
    return onlineCores();
  }
}
