/**
 * raw_exec configuration: the plugin's (agent-wide) and the task's, and the validation of every
 * field before startTask touches the system. Each refusal is an InvalidConfigError naming the
 * field and the value.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidConfigError } from '../../errors.js';
import { validateAllocId, validateParentName, validateTaskName } from '../../cgroups/names.js';
import { validateResources } from '../../cgroups/resources.js';
import type { CgroupManager, CgroupVersion, TaskResources } from '../../cgroups/types.js';
import type { TaskConfig } from '../contract.js';
import { DEFAULT_STATE_DIR } from '../../store/task-store.js';
import { validateTaskId } from '../core/task-config.js';
import { optBool as bool0, optMs, plainString as plain0 } from '../../util/validate.js';
import { buildEnv, validateDeniedEnvvars, validateEnv } from './env.js';
import { type IdRange, type UserInfo, canExecute, inRanges, lookupUser, parseIdRanges } from './users.js';

/** The agent-wide options of the raw_exec driver (Nomad's plugin "raw_exec" block). */
export interface RawExecPluginConfig {
  /** Default true. A disabled driver fingerprints as undetected and refuses tasks. */
  enabled?: boolean;
  /** Track tasks by session/process group instead of cgroups; no limits, stats from /proc. Default false. */
  noCgroups?: boolean;
  /** Where task handles are persisted (default /var/lib/corral). */
  stateDir?: string;
  /** Host uids no task may run as, e.g. "0,10-15". Applies to the task's user, or else the agent's own. */
  deniedHostUids?: string;
  /** Host gids no task may run as (primary or supplementary). */
  deniedHostGids?: string;
  /** Names and globs (`*_TOKEN`, `AWS_*`) kept out of every task's environment. */
  deniedEnvvars?: string[];
  /** Pass the agent's own environment to tasks under the task's (default false: exactly the task's env). */
  inheritAgentEnv?: boolean;
  /** Cgroup parent: v1 default `corral`, v2 default `corral.slice` (`.slice` is appended on v2 when missing). */
  cgroupParent?: string;
  /** Cgroup mount root (default detected, /sys/fs/cgroup). */
  cgroupRoot?: string;
  /** Force the cgroup manager version ('v2' on a hybrid host runs on the unified mount). */
  cgroupVersion?: CgroupVersion;
  /** Use this manager instead of detecting one (embedding, tests). */
  cgroupManager?: CgroupManager;
  /** Deprecated: the old name of stopTimeoutMs (stopTask's default grace before the group kill). */
  defaultKillTimeoutMs?: number;
  /** Bound on a group kill / emptiness wait (default 10 s). */
  groupKillTimeoutMs?: number;
}

/** The task's driver block (Nomad's raw_exec task config). */
export interface RawExecTaskConfig {
  /** Required. An absolute path, a path relative to workDir, or a name looked up in the task env's PATH. */
  command: string;
  args?: string[];
  /** Absolute working directory (default the taskDir, else /). */
  workDir?: string;
  /** Written to the task's /proc/self/oom_score_adj before exec; 0..1000. */
  oomScoreAdj?: number;
  /** Added to the plugin's denied names and globs. */
  deniedEnvvars?: string[];
  /** Pass the agent's environment under the task's own (default false). */
  inheritEnv?: boolean;
  /** An fd of the agent given to the task as its stdout (instead of stdoutPath; the CLI passes 1). */
  stdoutFd?: number;
  /** An fd of the agent given to the task as its stderr (instead of stderrPath). */
  stderrFd?: number;
  /** An fd of the agent given to the task as its stdin (default /dev/null; run() passes a pipe for `input`). */
  stdinFd?: number;
  /** stdinFd is a pty slave: it becomes the controlling terminal of the task's session (`corral run --tty`). */
  tty?: boolean;
}

export interface ResolvedPluginConfig {
  enabled: boolean;
  noCgroups: boolean;
  stateDir: string;
  deniedUids: IdRange[];
  deniedGids: IdRange[];
  deniedEnvvars: string[];
  inheritAgentEnv: boolean;
  cgroupParent: string | undefined;
  groupKillTimeoutMs: number;
}

const bool = (v: unknown, field: string, dflt: boolean) => bool0(field, v, dflt);
const plainString = (v: unknown, field: string, what?: string) => plain0(field, v, what);

export function resolvePluginConfig(c: RawExecPluginConfig = {}): ResolvedPluginConfig {
  if (typeof c !== 'object' || c === null) throw new InvalidConfigError('config', c, 'must be an object');
  const stateDir = c.stateDir ?? DEFAULT_STATE_DIR;
  if (typeof stateDir !== 'string' || !path.isAbsolute(stateDir)) throw new InvalidConfigError('stateDir', stateDir, 'must be an absolute path');
  if (c.cgroupParent !== undefined) validateParentName(c.cgroupParent, 'cgroupParent');
  return {
    enabled: bool(c.enabled, 'enabled', true),
    noCgroups: bool(c.noCgroups, 'noCgroups', false),
    stateDir,
    deniedUids: parseIdRanges(c.deniedHostUids, 'deniedHostUids'),
    deniedGids: parseIdRanges(c.deniedHostGids, 'deniedHostGids'),
    deniedEnvvars: validateDeniedEnvvars(c.deniedEnvvars, 'deniedEnvvars'),
    inheritAgentEnv: bool(c.inheritAgentEnv, 'inheritAgentEnv', false),
    cgroupParent: c.cgroupParent,
    groupKillTimeoutMs: optMs('groupKillTimeoutMs', c.groupKillTimeoutMs, 10_000, 1),
  };
}

/** Everything startTask needs, checked. */
export interface ValidatedTask {
  id: string;
  allocId: string;
  name: string;
  file: string;
  argv: string[];
  env: Record<string, string>;
  envp: string[];
  removedEnv: string[];
  cwd: string;
  /** Set when the task runs as another user than the agent. */
  user?: UserInfo;
  uid: number;
  gid: number;
  resources: TaskResources;
  stdoutPath?: string;
  stderrPath?: string;
  stdoutFd?: number;
  stderrFd?: number;
  stdinFd?: number;
  tty?: boolean;
  oomScoreAdj?: number;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';


function existingDir(p: unknown, field: string): string {
  const s = plainString(p, field, 'an absolute path');
  if (!path.isAbsolute(s)) throw new InvalidConfigError(field, p, 'must be an absolute path');
  let st: fs.Stats;
  try {
    st = fs.statSync(s);
  } catch (err) {
    throw new InvalidConfigError(field, p, `does not exist (${(err as NodeJS.ErrnoException).code})`);
  }
  if (!st.isDirectory()) throw new InvalidConfigError(field, p, 'is not a directory');
  return s;
}

function outputPath(p: unknown, field: string): string | undefined {
  if (p === undefined) return undefined;
  const s = plainString(p, field, 'an absolute path');
  if (!path.isAbsolute(s)) throw new InvalidConfigError(field, p, 'must be an absolute path');
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(s);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new InvalidConfigError(field, p, `cannot be used (${(err as NodeJS.ErrnoException).code})`);
  }
  if (st) {
    if (!st.isFile() && !st.isFIFO() && !st.isCharacterDevice()) throw new InvalidConfigError(field, p, 'must be a regular file, a FIFO or a character device');
  } else {
    let parent: fs.Stats;
    try {
      parent = fs.statSync(path.dirname(s));
    } catch {
      throw new InvalidConfigError(field, p, `its directory ${path.dirname(s)} does not exist`);
    }
    if (!parent.isDirectory()) throw new InvalidConfigError(field, p, `${path.dirname(s)} is not a directory`);
  }
  return s;
}

function agentFd(v: unknown, field: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || (v as number) < 0) throw new InvalidConfigError(field, v, 'must be a non-negative integer fd');
  try {
    fs.fstatSync(v as number);
  } catch {
    throw new InvalidConfigError(field, v, 'is not an open fd of this process');
  }
  return v as number;
}

/** Finds the executable: absolute, relative to cwd when it has a '/', else searched in PATH. */
export function resolveCommand(command: string, cwd: string, pathVar: string, who: { uid: number; gid: number; groups: readonly number[] }): string {
  const field = 'driver.command';
  const check = (p: string): 'ok' | 'missing' | 'noexec' | 'notfile' => {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return 'missing';
    }
    if (!st.isFile()) return 'notfile';
    return canExecute(st, who) ? 'ok' : 'noexec';
  };
  const explain = (r: string, p: string) =>
    r === 'missing' ? `${p} does not exist` : r === 'notfile' ? `${p} is not a regular file` : `${p} is not executable by uid ${who.uid}`;
  if (command.includes('/')) {
    const p = path.resolve(cwd, command);
    const r = check(p);
    if (r !== 'ok') throw new InvalidConfigError(field, command, explain(r, p));
    return p;
  }
  let firstProblem: string | undefined;
  for (const dir of pathVar.split(':')) {
    if (dir === '' || !path.isAbsolute(dir)) continue;
    const p = path.join(dir, command);
    const r = check(p);
    if (r === 'ok') return p;
    if (r !== 'missing' && !firstProblem) firstProblem = explain(r, p);
  }
  throw new InvalidConfigError(field, command, firstProblem ?? `not found in PATH ${JSON.stringify(pathVar)}`);
}

export interface ValidationContext {
  plugin: ResolvedPluginConfig;
  /** Cores tasks may use; undefined with noCgroups. */
  usableCores?: number[];
  /** Controllers the manager can limit with (undefined with noCgroups). */
  controllers?: string[];
}

/** Checks every field of a raw_exec task config; touches nothing (the user is looked up through NSS, off the main thread). */
export async function validateTask(cfg: TaskConfig<object>, ctx: ValidationContext): Promise<ValidatedTask> {
  if (typeof cfg !== 'object' || cfg === null) throw new InvalidConfigError('config', cfg, 'must be an object');
  const id = validateTaskId(cfg.id);
  const allocId = validateAllocId(cfg.allocId, 'allocId');
  const name = validateTaskName(cfg.name, 'name');
  const d = cfg.driver as unknown as RawExecTaskConfig;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw new InvalidConfigError('driver', d, 'must be an object with at least `command`');
  const known = new Set(['command', 'args', 'workDir', 'oomScoreAdj', 'deniedEnvvars', 'inheritEnv', 'stdoutFd', 'stderrFd', 'stdinFd', 'tty']);
  for (const k of Object.keys(d)) if (!known.has(k)) throw new InvalidConfigError(`driver.${k}`, (d as unknown as Record<string, unknown>)[k], `unknown raw_exec option (known: ${[...known].join(', ')})`);
  if (d.command === undefined) throw new InvalidConfigError('driver.command', d.command, 'is required');
  const command = plainString(d.command, 'driver.command', 'a non-empty string');
  if (command.trim() === '') throw new InvalidConfigError('driver.command', d.command, 'must not be empty');
  let args: string[] = [];
  if (d.args !== undefined) {
    if (!Array.isArray(d.args)) throw new InvalidConfigError('driver.args', d.args, 'must be an array of strings');
    args = d.args.map((a, i) => plainString(a, `driver.args[${i}]`));
  }
  let oomScoreAdj: number | undefined;
  if (d.oomScoreAdj !== undefined) {
    if (!Number.isInteger(d.oomScoreAdj) || d.oomScoreAdj < 0 || d.oomScoreAdj > 1000) {
      throw new InvalidConfigError('driver.oomScoreAdj', d.oomScoreAdj, 'must be an integer from 0 to 1000');
    }
    oomScoreAdj = d.oomScoreAdj;
  }
  const taskDenied = validateDeniedEnvvars(d.deniedEnvvars, 'driver.deniedEnvvars');
  const inheritEnv = bool(d.inheritEnv, 'driver.inheritEnv', false);
  const taskDir = cfg.taskDir === undefined ? undefined : existingDir(cfg.taskDir, 'taskDir');
  const cwd = d.workDir === undefined ? (taskDir ?? '/') : existingDir(d.workDir, 'driver.workDir');

  // Who the task runs as: its user, or else the agent itself.
  let user: UserInfo | undefined;
  if (cfg.user !== undefined && cfg.user !== '') user = await lookupUser(plainString(cfg.user, 'user'), 'user');
  const uid = user ? user.uid : process.getuid!();
  const gid = user ? user.gid : process.getgid!();
  const groups = user ? user.groups : [];
  const who = cfg.user !== undefined && cfg.user !== '' ? `user ${JSON.stringify(cfg.user)}` : 'the agent (no user set)';
  if (inRanges(uid, ctx.plugin.deniedUids)) {
    throw new InvalidConfigError('user', cfg.user ?? null, `${who} would run as uid ${uid}, which deniedHostUids refuses`);
  }
  for (const g of [gid, ...groups]) {
    if (inRanges(g, ctx.plugin.deniedGids)) throw new InvalidConfigError('user', cfg.user ?? null, `${who} would run with gid ${g}, which deniedHostGids refuses`);
  }

  const taskEnv = validateEnv(cfg.env, 'env');
  const built = buildEnv(taskEnv, [...ctx.plugin.deniedEnvvars, ...taskDenied], ctx.plugin.inheritAgentEnv || inheritEnv ? process.env : undefined);
  const file = resolveCommand(command, cwd, built.env.PATH ?? DEFAULT_PATH, { uid, gid, groups });

  const resources = validateResources(cfg.resources);
  if (ctx.plugin.noCgroups) {
    for (const k of Object.keys(resources) as (keyof TaskResources)[]) {
      throw new InvalidConfigError(`resources.${k}`, resources[k], 'cannot be enforced: the raw_exec driver runs with noCgroups');
    }
  } else {
    if (resources.cores && ctx.usableCores) {
      const usable = new Set(ctx.usableCores);
      const bad = resources.cores.filter((c) => !usable.has(c));
      if (bad.length > 0) throw new InvalidConfigError('resources.cores', cfg.resources?.cores, `core(s) ${bad.join(',')} not usable here (usable: ${ctx.usableCores.join(',')})`);
    }
    if (ctx.controllers) {
      const need: [keyof TaskResources, string][] = [['cores', 'cpuset'], ['memoryBytes', 'memory'], ['pidsMax', 'pids'], ['cpuShares', 'cpu']];
      for (const [k, ctl] of need) {
        if (resources[k] !== undefined && !ctx.controllers.includes(ctl)) {
          throw new InvalidConfigError(`resources.${k}`, resources[k], `the ${ctl} controller is not available on this cgroup layout (have: ${ctx.controllers.join(',') || 'none'})`);
        }
      }
    }
  }
  const stdoutFd = agentFd(d.stdoutFd, 'driver.stdoutFd');
  const stderrFd = agentFd(d.stderrFd, 'driver.stderrFd');
  const stdinFd = agentFd(d.stdinFd, 'driver.stdinFd');
  const tty = bool(d.tty, 'driver.tty', false);
  if (tty && stdinFd === undefined) throw new InvalidConfigError('driver.tty', d.tty, 'needs driver.stdinFd (the terminal)');
  const stdoutPath = outputPath(cfg.stdoutPath, 'stdoutPath');
  const stderrPath = outputPath(cfg.stderrPath, 'stderrPath');
  return {
    id, allocId, name, file, argv: [command, ...args], env: built.env, envp: built.envp, removedEnv: built.removed, cwd,
    ...(user ? { user } : {}), uid, gid, resources,
    ...(stdoutPath !== undefined ? { stdoutPath } : {}), ...(stderrPath !== undefined ? { stderrPath } : {}),
    ...(stdoutFd !== undefined ? { stdoutFd } : {}), ...(stderrFd !== undefined ? { stderrFd } : {}),
    ...(stdinFd !== undefined ? { stdinFd } : {}), ...(tty ? { tty } : {}),
    ...(oomScoreAdj !== undefined ? { oomScoreAdj } : {}),
  };
}
