/**
 * Plugin config and task config of the docker driver, validated up front: every invalid field is an
 * InvalidConfigError naming the field and the value, raised before anything is created.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { InvalidConfigError } from '../../errors.js';
import type { TaskConfig } from '../contract.js';
import {
  DEFAULT_CREATION_GRACE_MS, DEFAULT_RECONCILE_PERIOD_MS, LABEL_AGENT_ID, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME,
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
  danglingContainers: Required<DanglingContainersConfig>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bool(field: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new InvalidConfigError(field, v, 'must be true or false');
  return v;
}

function ms(field: string, v: unknown, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new InvalidConfigError(field, v, `must be a number of milliseconds ≥ ${min}`);
  return Math.floor(v);
}

export function resolveGcConfig(gc: unknown): ResolvedGcConfig {
  if (gc !== undefined && !isObject(gc)) throw new InvalidConfigError('gc', gc, 'must be an object');
  const g = (gc ?? {}) as Record<string, unknown>;
  const dc = g.danglingContainers;
  if (dc !== undefined && !isObject(dc)) throw new InvalidConfigError('gc.danglingContainers', dc, 'must be an object');
  const d = (dc ?? {}) as Record<string, unknown>;
  return {
    image: bool('gc.image', g.image, true),
    imageDelayMs: ms('gc.imageDelayMs', g.imageDelayMs, DEFAULT_IMAGE_DELAY_MS),
    container: bool('gc.container', g.container, true),
    danglingContainers: {
      enabled: bool('gc.danglingContainers.enabled', d.enabled, true),
      dryRun: bool('gc.danglingContainers.dryRun', d.dryRun, false),
      periodMs: ms('gc.danglingContainers.periodMs', d.periodMs, DEFAULT_RECONCILE_PERIOD_MS, 1),
      creationGraceMs: ms('gc.danglingContainers.creationGraceMs', d.creationGraceMs, DEFAULT_CREATION_GRACE_MS, 0),
      unsafeMatchAllocIdOnly: bool('gc.danglingContainers.unsafeMatchAllocIdOnly', d.unsafeMatchAllocIdOnly, false),
      unsafeMatchNomadShaped: bool('gc.danglingContainers.unsafeMatchNomadShaped', d.unsafeMatchNomadShaped, false),
    },
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
}

const DRIVER_FIELDS = new Set(['image', 'command', 'args', 'entrypoint', 'labels', 'env', 'workDir', 'networkMode', 'volumes', 'privileged', 'forcePull']);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Docker container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+ */
const TASK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN = '(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?';
const IMAGE_REF = new RegExp(`^(?:${DOMAIN}/)?${NAME_COMPONENT}(?:/${NAME_COMPONENT})*(?::[\\w][\\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$`);
const IMAGE_ID = /^(?:sha256:)?[0-9a-f]{64}$/;
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
const ENV_KEY = /^[^=\0]+$/;

function str(field: string, v: unknown, opts: { nonEmpty?: boolean } = {}): string {
  if (typeof v !== 'string') throw new InvalidConfigError(field, v, 'must be a string');
  if (opts.nonEmpty && v.trim() === '') throw new InvalidConfigError(field, v, 'must not be empty');
  if (v.includes('\0')) throw new InvalidConfigError(field, v, 'must not contain NUL');
  return v;
}

function strArray(field: string, v: unknown): string[] {
  if (!Array.isArray(v)) throw new InvalidConfigError(field, v, 'must be an array of strings');
  return v.map((x, i) => str(`${field}[${i}]`, x));
}

function strMap(field: string, v: unknown, keyRe?: RegExp): Record<string, string> {
  if (!isObject(v)) throw new InvalidConfigError(field, v, 'must be an object of string values');
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (k === '' || (keyRe && !keyRe.test(k))) throw new InvalidConfigError(`${field}`, k, 'invalid key');
    out[k] = str(`${field}.${k}`, val);
  }
  return out;
}

function absPath(field: string, v: unknown): string {
  const s = str(field, v, { nonEmpty: true });
  if (!path.isAbsolute(s)) throw new InvalidConfigError(field, v, 'must be an absolute path');
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
  if (v.startsWith('container:')) return TASK_NAME.test(v.slice('container:'.length));
  return NETWORK_NAME.test(v);
}

function onlineCores(): number {
  return os.cpus().length || 1;
}

/** Everything startTask needs, computed from a validated TaskConfig. */
export interface DockerTaskSpec {
  image: string;
  forcePull: boolean;
  containerName: string;
  createOptions: {
    Image: string;
    Cmd?: string[];
    Entrypoint?: string[];
    Env: string[];
    Labels: Record<string, string>;
    WorkingDir?: string;
    User?: string;
    HostConfig: {
      NetworkMode?: string;
      Binds?: string[];
      Privileged: boolean;
      Memory?: number;
      MemorySwap?: number;
      CpuShares?: number;
      CpusetCpus?: string;
      PidsLimit?: number;
      CgroupParent?: string;
    };
  };
}

export interface ValidateOptions {
  allowPrivileged: boolean;
  agentId: string;
}

/** Validates a task config for the docker driver. Throws InvalidConfigError on the first bad field. */
export function validateTaskConfig(cfg: TaskConfig<object>, opts: ValidateOptions): DockerTaskSpec {
  if (!isObject(cfg)) throw new InvalidConfigError('task', cfg, 'must be an object');
  const id = str('id', cfg.id, { nonEmpty: true });
  const allocId = str('allocId', cfg.allocId, { nonEmpty: true });
  if (!UUID.test(allocId)) throw new InvalidConfigError('allocId', cfg.allocId, 'must be a lower-case UUID');
  const name = str('name', cfg.name, { nonEmpty: true });
  if (!TASK_NAME.test(name) || name.length > 200) throw new InvalidConfigError('name', cfg.name, 'must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (it becomes part of the container name)');
  const env: Record<string, string> = cfg.env === undefined ? {} : strMap('env', cfg.env, ENV_KEY);
  let user: string | undefined;
  if (cfg.user !== undefined) user = str('user', cfg.user, { nonEmpty: true });
  if (cfg.taskDir !== undefined) absPath('taskDir', cfg.taskDir);
  if (cfg.stdoutPath !== undefined) absPath('stdoutPath', cfg.stdoutPath);
  if (cfg.stderrPath !== undefined) absPath('stderrPath', cfg.stderrPath);

  const d = cfg.driver as unknown;
  if (!isObject(d)) throw new InvalidConfigError('driver', d, 'must be an object with at least an image');
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
    cmd.push(...strArray('driver.args', d.args));
  }
  if (cmd.length > 0) createOptions.Cmd = cmd;
  if (d.entrypoint !== undefined) {
    const ep = strArray('driver.entrypoint', d.entrypoint);
    if (ep.length === 0) throw new InvalidConfigError('driver.entrypoint', d.entrypoint, 'must not be empty');
    createOptions.Entrypoint = ep;
  }
  const labels: Record<string, string> = d.labels === undefined ? {} : strMap('driver.labels', d.labels);
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
  const denv = d.env === undefined ? {} : strMap('driver.env', d.env, ENV_KEY);
  createOptions.Env = Object.entries({ ...env, ...denv }).map(([k, v]) => `${k}=${v}`);
  if (d.workDir !== undefined) createOptions.WorkingDir = absPath('driver.workDir', d.workDir);
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
  const privileged = bool('driver.privileged', d.privileged, false);
  if (privileged && !opts.allowPrivileged) {
    throw new InvalidConfigError('driver.privileged', true, 'privileged containers are refused unless the plugin config sets allowPrivileged');
  }
  hc.Privileged = privileged;
  const forcePull = bool('driver.forcePull', d.forcePull, false);

  const r = cfg.resources as unknown;
  if (r !== undefined) {
    if (!isObject(r)) throw new InvalidConfigError('resources', r, 'must be an object');
    for (const k of Object.keys(r)) {
      if (!['cpuShares', 'cores', 'memoryBytes', 'pidsMax'].includes(k)) throw new InvalidConfigError(`resources.${k}`, r[k], 'unknown field');
    }
    if (r.memoryBytes !== undefined) {
      const m = r.memoryBytes;
      if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < MIN_MEMORY_BYTES) {
        throw new InvalidConfigError('resources.memoryBytes', m, `must be an integer number of bytes ≥ ${MIN_MEMORY_BYTES} (Docker's minimum, 6 MiB)`);
      }
      hc.Memory = m;
      hc.MemorySwap = m; // no swap beyond the limit, as Nomad does
    }
    if (r.cpuShares !== undefined) {
      const s = r.cpuShares;
      if (typeof s !== 'number' || !Number.isInteger(s) || s < 2 || s > 262144) throw new InvalidConfigError('resources.cpuShares', s, 'must be an integer in 2..262144');
      hc.CpuShares = s;
    }
    if (r.cores !== undefined) {
      const c = r.cores;
      if (!Array.isArray(c)) throw new InvalidConfigError('resources.cores', c, 'must be an array of core numbers');
      const n = onlineCores();
      const seen = new Set<number>();
      for (const x of c) {
        if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= n) throw new InvalidConfigError('resources.cores', c, `core ${JSON.stringify(x)} does not exist on this host (0..${n - 1})`);
        if (seen.has(x)) throw new InvalidConfigError('resources.cores', c, `core ${x} is listed twice`);
        seen.add(x);
      }
      if (c.length > 0) hc.CpusetCpus = [...seen].sort((a, b) => a - b).join(',');
    }
    if (r.pidsMax !== undefined) {
      const p = r.pidsMax;
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 1) throw new InvalidConfigError('resources.pidsMax', p, 'must be a positive integer');
      hc.PidsLimit = p;
    }
  }
  return { image, forcePull, containerName: `${name}-${allocId}`, createOptions };
}
