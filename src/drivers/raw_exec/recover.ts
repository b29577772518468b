/**
 * raw_exec recovery decisions that need no live task: is the recorded process still the task, and
 * what to do with a record a crash left `starting`.
 *
 * The rule behind both: a task known to be gone is acted upon through its cgroup only. A pid,
 * session or process group number outlives the process that had it and may now name anyone's
 * process; the task's cgroup is corral's own and holds only what corral put there.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ExecUserRefusedError, InvalidConfigError } from '../../errors.js';
import { groupName } from '../../cgroups/names.js';
import type { CgroupManager, TaskCgroup } from '../../cgroups/types.js';
import { processStartTime } from '../../store/owner.js';
import type { TaskHandle } from '../contract.js';
import type { ResolvedPluginConfig } from './config.js';
import type { RawExecDriverState, RawExecTask } from './task.js';
import { inRanges } from './users.js';

export type ProcessIdentity =
  /** The recorded process is alive and is the task. */
  | { kind: 'task' }
  /** The task's process ended (pid missing, a zombie, or reused by a process that started later). */
  | { kind: 'gone'; why: string };

function sessionOf(pid: number): number | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[3]);
  } catch {
    return undefined;
  }
}

/** Real uid (/proc/<pid>/status). */
function uidOf(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function exeOf(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

function realpath(p: string): string | undefined {
  try {
    return fs.realpathSync(p);
  } catch {
    return undefined;
  }
}

/**
 * Whether the handle's pid is still the task. Same start time means same process; then it must
 * also be where the task is: in the task's cgroup (a task cannot leave it), or with noCgroups the
 * leader of its own session, running as the recorded uid, the recorded executable. A live process with the recorded
 * start time that is not there means the handle does not describe it (edited, or not ours): that
 * is thrown as a bad handle, and nothing is done to the process.
 */
export function identifyTaskProcess(handle: TaskHandle<RawExecDriverState>, cg: TaskCgroup | undefined): ProcessIdentity {
  const s = handle.driverState;
  const st = processStartTime(s.pid);
  if (st === undefined) return { kind: 'gone', why: `the task (pid ${s.pid}) ended while no agent watched it` };
  if (st !== s.startTime) {
    return { kind: 'gone', why: `the task (pid ${s.pid}) ended while no agent watched it; its pid now belongs to another process` };
  }
  if (cg) {
    let pids: number[];
    try {
      pids = cg.pids();
    } catch {
      pids = [];
    }
    if (!pids.includes(s.pid)) {
      throw new InvalidConfigError('handle.driverState.pid', s.pid, `is a live process that is not in the task's cgroup ${cg.name}: the handle does not describe it`);
    }
    return { kind: 'task' };
  }
  if (s.cgroup !== null) return { kind: 'gone', why: `the task's cgroup ${s.cgroup.name} is gone` };
  if (sessionOf(s.pid) !== s.pid) {
    throw new InvalidConfigError('handle.driverState.pid', s.pid, 'is a live process that does not lead its own session, as a raw_exec task does: the handle does not describe it');
  }
  const uid = uidOf(s.pid);
  if (uid !== s.uid) {
    throw new InvalidConfigError('handle.driverState.pid', s.pid, `is a live process running as uid ${uid ?? '(unreadable)'}, not the task's uid ${s.uid}: the handle does not describe it`);
  }
  const exe = exeOf(s.pid);
  const file = realpath(s.file);
  if (exe === undefined || file === undefined || exe !== file) {
    throw new InvalidConfigError('handle.driverState.pid', s.pid,
      `is a live process running ${exe ?? '(unreadable)'}, not the task's ${s.file}: the handle does not describe it (a task that exec'd another program is not recognised without cgroups)`);
  }
  return { kind: 'task' };
}

/**
 * The recorded group paths must be the task's own group: where the manager has it now, or (a record
 * from an older layout, e.g. corral 0.1's) a directory named after the task's group. A record that
 * points at another task's group inside corral's parent is refused.
 */
export function checkGroupPaths(handle: TaskHandle<RawExecDriverState>, cg: TaskCgroup): void {
  const own = new Set([cg.name, `${cg.name}.scope`]);
  for (const [k, v] of Object.entries(handle.driverState.cgroup?.paths ?? {})) {
    if (cg.paths[k] !== v && !own.has(path.basename(v))) {
      throw new InvalidConfigError(`handle.driverState.cgroup.paths.${k}`, v, `is not the task's group ${cg.name} (${cg.paths[k] ?? 'no such controller'})`);
    }
  }
}

export interface InterruptedStart {
  taskId: string;
  /** The task's group, or null when none existed (or noCgroups). */
  group: string | null;
  /** Processes that were in the group and were killed. */
  killed: number;
}

/**
 * Resolves a record a crash left `starting`: whatever is in its group is killed and the group
 * removed (its reserved cores released). The group is left alone when another record names the
 * same group (`heldByAnother`): a start refused with EEXIST leaves exactly that. With noCgroups
 * nothing can be found (the pid is recorded only once the task runs), so only the record goes.
 * The caller deletes the record afterwards.
 */
export async function resolveInterruptedStart(
  handle: TaskHandle<RawExecDriverState>, mgr: CgroupManager | undefined, heldByAnother: boolean, killTimeoutMs: number,
): Promise<InterruptedStart> {
  if (!mgr || heldByAnother) return { taskId: handle.taskId, group: null, killed: 0 };
  let cg: TaskCgroup;
  try {
    const resources = handle.config.resources;
    cg = mgr.open(handle.allocId, handle.taskName, resources ? { resources } : undefined);
  } catch {
    return { taskId: handle.taskId, group: null, killed: 0 }; // the crash came before the group
  }
  let killed = 0;
  try {
    killed = cg.pids().length;
  } catch {
    /* counted as 0 */
  }
  await cg.destroy({ timeoutMs: killTimeoutMs });
  return { taskId: handle.taskId, group: cg.name, killed };
}

/** The group name a record names, or undefined for a record whose ids are bad. */
export function groupOf(h: TaskHandle): string | undefined {
  try {
    return groupName(h.allocId, h.taskName);
  } catch {
    return undefined;
  }
}

/**
 * execTask runs as the task's recorded user; a task without one, or one the plugin's
 * deniedHostUids/Gids now refuse, gets no exec (never the agent's own identity by default).
 */
export function checkExecUser(task: RawExecTask, plugin: ResolvedPluginConfig): void {
  const s = task.state;
  if (!Number.isSafeInteger(s.uid) || !Number.isSafeInteger(s.gid) || !Array.isArray(s.groups)) {
    throw new ExecUserRefusedError(task.id, undefined, undefined, 'the task has no recorded user');
  }
  if (inRanges(s.uid, plugin.deniedUids) || [s.gid, ...s.groups].some((g) => inRanges(g, plugin.deniedGids))) {
    throw new ExecUserRefusedError(task.id, s.uid, s.gid, `it runs as uid ${s.uid} / gid ${s.gid}, which deniedHostUids/Gids refuse`);
  }
}
