/**
 * A task of ANOTHER corral process (a `corral run` elsewhere, an agent), found through the shared
 * state directory and attached to for one command (stop, kill, stats). Attaching is the drivers'
 * recovery: raw_exec re-opens the pid as a pidfd only after checking its start time (so a reused
 * pid is never signalled) and acts on the task's cgroup; docker goes by container ID. The owner
 * keeps the task: detaching (shutdown) leaves it as it was, and the owner still cleans it up.
 */
import type { TaskDriver, TaskHandle } from '../drivers/contract.js';
import { DEFAULT_STATE_DIR, TaskStore } from '../store/task-store.js';
import { createCliDriver } from './drivers.js';
import { UsageError } from './errors.js';

/** Finds a task by its id, a unique prefix of it (e.g. the first characters of the alloc id), or its name. */
export function findTask(store: TaskStore, ref: string): TaskHandle {
  if (ref === '') throw new UsageError('the task ID must not be empty');
  const exact = store.get(ref);
  if (exact) return exact;
  const { handles } = store.list();
  const byPrefix = handles.filter((h) => h.taskId.startsWith(ref));
  const matches = byPrefix.length > 0 ? byPrefix : handles.filter((h) => h.taskName === ref);
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0) throw new UsageError(`no task ${JSON.stringify(ref)} in ${store.dir} (see corral ps --state-dir ${store.dir})`);
  throw new UsageError(`${JSON.stringify(ref)} matches ${matches.length} tasks (${matches.map((h) => h.taskId).join(', ')}); give more of the ID`);
}

interface RawState { cgroup?: { version?: 'v1' | 'v2'; parentName?: string } | null }

/** The driver a stored task needs, configured as the task's owner had it (cgroup parent and version). */
export function driverFor(h: TaskHandle, stateDir: string): TaskDriver {
  if (h.driver === 'docker') {
    const agentId = (h.driverState as { agentId?: unknown }).agentId;
    return createCliDriver('docker', { stateDir, ...(typeof agentId === 'string' ? { agentId } : {}) });
  }
  if (h.driver !== 'raw_exec') throw new UsageError(`task ${h.taskId} has driver ${JSON.stringify(h.driver)}, which this corral does not know`);
  const cg = (h.driverState as RawState).cgroup;
  return createCliDriver('raw_exec', {
    stateDir,
    ...(cg ? { ...(cg.parentName ? { cgroupParent: cg.parentName } : {}), ...(cg.version ? { cgroupVersion: cg.version } : {}) } : { noCgroups: true }),
  });
}

/** Runs `f` with the driver attached to the stored task `ref`; always detaches. */
export async function withStoredTask<T>(stateDir: string | undefined, ref: string, f: (driver: TaskDriver, h: TaskHandle) => Promise<T>): Promise<T> {
  const dir = stateDir ?? DEFAULT_STATE_DIR;
  const h = findTask(new TaskStore(dir), ref);
  const driver = driverFor(h, dir);
  try {
    await driver.recoverTask(h);
    return await f(driver, h);
  } finally {
    await driver.shutdown();
  }
}
