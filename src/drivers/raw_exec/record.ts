/**
 * The write-ahead record of a raw_exec task: built from the validated config before anything is
 * created, persisted as `starting`, completed (pid, start time, group paths) once the spawn
 * succeeded and persisted again as `running`.
 */
import { groupName } from '../../cgroups/names.js';
import type { CgroupManager } from '../../cgroups/types.js';
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
