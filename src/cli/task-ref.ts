/**
 * A task of ANOTHER corral process (a `corral run` elsewhere, an agent), found through the shared
 * state directory and attached to for one command (stop, kill, stats). Attaching is the drivers'
 * recovery: raw_exec re-opens the pid as a pidfd only after checking its start time (so a reused
 * pid is never signalled) and acts on the task's cgroup; docker goes by container ID. The owner
 * keeps the task: detaching (shutdown) leaves it as it was, and the owner still cleans it up.
 */
import type { TaskDriver, TaskHandle } from '../drivers/contract.js';
import { TaskNotFoundError } from '../errors.js';
import { DEFAULT_STATE_DIR, type TaskOwner, TaskStore } from '../store/task-store.js';
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

/**
 * Runs `f` with the driver attached to the stored task `ref`; always detaches. The drivers' recovery
 * claims the task's record (it is built for an agent taking over a dead one's tasks), so for a task
 * whose owner is alive we attach with `force` and hand the record straight back to that owner:
 * the owner keeps the task, and `corral gc` never takes a live owner's task for an orphan.
 */
export async function withStoredTask<T>(stateDir: string | undefined, ref: string, f: (driver: TaskDriver, h: TaskHandle) => Promise<T>): Promise<T> {
  const dir = stateDir ?? DEFAULT_STATE_DIR;
  const store = new TaskStore(dir);
  const h = findTask(store, ref);
  const owner = store.getRecord(h.taskId)?.owner;
  const driver = driverFor(h, dir);
  try {
    await driver.recoverTask(h, { force: true });
    // At once, before acting: once the task ends, its owner deletes the record, and a hand-back
    // racing with that delete would bring the record back. Nothing below needs the record.
    if (owner) giveBack(dir, h.taskId, owner);
    return await f(driver, h);
  } finally {
    await driver.shutdown();
  }
}

function giveBack(dir: string, taskId: string, owner: TaskOwner): void {
  try {
    new TaskStore(dir, { owner }).adopt(taskId, { force: true });
  } catch (err) {
    // The owner removed the record meanwhile (the task ended): nothing to hand back.
    if (!(err instanceof TaskNotFoundError)) throw err;
  }
}
