/**
 * The task-config rules every driver applies the same way, so that one TaskConfig means the same
 * to raw_exec and to docker: the task id, the alloc id (a UUID, any case), the name (what a cgroup
 * directory name allows), env, user, the paths, the resources (shape, and cores among the usable
 * ones), and the command of an exec. Each driver then checks its own `driver` block and what only it
 * needs (raw_exec: that paths exist, that the user exists; docker: Docker's minimum memory).
 */
import * as path from 'node:path';
import { InvalidConfigError } from '../../errors.js';
import { validateAllocId, validateTaskName } from '../../cgroups/names.js';
import { validateResources } from '../../cgroups/resources.js';
import type { TaskResources } from '../../cgroups/types.js';
import { isObject, plainString } from '../../util/validate.js';
import type { TaskConfig } from '../contract.js';

/** Output kept per stream of an execTask. */
export const MAX_EXEC_OUTPUT = 4 * 1024 * 1024;

/** A task id: a non-empty string of at most 512 characters, without control characters. */
export function validateTaskId(v: unknown): string {
  const id = plainString('id', v, 'a non-empty string');
  if (id.length === 0) throw new InvalidConfigError('id', v, 'must not be empty');
  if (id.length > 512) throw new InvalidConfigError('id', v, 'must be at most 512 characters');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(id)) throw new InvalidConfigError('id', v, 'must not contain control characters');
  return id;
}

/** `env` (string → string; names without "=" or NUL, values without NUL). */
export function validateEnv(env: unknown, field = 'env'): Record<string, string> {
  if (env === undefined || env === null) return {};
  if (!isObject(env)) throw new InvalidConfigError(field, env, 'must be an object of NAME: value strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k === '' || k.includes('=') || k.includes('\0')) throw new InvalidConfigError(`${field}.${k}`, k, 'a name must be non-empty and contain neither "=" nor NUL');
    if (typeof v !== 'string') throw new InvalidConfigError(`${field}.${k}`, v, 'must be a string');
    if (v.includes('\0')) throw new InvalidConfigError(`${field}.${k}`, v, 'must not contain NUL');
    out[k] = v;
  }
  return out;
}

/** An absolute path without NUL, or undefined when absent. */
export function optAbsolutePath(field: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  const s = plainString(field, v, 'an absolute path');
  if (!path.isAbsolute(s)) throw new InvalidConfigError(field, v, 'must be an absolute path');
  return s;
}

/** What the resources of a task may ask for on this host. */
export interface ResourceLimits {
  /** Cores tasks may use (reserved cores must be among them). */
  usableCores?: readonly number[];
  /** Controllers that can enforce limits (undefined: not checked). */
  controllers?: readonly string[];
}

const CONTROLLER_OF: [keyof TaskResources, string][] = [['cores', 'cpuset'], ['memoryBytes', 'memory'], ['pidsMax', 'pids'], ['cpuShares', 'cpu']];

/** The resources' shape (validateResources), then reserved cores among the usable ones and each limit's controller present. */
export function validateTaskResources(res: unknown, limits: ResourceLimits = {}): TaskResources {
  if (res !== undefined && res !== null && !isObject(res)) throw new InvalidConfigError('resources', res, 'must be an object');
  if (isObject(res)) {
    for (const k of Object.keys(res)) {
      if (!CONTROLLER_OF.some(([f]) => f === k)) throw new InvalidConfigError(`resources.${k}`, res[k], 'unknown field (known: cpuShares, cores, memoryBytes, pidsMax)');
    }
  }
  const r = validateResources(res as TaskResources | undefined);
  if (r.cores && limits.usableCores) {
    const usable = new Set(limits.usableCores);
    const bad = r.cores.filter((c) => !usable.has(c));
    if (bad.length > 0) {
      throw new InvalidConfigError('resources.cores', (res as TaskResources).cores, `core(s) ${bad.join(',')} not usable here (usable: ${limits.usableCores.join(',')})`);
    }
  }
  if (limits.controllers) {
    for (const [k, ctl] of CONTROLLER_OF) {
      if (r[k] !== undefined && !limits.controllers.includes(ctl)) {
        throw new InvalidConfigError(`resources.${k}`, r[k], `the ${ctl} controller is not available on this cgroup layout (have: ${limits.controllers.join(',') || 'none'})`);
      }
    }
  }
  return r;
}

/** The fields of a TaskConfig outside `driver`, checked by the shared rules. */
export interface BaseTask {
  id: string;
  allocId: string;
  name: string;
  env: Record<string, string>;
  /** Absent when not set or empty. */
  user?: string;
  taskDir?: string;
  stdoutPath?: string;
  stderrPath?: string;
  resources: TaskResources;
  /** The driver block, an object (its fields are the driver's to check). */
  driver: Record<string, unknown>;
}

/** Checks every field of `cfg` outside the driver block, the same for every driver; touches nothing. */
export function validateBaseTask(cfg: TaskConfig<object>, limits: ResourceLimits = {}, driverHint = 'an object'): BaseTask {
  if (!isObject(cfg)) throw new InvalidConfigError('config', cfg, 'must be an object');
  const id = validateTaskId(cfg.id);
  const allocId = validateAllocId(cfg.allocId, 'allocId');
  const name = validateTaskName(cfg.name, 'name');
  const env = validateEnv(cfg.env, 'env');
  const user = cfg.user === undefined || cfg.user === '' ? undefined : plainString('user', cfg.user);
  const taskDir = optAbsolutePath('taskDir', cfg.taskDir);
  const stdoutPath = optAbsolutePath('stdoutPath', cfg.stdoutPath);
  const stderrPath = optAbsolutePath('stderrPath', cfg.stderrPath);
  const driver = cfg.driver as unknown;
  if (!isObject(driver)) throw new InvalidConfigError('driver', driver, `must be ${driverHint}`);
  const resources = validateTaskResources(cfg.resources, limits);
  return {
    id, allocId, name, env, resources, driver,
    ...(user !== undefined ? { user } : {}),
    ...(taskDir !== undefined ? { taskDir } : {}),
    ...(stdoutPath !== undefined ? { stdoutPath } : {}),
    ...(stderrPath !== undefined ? { stderrPath } : {}),
  };
}

/** The argv of an execTask: a non-empty array of strings without NUL, the first one non-empty. */
export function validateExecCmd(cmd: unknown): string[] {
  if (!Array.isArray(cmd) || cmd.length === 0) throw new InvalidConfigError('cmd', cmd, 'must be a non-empty array of strings');
  cmd.forEach((c, i) => {
    if (typeof c !== 'string' || c.includes('\0')) throw new InvalidConfigError(`cmd[${i}]`, c, 'must be a string without NUL');
  });
  if (cmd[0] === '') throw new InvalidConfigError('cmd[0]', cmd[0], 'must not be empty');
  return cmd as string[];
}
