/**
 * raw_exec configuration: the plugin's (agent-wide) and the task's, and the validation of every
 * field before startTask touches the system. The fields outside the driver block follow the rules
 * every driver shares (core/task-config.ts); here come raw_exec's own: paths that must exist, the
 * user looked up on the host, denied ids and env names, the command found and executable.
 * Each refusal is an InvalidConfigError naming the field and the value.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidConfigError } from '../../errors.js';
import { validateParentName } from '../../cgroups/names.js';
import type { CgroupManager, CgroupVersion, TaskResources } from '../../cgroups/types.js';
import type { TaskConfig } from '../contract.js';
import { DEFAULT_STATE_DIR } from '../../store/task-store.js';
import { type ResourceLimits, validateBaseTask } from '../core/task-config.js';
import { optBool, optMs, plainString, stringArray } from '../../util/validate.js';
import { buildEnv, validateDeniedEnvvars } from './env.js';
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
  /** Pass the agent's own environment to every task under the task's (default false: exactly the task's env). */
  inheritEnv?: boolean;
  /** Deprecated: the old name of inheritEnv. */
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
  /** Bound on a group kill and the wait until the group is empty (default 10 s). */
  killTimeoutMs?: number;
  /** Deprecated: the old name of killTimeoutMs. */
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
  inheritEnv: boolean;
  cgroupParent: string | undefined;
  killTimeoutMs: number;
}

/** A value given under its new name or its deprecated one (the new one wins), with the name to report. */
function aliased<T>(c: Record<string, unknown>, name: string, old: string): [string, T | undefined] {
  return c[name] !== undefined ? [name, c[name] as T] : [old, c[old] as T | undefined];
}

export function resolvePluginConfig(c: RawExecPluginConfig = {}): ResolvedPluginConfig {
  if (typeof c !== 'object' || c === null) throw new InvalidConfigError('config', c, 'must be an object');
  const stateDir = c.stateDir ?? DEFAULT_STATE_DIR;
  if (typeof stateDir !== 'string' || !path.isAbsolute(stateDir)) throw new InvalidConfigError('stateDir', stateDir, 'must be an absolute path');
  if (c.cgroupParent !== undefined) validateParentName(c.cgroupParent, 'cgroupParent');
  const o = c as Record<string, unknown>;
  const [inheritField, inherit] = aliased<boolean>(o, 'inheritEnv', 'inheritAgentEnv');
  const [killField, kill] = aliased<number>(o, 'killTimeoutMs', 'groupKillTimeoutMs');
  return {
    enabled: optBool('enabled', c.enabled, true),
    noCgroups: optBool('noCgroups', c.noCgroups, false),
    stateDir,
    deniedUids: parseIdRanges(c.deniedHostUids, 'deniedHostUids'),
    deniedGids: parseIdRanges(c.deniedHostGids, 'deniedHostGids'),
    deniedEnvvars: validateDeniedEnvvars(c.deniedEnvvars, 'deniedEnvvars'),
    inheritEnv: optBool(inheritField, inherit, false),
    cgroupParent: c.cgroupParent,
    killTimeoutMs: optMs(killField, kill, 10_000, 1),
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

function existingDir(s: string, field: string): string {
  if (!path.isAbsolute(s)) throw new InvalidConfigError(field, s, 'must be an absolute path');
  let st: fs.Stats;
  try {
    st = fs.statSync(s);
  } catch (err) {
    throw new InvalidConfigError(field, s, `does not exist (${(err as NodeJS.ErrnoException).code})`);
  }
  if (!st.isDirectory()) throw new InvalidConfigError(field, s, 'is not a directory');
  return s;
}

/** An output path the task can be given: a file (or one to create in an existing directory), a FIFO or a device. */
function outputPath(s: string | undefined, field: string): string | undefined {
  if (s === undefined) return undefined;
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(s);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new InvalidConfigError(field, s, `cannot be used (${(err as NodeJS.ErrnoException).code})`);
  }
  if (st) {
    if (!st.isFile() && !st.isFIFO() && !st.isCharacterDevice()) throw new InvalidConfigError(field, s, 'must be a regular file, a FIFO or a character device');
  } else {
    let parent: fs.Stats;
    try {
      parent = fs.statSync(path.dirname(s));
    } catch {
      throw new InvalidConfigError(field, s, `its directory ${path.dirname(s)} does not exist`);
    }
    if (!parent.isDirectory()) throw new InvalidConfigError(field, s, `${path.dirname(s)} is not a directory`);
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


export interface ValidationContext extends ResourceLimits {
  plugin: ResolvedPluginConfig;
}

const DRIVER_FIELDS = ['command', 'args', 'workDir', 'oomScoreAdj', 'deniedEnvvars', 'inheritEnv', 'stdoutFd', 'stderrFd', 'stdinFd', 'tty'];

/** Checks every field of a raw_exec task config; touches nothing (the user is looked up through NSS, off the main thread). */
export async function validateTask(cfg: TaskConfig<object>, ctx: ValidationContext): Promise<ValidatedTask> {
  const base = validateBaseTask(cfg, ctx.plugin.noCgroups ? {} : ctx, 'an object with at least `command`');
  const d = base.driver;
  for (const k of Object.keys(d)) {
    if (!DRIVER_FIELDS.includes(k)) throw new InvalidConfigError(`driver.${k}`, d[k], `unknown raw_exec option (known: ${DRIVER_FIELDS.join(', ')})`);
  }
  if (d.command === undefined) throw new InvalidConfigError('driver.command', d.command, 'is required');
  const command = plainString('driver.command', d.command, 'a non-empty string');
  if (command.trim() === '') throw new InvalidConfigError('driver.command', d.command, 'must not be empty');
  const args = d.args === undefined ? [] : stringArray('driver.args', d.args);
  let oomScoreAdj: number | undefined;
  if (d.oomScoreAdj !== undefined) {
    if (!Number.isInteger(d.oomScoreAdj) || (d.oomScoreAdj as number) < 0 || (d.oomScoreAdj as number) > 1000) {
      throw new InvalidConfigError('driver.oomScoreAdj', d.oomScoreAdj, 'must be an integer from 0 to 1000');
    }
    oomScoreAdj = d.oomScoreAdj as number;
  }
  const taskDenied = validateDeniedEnvvars(d.deniedEnvvars, 'driver.deniedEnvvars');
  const inheritEnv = optBool('driver.inheritEnv', d.inheritEnv, false);
  const taskDir = base.taskDir === undefined ? undefined : existingDir(base.taskDir, 'taskDir');
  const cwd = d.workDir === undefined ? (taskDir ?? '/') : existingDir(plainString('driver.workDir', d.workDir, 'an absolute path'), 'driver.workDir');

  // Who the task runs as: its user, or else the agent itself.
  const user = base.user !== undefined ? await lookupUser(base.user, 'user') : undefined;
  const uid = user ? user.uid : process.getuid!();
  const gid = user ? user.gid : process.getgid!();
  const groups = user ? user.groups : [];
  const who = base.user !== undefined ? `user ${JSON.stringify(base.user)}` : 'the agent (no user set)';
  if (inRanges(uid, ctx.plugin.deniedUids)) {
    throw new InvalidConfigError('user', cfg.user ?? null, `${who} would run as uid ${uid}, which deniedHostUids refuses`);
  }
  for (const g of [gid, ...groups]) {
    if (inRanges(g, ctx.plugin.deniedGids)) throw new InvalidConfigError('user', cfg.user ?? null, `${who} would run with gid ${g}, which deniedHostGids refuses`);
  }

  const built = buildEnv(base.env, [...ctx.plugin.deniedEnvvars, ...taskDenied], ctx.plugin.inheritEnv || inheritEnv ? process.env : undefined);
  const file = resolveCommand(command, cwd, built.env.PATH ?? DEFAULT_PATH, { uid, gid, groups });

  const resources = base.resources;
  if (ctx.plugin.noCgroups) {
    for (const k of Object.keys(resources) as (keyof TaskResources)[]) {
      throw new InvalidConfigError(`resources.${k}`, resources[k], 'cannot be enforced: the raw_exec driver runs with noCgroups');
    }
  }
  const stdoutFd = agentFd(d.stdoutFd, 'driver.stdoutFd');
  const stderrFd = agentFd(d.stderrFd, 'driver.stderrFd');
  const stdinFd = agentFd(d.stdinFd, 'driver.stdinFd');
  const tty = optBool('driver.tty', d.tty, false);
  if (tty && stdinFd === undefined) throw new InvalidConfigError('driver.tty', d.tty, 'needs driver.stdinFd (the terminal)');
  const stdoutPath = outputPath(base.stdoutPath, 'stdoutPath');
  const stderrPath = outputPath(base.stderrPath, 'stderrPath');
  return {
    id: base.id, allocId: base.allocId, name: base.name, file, argv: [command, ...args], env: built.env, envp: built.envp, removedEnv: built.removed, cwd,
    ...(user ? { user } : {}), uid, gid, resources,
    ...(stdoutPath !== undefined ? { stdoutPath } : {}), ...(stderrPath !== undefined ? { stderrPath } : {}),
    ...(stdoutFd !== undefined ? { stdoutFd } : {}), ...(stderrFd !== undefined ? { stderrFd } : {}),
    ...(stdinFd !== undefined ? { stdinFd } : {}), ...(tty ? { tty } : {}),
    ...(oomScoreAdj !== undefined ? { oomScoreAdj } : {}),
  };
}
