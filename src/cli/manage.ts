/** `corral stop | kill | stats ID`: act on a task that another corral process runs (see task-ref.ts). */
import type { TaskResourceUsage } from '../drivers/contract.js';
import { parseSignal } from '../signals.js';
import { DEFAULT_STATE_DIR } from '../store/task-store.js';
import { parseDurationMs } from '../util/units.js';
import { parseCommand } from './argv.js';
import { UsageError, reportError } from './errors.js';
import type { RunIo } from './run.js';
import { formatBytes, formatDuration } from './summary.js';
import { withStoredTask } from './task-ref.js';

const COMMON = { 'state-dir': { type: 'string' } } as const;
const STATE_DIR_HELP = `  --state-dir DIR     the state directory the task's corral uses (default ${DEFAULT_STATE_DIR})\n  -h, --help          this help\n`;

export const STOP_HELP = `Usage: corral stop [--signal SIG] [--timeout DUR] [--state-dir DIR] ID

Stops a task that a corral run (or agent) started: SIG (default SIGTERM) to its main process, then
after the timeout (default 5s) a kill of its whole group. Its owner then removes its cgroup and record.
ID is the task id, a unique prefix of it (the first characters of its alloc id), or its name.

Options:
  --signal SIG        the graceful signal (default SIGTERM)
  --timeout DUR       grace before the group kill (default 5s; 0 kills at once)
${STATE_DIR_HELP}`;

export const KILL_HELP = `Usage: corral kill [--signal SIG] [--state-dir DIR] ID

Sends a signal (default SIGKILL) to the main process of a task that a corral run (or agent) started.

Options:
  -s, --signal SIG    the signal (name like SIGHUP, HUP, hup, or number)
${STATE_DIR_HELP}`;

export const STATS_HELP = `Usage: corral stats [--json] [--once] [--interval DUR] [--state-dir DIR] ID

A task's CPU and memory until it ends (or Ctrl-C): one line rewritten in place on a terminal, one
line per sample otherwise, one JSON object per line with --json.

Options:
  --json              JSON lines (the driver's TaskResourceUsage)
  --once              one sample (measured over the interval) and exit
  --interval DUR      time between samples (default 1s)
${STATE_DIR_HELP}`;

type Parsed = { values: Record<string, string | boolean | undefined>; positionals: string[] };

/** The command's options (plus --state-dir and --help) and its positionals; undefined once the help is printed. */
function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>, help: string, io: RunIo): Parsed | undefined {
  return parseCommand(argv, { ...COMMON, ...options }, help, io, { positionals: true }) as Parsed | undefined;
}

function oneId(positionals: string[], cmd: string): string {
  if (positionals.length !== 1) throw new UsageError(`corral ${cmd} takes one task ID (got ${positionals.length})`);
  return positionals[0]!;
}

function duration(flag: string, v: string | boolean | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const ms = typeof v === 'string' ? parseDurationMs(v) : undefined;
  if (ms === undefined) throw new UsageError(`${flag} ${JSON.stringify(v)}: must be a duration like 5s or 500ms`);
  return ms;
}

function signalFlag(v: string | boolean | undefined, dflt: string): string {
  try {
    return parseSignal(typeof v === 'string' ? v : dflt, 'signal').name;
  } catch {
    throw new UsageError(`--signal ${JSON.stringify(v)}: unknown signal (use a name like SIGTERM, TERM, hup, or a number)`);
  }
}

/** Errors after parsing are the task's state (not found, exited), not usage: exit 1. */
function fail(err: unknown, io: RunIo): number {
  const code = reportError(err, io.stderr);
  return err instanceof UsageError ? code : 1;
}

export async function stopCommand(argv: string[], io: RunIo): Promise<number> {
  try {
    const p = parse(argv, { signal: { type: 'string', short: 's' }, timeout: { type: 'string' } }, STOP_HELP, io);
    if (!p) return 0;
    const id = oneId(p.positionals, 'stop');
    const signal = signalFlag(p.values.signal, 'SIGTERM');
    const timeoutMs = duration('--timeout', p.values.timeout, 5000);
    return await withStoredTask(p.values['state-dir'] as string | undefined, id, async (driver, h) => {
      const before = driver.inspectTask(h.taskId);
      if (before.state !== 'running') {
        io.stderr.write(`corral: task ${h.taskId} is not running${before.exitResult?.err ? ` (${before.exitResult.err})` : ''}\n`);
        return 1;
      }
      await driver.stopTask(h.taskId, { signal, timeoutMs });
      io.stdout.write(`${h.taskId}\n`);
      return 0;
    });
  } catch (err) {
    return fail(err, io);
  }
}

export async function killCommand(argv: string[], io: RunIo): Promise<number> {
  try {
    const p = parse(argv, { signal: { type: 'string', short: 's' } }, KILL_HELP, io);
    if (!p) return 0;
    const id = oneId(p.positionals, 'kill');
    const signal = signalFlag(p.values.signal, 'SIGKILL');
    return await withStoredTask(p.values['state-dir'] as string | undefined, id, async (driver, h) => {
      await driver.signalTask(h.taskId, signal);
      io.stdout.write(`${h.taskId}\n`);
      return 0;
    });
  } catch (err) {
    return fail(err, io);
  }
}

export function statsLine(id: string, s: TaskResourceUsage): string {
  const mem = s.memory.usageBytes;
  return `${id}  CPU ${s.cpu.percent.toFixed(1).padStart(5)}%  MEM ${formatBytes(mem).padStart(10)}  peak ${formatBytes(s.memory.maxUsageBytes)}  ` +
    `cpu time ${formatDuration(s.cpu.totalNs / 1e6)}`;
}

export async function statsCommand(argv: string[], io: RunIo): Promise<number> {
  try {
    const p = parse(argv, { json: { type: 'boolean' }, once: { type: 'boolean' }, interval: { type: 'string' } }, STATS_HELP, io);
    if (!p) return 0;
    const id = oneId(p.positionals, 'stats');
    const intervalMs = duration('--interval', p.values.interval, 1000);
    if (intervalMs <= 0) throw new UsageError(`--interval ${JSON.stringify(p.values.interval)}: must be more than 0`);
    const live = !p.values.json && (io.stdout as NodeJS.WriteStream).isTTY === true;
    const ac = new AbortController();
    const onSig = () => ac.abort();
    if (!io.inProcess) { process.once('SIGINT', onSig); process.once('SIGTERM', onSig); }
    try {
      return await withStoredTask(p.values['state-dir'] as string | undefined, id, async (driver, h) => {
        let n = 0;
        let first: TaskResourceUsage | undefined;
        const show = (s: TaskResourceUsage) => {
          if (p.values.json) io.stdout.write(JSON.stringify(s) + '\n');
          else io.stdout.write(live ? `\r\x1b[K${statsLine(h.taskId, s)}` : `${statsLine(h.taskId, s)}\n`);
        };
        try {
          for await (const s of driver.taskStats(h.taskId, { intervalMs, signal: ac.signal })) {
            n++;
            // The first sample has no interval to measure CPU over; --once shows the second.
            if (p.values.once && n === 1) {
              first = s;
              continue;
            }
            show(s);
            if (p.values.once) break;
          }
        } catch (err) {
          if ((err as { code?: string }).code !== 'ABORT_ERR') throw err;
        }
        // The task ended (or is not running) after one sample: --once still shows what there is.
        if (p.values.once && n === 1 && first) show(first);
        if (live) io.stdout.write('\n');
        return 0;
      });
    } finally {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
  } catch (err) {
    return fail(err, io);
  }
}
