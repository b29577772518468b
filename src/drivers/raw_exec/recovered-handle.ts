/**
 * Re-validation of a raw_exec handle read back at recovery. The state directory is just files:
 * anyone with write access (or a bug, or a disk error) can change them, and recovery acts on what
 * they say (signals a pid, kills a group, runs execTask as a uid). So a handle is checked as
 * strictly as a new task's config, and one that fails is reported and never acted upon:
 *  - ids: task id, alloc id (UUID) and name, and the embedded config agreeing with them;
 *  - the process: pid, start time, and pgid = pid (tasks lead their own session);
 *  - who it runs as: uid, gid and groups present and not refused by deniedHostUids/Gids, and the
 *    same as the config's user resolves to when that user still exists;
 *  - paths: executable and cwd absolute; env a plain string map;
 *  - the cgroup: the manager's version and parent, the task's own group name, every path inside
 *    corral's own parent (never a group of someone else's).
 * A record still `starting` has no process yet (pid 0): only ids, user and cgroup are checked.
 */
import * as path from 'node:path';
import { InvalidConfigError } from '../../errors.js';
import { groupName, validateAllocId, validateTaskName } from '../../cgroups/names.js';
import { validateResources } from '../../cgroups/resources.js';
import type { CgroupManager, TaskResources } from '../../cgroups/types.js';
import type { TaskHandle } from '../contract.js';
import type { ResolvedPluginConfig } from './config.js';
import { validateTaskId } from '../core/task-config.js';
import type { RawExecDriverState } from './task.js';
import { inRanges, lookupUser } from './users.js';

/** Highest pid Linux hands out (PID_MAX_LIMIT on 64-bit). */
const PID_MAX = 4_194_304;
/** (uid_t)-1 means "unchanged" to setuid: never a valid id. */
const ID_MAX = 0xfffffffe;

function bad(field: string, value: unknown, reason: string): never {
  throw new InvalidConfigError(`handle.${field}`, value, reason);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function id(v: unknown, field: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 0 || (v as number) > ID_MAX) bad(field, v, 'must be an integer id from 0 to 4294967294');
  return v as number;
}

function absolute(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.includes('\0') || !path.isAbsolute(v) || path.normalize(v) !== v) bad(field, v, 'must be a normalised absolute path');
  return v;
}

/** Whether `p` is strictly inside `dir` (both absolute; `p` normalised). */
function inside(p: string, dir: string): boolean {
  return p.startsWith(dir.endsWith('/') ? dir : `${dir}/`) && p.length > dir.length + 1;
}

/** The directories corral's parent has on this manager's hierarchies. */
export function parentDirs(mgr: CgroupManager): string[] {
  if (mgr.version === 'v2') return [path.join(mgr.layout.root, mgr.parentName)];
  return [...new Set(Object.values(mgr.layout.v1Mounts))].map((m) => path.join(m, mgr.parentName));
}

export interface HandleCheckContext {
  plugin: ResolvedPluginConfig;
  /** Undefined with noCgroups. */
  mgr: CgroupManager | undefined;
  /** The record's state: a `starting` one has no process yet. */
  state: 'starting' | 'running';
}

/** Checks a recovered raw_exec handle; throws InvalidConfigError (field `handle.*`) on the first problem. */
export async function checkRecoveredHandle(h: unknown, ctx: HandleCheckContext): Promise<TaskHandle<RawExecDriverState>> {
  if (!isObject(h)) throw new InvalidConfigError('handle', h, 'must be a task handle object');
  if (h.version !== 1) bad('version', h.version, 'must be 1');
  if (h.driver !== 'raw_exec') bad('driver', h.driver, 'is not raw_exec');
  const taskId = (() => {
    try { return validateTaskId(h.taskId); } catch (err) { return bad('taskId', h.taskId, (err as InvalidConfigError).message); }
  })();
  const allocId = validateAllocId(h.allocId, 'handle.allocId');
  const taskName = validateTaskName(h.taskName, 'handle.taskName');
  if (typeof h.startedAt !== 'string' || Number.isNaN(Date.parse(h.startedAt))) bad('startedAt', h.startedAt, 'must be an ISO date');
  const cfg = h.config;
  if (!isObject(cfg)) bad('config', cfg, 'must be the task config object');
  if (cfg.id !== taskId) bad('config.id', cfg.id, `must equal the handle's task id ${JSON.stringify(taskId)}`);
  if (cfg.allocId !== allocId) bad('config.allocId', cfg.allocId, `must equal the handle's alloc id ${allocId}`);
  if (cfg.name !== taskName) bad('config.name', cfg.name, `must equal the handle's task name ${JSON.stringify(taskName)}`);
  if (cfg.user !== undefined && typeof cfg.user !== 'string') bad('config.user', cfg.user, 'must be a string');
  validateResources(cfg.resources as TaskResources | undefined);

  const s = h.driverState;
  if (!isObject(s)) bad('driverState', s, 'must be the raw_exec driver state object');
  if (ctx.state === 'starting') {
    if (s.pid !== 0) bad('driverState.pid', s.pid, 'must be 0 in a record that is still starting');
  } else {
    if (!Number.isSafeInteger(s.pid) || (s.pid as number) < 2 || (s.pid as number) > PID_MAX) bad('driverState.pid', s.pid, 'must be a pid (2..4194304)');
    if (!Number.isSafeInteger(s.startTime) || (s.startTime as number) < 0) bad('driverState.startTime', s.startTime, 'must be a process start time (clock ticks)');
    if (s.pgid !== s.pid) bad('driverState.pgid', s.pgid, `must equal the pid ${String(s.pid)} (a task leads its own session)`);
    absolute(s.file, 'driverState.file');
  }
  absolute(s.cwd, 'driverState.cwd');
  if (!isObject(s.env) || Object.entries(s.env).some(([k, v]) => k === '' || k.includes('=') || k.includes('\0') || typeof v !== 'string' || v.includes('\0'))) {
    bad('driverState.env', s.env, 'must be a map of environment names to strings');
  }

  // Who the task runs as (execTask runs as it too).
  const uid = id(s.uid, 'driverState.uid');
  const gid = id(s.gid, 'driverState.gid');
  if (!Array.isArray(s.groups)) bad('driverState.groups', s.groups, 'must be an array of gids');
  const groups = (s.groups as unknown[]).map((g, i) => id(g, `driverState.groups[${i}]`));
  if (inRanges(uid, ctx.plugin.deniedUids)) bad('driverState.uid', uid, 'is refused by deniedHostUids');
  for (const g of [gid, ...groups]) if (inRanges(g, ctx.plugin.deniedGids)) bad('driverState.gid', g, 'is refused by deniedHostGids');
  if (typeof cfg.user === 'string' && cfg.user !== '') {
    let u: { uid: number; gid: number } | undefined;
    try {
      u = await lookupUser(cfg.user, 'user');
    } catch {
      u = undefined; // the user was removed since: the recorded ids are what the task runs as
    }
    if (u && (u.uid !== uid || u.gid !== gid)) bad('driverState.uid', uid, `does not match the task's user ${JSON.stringify(cfg.user)} (uid ${u.uid}, gid ${u.gid})`);
  }

  // The cgroup: ours, under our parent, with this task's name.
  if (s.cgroup === null) {
    // Without a group, only the pid says where the task is; a driver with cgroups does not take that word.
    if (ctx.mgr) bad('driverState.cgroup', null, 'names no cgroup, but this driver runs with cgroups (recover tasks started with noCgroups on a noCgroups driver)');
  } else {
    const c = s.cgroup;
    if (!isObject(c)) bad('driverState.cgroup', c, 'must be null or the task\'s cgroup');
    if (!ctx.mgr) bad('driverState.cgroup', c, 'names a cgroup, but this driver runs with noCgroups');
    if (c.version !== ctx.mgr.version) bad('driverState.cgroup.version', c.version, `must be this manager's version ${ctx.mgr.version}`);
    if (c.parentName !== ctx.mgr.parentName) bad('driverState.cgroup.parentName', c.parentName, `must be this driver's cgroup parent ${JSON.stringify(ctx.mgr.parentName)}`);
    if (c.name !== groupName(allocId, taskName)) bad('driverState.cgroup.name', c.name, `must be the task's group ${groupName(allocId, taskName)}`);
    if (!isObject(c.paths)) bad('driverState.cgroup.paths', c.paths, 'must be a map of controller to directory');
    const parents = parentDirs(ctx.mgr);
    for (const [k, v] of Object.entries(c.paths)) {
      const p = absolute(v, `driverState.cgroup.paths.${k}`);
      if (!parents.some((d) => inside(p, d))) bad(`driverState.cgroup.paths.${k}`, v, `is not inside corral's cgroup parent (${parents.join(', ')})`);
    }
  }
  return h as unknown as TaskHandle<RawExecDriverState>;
}
