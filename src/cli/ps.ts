/** `corral ps [--json]`: the tasks whose handles are in the state dir, and whether they still run. */
import { parseArgs } from 'node:util';
import * as fs from 'node:fs';
import type { TaskHandle } from '../drivers/contract.js';
import { readProcStat } from '../drivers/core/proc.js';
import { DEFAULT_STATE_DIR, TaskStore } from '../store/task-store.js';
import { reportError, usageFromParseArgs } from './errors.js';
import type { RunIo } from './run.js';

export const PS_HELP = `Usage: corral ps [--json] [--state-dir DIR]

Lists the tasks whose handles are in the state directory (default ${DEFAULT_STATE_DIR}) and their
states: raw_exec tasks are "running" when their pid still belongs to the same process (same start
time), else "exited"; docker tasks are "unknown" here (ask the docker driver).

Options:
  --json            one JSON array on stdout
  --state-dir DIR   the state directory
  -h, --help        this help
`;

export interface PsRow {
  taskId: string;
  driver: string;
  name: string;
  allocId: string;
  state: 'running' | 'exited' | 'unknown';
  pid: number | null;
  startedAt: string;
  cgroup: string | null;
}

export function stateOf(h: TaskHandle): { state: PsRow['state']; pid: number | null; cgroup: string | null } {
  if (h.driver !== 'raw_exec') return { state: 'unknown', pid: null, cgroup: null };
  const s = h.driverState as { pid?: unknown; startTime?: unknown; cgroup?: { name?: string } | null };
  if (typeof s.pid !== 'number' || typeof s.startTime !== 'number') return { state: 'unknown', pid: null, cgroup: null };
  const st = readProcStat(s.pid);
  const alive = st !== undefined && st.state !== 'Z' && st.state !== 'X' && st.starttime === s.startTime;
  return { state: alive ? 'running' : 'exited', pid: s.pid, cgroup: s.cgroup?.name ?? null };
}

export async function psCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, options: { json: { type: 'boolean' }, 'state-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
    } catch (err) {
      usageFromParseArgs(err);
    }
    if (parsed.values.help) {
      io.stdout.write(PS_HELP);
      return 0;
    }
    const store = new TaskStore(parsed.values['state-dir'] ?? DEFAULT_STATE_DIR);
    const { handles, problems } = store.list();
    for (const p of problems) io.stderr.write(`corral: warning: skipped ${p.file}: ${p.reason}\n`);
    const rows: PsRow[] = handles.map((h) => ({
      taskId: h.taskId, driver: h.driver, name: h.taskName, allocId: h.allocId, startedAt: h.startedAt, ...stateOf(h),
    }));
    if (parsed.values.json) {
      io.stdout.write(JSON.stringify(rows) + '\n');
      return 0;
    }
    const table = [['TASK ID', 'DRIVER', 'NAME', 'STATE', 'PID', 'STARTED'], ...rows.map((r) => [r.taskId, r.driver, r.name, r.state, r.pid === null ? '-' : String(r.pid), r.startedAt])];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
    for (const row of table) io.stdout.write(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n');
    if (rows.length === 0 && !fs.existsSync(store.dir)) io.stderr.write(`corral: note: state directory ${store.dir} does not exist\n`);
    return 0;
  } catch (err) {
    return reportError(err, io.stderr);
  }
}
