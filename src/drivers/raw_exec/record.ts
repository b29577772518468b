/**
 * The write-ahead record of a raw_exec task: built from the validated config before anything is
 * created, persisted as `starting`, completed (pid, start time, group paths) once the spawn
 * succeeded and persisted again as `running` (by the spawn's own thread: runningLine).
 */
import { groupName } from '../../cgroups/names.js';
import type { CgroupManager } from '../../cgroups/types.js';
import type { TaskStore } from '../../store/task-store.js';
import type { TaskConfig, TaskHandle } from '../contract.js';
import type { ValidatedTask } from './config.js';
import type { RawExecDriverState } from './task.js';

export const RAW_EXEC_DRIVER = 'raw_exec';

/** The handle of a task about to start: no process yet (pid 0), its group named but not created. */
export function startingHandle(v: ValidatedTask, cfg: TaskConfig<object>, mgr: CgroupManager | undefined): TaskHandle<RawExecDriverState> {
  return {
    version: 1,
    driver: RAW_EXEC_DRIVER,
    taskId: v.id,
    allocId: v.allocId,
    taskName: v.name,
    startedAt: new Date().toISOString(),
    config: cfg,
    driverState: {
      pid: 0,
      startTime: 0,
      pgid: 0,
      cgroup: mgr ? { version: mgr.version, parentName: mgr.parentName, name: groupName(v.allocId, v.name), paths: {} } : null,
      uid: v.uid,
      gid: v.gid,
      groups: v.user?.groups ?? [],
      file: v.file,
      cwd: v.cwd,
      env: v.env,
    },
  };
}

/**
 * The caller's copy of a handle, without a JSON round trip: the driver state (what the driver fills
 * in and keeps) copied field by field; `config` is the caller's own TaskConfig, which the record
 * already holds by reference.
 */
export function handleCopy(h: TaskHandle<RawExecDriverState>): TaskHandle {
  const ds = h.driverState;
  const driverState: RawExecDriverState = {
    ...ds,
    cgroup: ds.cgroup ? { ...ds.cgroup, paths: { ...ds.cgroup.paths } } : null,
    groups: [...ds.groups],
    env: { ...ds.env },
  };
  return { ...h, driverState } as unknown as TaskHandle;
}

// Stand-ins for the numbers only the spawn learns. No driver state holds them, and a JSON text holds
// the placeholders' \x01 byte only escaped, so each stand-in's key:value is found exactly once.
const PID_STAND_IN = Number.MIN_SAFE_INTEGER;
const START_STAND_IN = Number.MIN_SAFE_INTEGER + 1;

/**
 * The `running` line of a task's record for SpawnOptions.record: the handle as it will be once the
 * process runs, its pid, pgid (the task leads its session) and start time left as the placeholders
 * the spawn thread fills in. undefined when a stand-in is not found exactly once (then the driver
 * appends the line itself after the spawn).
 */
export function runningLine(store: TaskStore, h: TaskHandle<RawExecDriverState>): { file: string; text: string } | undefined {
  const ds = h.driverState;
  const { pid, pgid, startTime } = ds;
  ds.pid = ds.pgid = PID_STAND_IN;
  ds.startTime = START_STAND_IN;
  let line: { file: string; text: string };
  try {
    line = store.recordLine(h as unknown as TaskHandle, 'running');
  } finally {
    Object.assign(ds, { pid, pgid, startTime });
  }
  let text = line.text;
  for (const [key, standIn, placeholder] of [
    ['pid', PID_STAND_IN, '\x01P'],
    ['pgid', PID_STAND_IN, '\x01P'],
    ['startTime', START_STAND_IN, '\x01T'],
  ] as const) {
    const parts = text.split(`"${key}":${standIn}`);
    if (parts.length !== 2) return undefined;
    text = parts.join(`"${key}":${placeholder}`);
  }
  return { file: line.file, text };
}
