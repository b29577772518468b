/**
 * `corral ps [--json]`: the tasks recorded in the state dir, with their state, main pid, CPU (over a
 * short window), memory, age and command. Read-only: raw_exec tasks are looked at through /proc (the
 * pid's start time) and their recorded cgroup files; docker tasks through `docker inspect`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TaskHandle } from '../drivers/contract.js';
import { sessionMembers } from '../util/proc.js';
import { processStartTime } from '../store/owner.js';
import { DEFAULT_STATE_DIR, TaskStore } from '../store/task-store.js';
import { parseCommand } from './argv.js';
import { reportError } from './errors.js';
import type { RunIo } from './run.js';
import { formatBytes, formatDuration } from './summary.js';

export const PS_HELP = `Usage: corral ps [--json] [--state-dir DIR]

Lists the tasks recorded in the state directory (default ${DEFAULT_STATE_DIR}):
ID (a unique prefix, usable with stop/kill/stats), NAME, DRIVER, STATE, PID, CPU (percent over
0.2 s), MEMORY (current), AGE and COMMAND. A raw_exec task is "running" while its main process is
the same process (same start time) as the one started; docker tasks show the container's state.
"(orphaned)" marks a task whose owning corral process died: \`corral gc\` destroys those.

Options:
  --json            one JSON array on stdout (full ids, bytes, nanoseconds)
  --state-dir DIR   the state directory
  -h, --help        this help
`;

export interface PsRow {
  taskId: string;
  driver: string;
  name: string;
  allocId: string;
  state: string;
  pid: number | null;
  cpuPercent: number | null;
  memoryBytes: number | null;
  startedAt: string;
  ageMs: number;
  command: string;
  cgroup: string | null;
}

const CPU_WINDOW_MS = 200;

function commandOf(h: TaskHandle): string {
  const d = (h.config?.driver ?? {}) as { command?: unknown; args?: unknown; image?: unknown };
  const words = [d.image, d.command, ...(Array.isArray(d.args) ? d.args : [])].filter((w): w is string => typeof w === 'string');
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : JSON.stringify(w))).join(' ');
}

/**
 * CPU time (ns) and memory now of a raw_exec task, read from its recorded cgroup directories
 * (read-only: ps attaches to nothing and claims no record); from /proc for a task without cgroups.
 */
function usageOf(h: TaskHandle): { cpuNs: number; memoryBytes: number } | undefined {
  const s = h.driverState as { pid?: number; cgroup?: { version?: string; paths?: Record<string, string> } | null };
  const read = (f: string | undefined) => {
    if (f === undefined) return undefined;
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return undefined;
    }
  };
  const p = s.cgroup?.paths;
  if (p && s.cgroup?.version === 'v2') {
    const dir = p.unified ?? Object.values(p)[0];
    const usec = /usage_usec (\d+)/.exec(read(dir && path.join(dir, 'cpu.stat')) ?? '');
    const mem = Number(read(dir && path.join(dir, 'memory.current')) ?? NaN);
    if (!usec) return undefined;
    return { cpuNs: Number(usec[1]) * 1000, memoryBytes: Number.isFinite(mem) ? mem : NaN };
  }
  if (p) {
    const cpu = Number(read(p.cpuacct && path.join(p.cpuacct, 'cpuacct.usage')) ?? NaN);
    const mem = Number(read(p.memory && path.join(p.memory, 'memory.usage_in_bytes')) ?? NaN);
    if (!Number.isFinite(cpu)) return undefined;
    return { cpuNs: cpu, memoryBytes: mem };
  }
  if (typeof s.pid !== 'number') return undefined;
  let cpuTicks = 0;
  let rss = 0;
  for (const m of sessionMembers(s.pid)) {
    cpuTicks += m.utime + m.stime;
    rss += m.rss * 4096;
  }
  return { cpuNs: cpuTicks * 1e7, memoryBytes: rss };
}

/** State, CPU (percent over CPU_WINDOW_MS) and memory of each raw_exec task. */
async function rawExecRows(handles: TaskHandle[]): Promise<Map<string, Partial<PsRow>>> {
  const out = new Map<string, Partial<PsRow>>();
  const running = handles.filter((h) => {
    const s = h.driverState as { pid?: unknown; startTime?: unknown };
    return typeof s.pid === 'number' && processStartTime(s.pid) === s.startTime;
  });
  const t0 = Date.now();
  const first = running.map(usageOf);
  if (running.length > 0) await new Promise((r) => setTimeout(r, CPU_WINDOW_MS));
  const dt = Date.now() - t0;
  for (const h of handles) out.set(h.taskId, { state: 'exited' });
  running.forEach((h, i) => {
    const a = first[i];
    const b = usageOf(h);
    const cpu = a && b ? Math.max(0, ((b.cpuNs - a.cpuNs) / (dt * 1e6)) * 100) : null;
    out.set(h.taskId, { state: 'running', cpuPercent: cpu, memoryBytes: b && Number.isFinite(b.memoryBytes) ? b.memoryBytes : null });
  });
  return out;
}

/** The container state as Docker reports it ("running", "exited", "missing", ...). */
async function dockerStates(handles: TaskHandle[], warn: (m: string) => void): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (handles.length === 0) return out;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { createDockerClient } = require('../drivers/docker/client.js') as typeof import('../drivers/docker/client.js');
  const docker = createDockerClient();
  await Promise.all(handles.map(async (h) => {
    const id = (h.driverState as { containerId?: unknown }).containerId;
    if (typeof id !== 'string') return;
    try {
      const info = await docker.getContainer(id).inspect({ abortSignal: AbortSignal.timeout(5000) } as object);
      out.set(h.taskId, info.State?.Status ?? 'unknown');
    } catch (err) {
      const status = (err as { statusCode?: number }).statusCode;
      if (status === 404) out.set(h.taskId, 'missing');
      else warn(`cannot inspect container ${id.slice(0, 12)} of task ${h.taskId}: ${(err as Error).message.split('\n')[0]}`);
    }
  }));
  return out;
}

/** The shortest prefix of each id (at least 12 characters, as docker shows) that no other id shares. */
function shortIds(ids: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const id of ids) {
    let n = Math.min(12, id.length);
    while (n < id.length && ids.some((o) => o !== id && o.startsWith(id.slice(0, n)))) n++;
    m.set(id, id.slice(0, n));
  }
  return m;
}

export async function psCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    const parsed = parseCommand(argv, { json: { type: 'boolean' }, 'state-dir': { type: 'string' } }, PS_HELP, io);
    if (!parsed) return 0;
    const stateDir = parsed.values['state-dir'] ?? DEFAULT_STATE_DIR;
    const store = new TaskStore(stateDir);
    const { records, problems } = store.records();
    const handles = records.map((r) => r.handle);
    const orphaned = new Set(records.filter((r) => r.ownerStatus === 'dead').map((r) => r.taskId));
    const warn = (m: string) => { io.stderr.write(`corral: warning: ${m}\n`); };
    for (const p of problems) warn(`skipped ${p.file}: ${p.reason}`);
    const raw = await rawExecRows(handles.filter((h) => h.driver === 'raw_exec'));
    const docker = await dockerStates(handles.filter((h) => h.driver === 'docker'), warn);
    const now = Date.now();
    const rows: PsRow[] = handles.map((h) => {
      const s = h.driverState as { pid?: unknown; cgroup?: { name?: string } | null };
      const r = raw.get(h.taskId) ?? {};
      return {
        taskId: h.taskId, driver: h.driver, name: h.taskName, allocId: h.allocId,
        state: `${h.driver === 'docker' ? (docker.get(h.taskId) ?? 'unknown') : (r.state ?? 'unknown')}${orphaned.has(h.taskId) ? ' (orphaned: see corral gc)' : ''}`,
        pid: typeof s.pid === 'number' ? s.pid : null, cpuPercent: r.cpuPercent ?? null, memoryBytes: r.memoryBytes ?? null,
        startedAt: h.startedAt, ageMs: Math.max(0, now - Date.parse(h.startedAt)), command: commandOf(h), cgroup: s.cgroup?.name ?? null,
      };
    });
    if (parsed.values.json) {
      io.stdout.write(JSON.stringify(rows) + '\n');
      return 0;
    }
    const ids = shortIds(rows.map((r) => r.taskId));
    const table = [['ID', 'NAME', 'DRIVER', 'STATE', 'PID', 'CPU', 'MEMORY', 'AGE', 'COMMAND'], ...rows.map((r) => [
      ids.get(r.taskId)!, r.name, r.driver, r.state, r.pid === null ? '-' : String(r.pid),
      r.cpuPercent === null ? '-' : `${r.cpuPercent.toFixed(1)}%`, r.memoryBytes === null ? '-' : formatBytes(r.memoryBytes),
      formatDuration(r.ageMs), r.command.length > 60 ? `${r.command.slice(0, 59)}…` : r.command,
    ])];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
    for (const row of table) io.stdout.write(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n');
    if (rows.length === 0 && !fs.existsSync(store.dir)) io.stderr.write(`corral: note: state directory ${store.dir} does not exist\n`);
    return 0;
  } catch (err) {
    return reportError(err, io.stderr);
  }
}
