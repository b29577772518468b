/**
 * `corral gc [--dry-run]`: destroys the tasks whose owning corral process died (a `corral run` that
 * was SIGKILLed, an agent that crashed): each such record is adopted (store.adopt: exactly one
 * process wins it), attached to by the driver's recovery (pid checked by start time, cgroup opened),
 * and destroyed (its group killed and removed, its container removed, its record deleted).
 * Tasks whose owner still runs are left alone.
 */
import type { TaskHandle } from '../drivers/contract.js';
import { readProcStat } from '../util/proc.js';
import { DEFAULT_STATE_DIR, type TaskRecord, TaskStore } from '../store/task-store.js';
import { parseCommand } from './argv.js';
import { reportError } from './errors.js';
import type { RunIo } from './run.js';
import { driverFor } from './task-ref.js';

export const GC_HELP = `Usage: corral gc [--dry-run] [--json] [--state-dir DIR]

Destroys the tasks of the state directory whose owning corral process (a corral run, an agent) has
died: their processes are killed, their cgroups or containers removed, their records deleted.
Tasks whose owner still runs are not touched.

Options:
  --dry-run         only list what would be destroyed
  --json            one JSON object on stdout: {"destroyed", "wouldDestroy", "failed", "skipped"}
  --state-dir DIR   the state directory (default ${DEFAULT_STATE_DIR})
  -h, --help        this help
`;

interface RawState { pid?: number; startTime?: number; cgroup?: unknown }

/**
 * A raw_exec task without a cgroup whose main pid now names ANOTHER process: its session id may be
 * that process's, so nothing may be signalled by session; only the record goes.
 */
function sessionNotOurs(h: TaskHandle): boolean {
  if (h.driver !== 'raw_exec') return false;
  const s = h.driverState as RawState;
  if (s.cgroup || typeof s.pid !== 'number') return false;
  const st = readProcStat(s.pid);
  return st !== undefined && st.starttime !== s.startTime;
}

async function destroy(rec: TaskRecord, store: TaskStore, stateDir: string): Promise<string> {
  store.adopt(rec.taskId);
  if (sessionNotOurs(rec.handle)) {
    store.delete(rec.taskId);
    return 'record removed (its pid belongs to another process now, so nothing was signalled)';
  }
  const driver = driverFor(rec.handle, stateDir);
  try {
    try {
      await driver.recoverTask(rec.handle);
    } catch (err) {
      // docker: a container that no longer exists is forgotten by recovery itself.
      if (store.getRecord(rec.taskId) === undefined) return 'already gone (record removed)';
      throw err;
    }
    const wasRunning = driver.inspectTask(rec.taskId).state === 'running';
    await driver.destroyTask(rec.taskId, { force: true });
    return wasRunning ? 'was running: killed, removed' : 'had exited: removed';
  } finally {
    await driver.shutdown();
  }
}

export async function gcCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    const parsed = parseCommand(argv, { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' }, 'state-dir': { type: 'string' } }, GC_HELP, io);
    if (!parsed) return 0;
    const v = parsed.values;
    const stateDir = v['state-dir'] ?? DEFAULT_STATE_DIR;
    const store = new TaskStore(stateDir);
    const { records, problems } = store.records();
    for (const p of problems) io.stderr.write(`corral gc: skipped ${p.file}: ${p.reason}\n`);
    const out = { destroyed: [] as { taskId: string; what: string }[], wouldDestroy: [] as string[], failed: [] as { taskId: string; error: string }[], skipped: [] as string[] };
    for (const rec of records) {
      if (rec.ownerStatus !== 'dead') {
        out.skipped.push(rec.taskId);
        continue;
      }
      const owner = rec.owner ? `pid ${rec.owner.pid}` : 'unknown';
      if (v['dry-run']) {
        out.wouldDestroy.push(rec.taskId);
        if (!v.json) io.stdout.write(`would destroy ${rec.taskId} (${rec.driver}; owner ${owner} is gone)\n`);
        continue;
      }
      try {
        const what = await destroy(rec, store, stateDir);
        out.destroyed.push({ taskId: rec.taskId, what });
        if (!v.json) io.stdout.write(`destroyed ${rec.taskId} (${rec.driver}; owner ${owner} is gone): ${what}\n`);
      } catch (err) {
        const msg = String((err as Error).message ?? err).split('\n')[0]!;
        out.failed.push({ taskId: rec.taskId, error: msg });
        io.stderr.write(`corral gc: ${rec.taskId}: ${msg}\n`);
      }
    }
    if (v.json) io.stdout.write(JSON.stringify(out) + '\n');
    else if (out.skipped.length > 0) io.stdout.write(`left ${out.skipped.length} task(s) whose owner still runs\n`);
    return out.failed.length > 0 ? 1 : 0;
  } catch (err) {
    return reportError(err, io.stderr);
  }
}
