/** `corral run [options] -- CMD [ARGS...]`: one task, its output on the terminal, its exit code as ours. */
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { parseCpuList } from '../cgroups/cpulist.js';
import { validateAllocId, validateTaskName } from '../cgroups/names.js';
import type { TaskResources } from '../cgroups/types.js';
import type { ExitResult, TaskDriver, TaskResourceUsage } from '../drivers/contract.js';
import { DEFAULT_PATH } from '../drivers/raw_exec/config.js';
import { parseSignal } from '../signals.js';
import { DEFAULT_STATE_DIR } from '../store/task-store.js';
import { parseDurationMs, parseSizeBytes } from '../util/units.js';
import { createCliDriver, parseDriverKind, taskConfigFor } from './drivers.js';
import { UsageError, reportError, usageFromParseArgs } from './errors.js';

export const RUN_HELP = `Usage: corral run [options] -- CMD [ARGS...]

Runs one task (raw_exec: CMD on this host, in its own cgroup) with its output on this terminal,
and exits with its exit code (128+n when signal n ended it). Ctrl-C or SIGTERM stops it gracefully:
the kill signal, then after the kill timeout a kill of its whole group. When corral returns, no
process and no cgroup of the task remain.

Options:
  --cores LIST          reserve these cores for the task ("0", "2-3", "0,2")
  --cpu-shares N        relative CPU weight (2..262144)
  --memory SIZE         hard memory limit, e.g. 256M, 1G
  --pids-max N          max processes/threads in the task
  --env K=V             environment variable (repeatable). The task gets PATH and these only,
                        unless --inherit-env
  --inherit-env         pass corral's own environment to the task (under the --env values)
  --cwd DIR             working directory (default: the current one)
  --user USER           run as USER (name, uid, or user:group)
  --kill-signal SIG     signal for a graceful stop (default SIGTERM; TERM, sigint, 2 also accepted)
  --kill-timeout DUR    grace before the group kill, e.g. 5s, 500ms (default 5s)
  --name NAME           task name (default: "run")
  --alloc-id UUID       allocation id (default: a new UUID)
  --no-cgroups          track the task by session/process group instead of a cgroup (no limits)
  --cgroup-parent NAME  cgroup parent (default corral, or corral.slice on cgroups v2)
  --state-dir DIR       where the task handle is kept while it runs (default ${DEFAULT_STATE_DIR})
  --driver KIND         raw_exec (default) or docker
  --image IMAGE         docker: the image (CMD then overrides its command)
  --json                at the end, print {"exitResult", "peak"} as JSON on stdout (the task's stdout
                        then goes to stderr, so stdout holds only the JSON)
  -h, --help            this help
`;

const OPTIONS = {
  cores: { type: 'string' },
  'cpu-shares': { type: 'string' },
  memory: { type: 'string' },
  'pids-max': { type: 'string' },
  env: { type: 'string', multiple: true },
  'inherit-env': { type: 'boolean' },
  cwd: { type: 'string' },
  user: { type: 'string' },
  'kill-signal': { type: 'string' },
  'kill-timeout': { type: 'string' },
  name: { type: 'string' },
  'alloc-id': { type: 'string' },
  'no-cgroups': { type: 'boolean' },
  'cgroup-parent': { type: 'string' },
  'state-dir': { type: 'string' },
  driver: { type: 'string' },
  image: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function intFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v.trim())) throw new UsageError(`--${name} must be a whole number, not ${JSON.stringify(v)}`);
  return Number(v);
}

export interface RunIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export async function runCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    return reportError(toUsage(err), io.stderr);
  }
  const v = parsed.values;
  if (v.help) {
    io.stdout.write(RUN_HELP);
    return 0;
  }
  let spec;
  let kind;
  let killSignal: string;
  let killTimeoutMs: number;
  try {
    kind = parseDriverKind(v.driver);
    const [command, ...args] = parsed.positionals;
    if (command === undefined && kind === 'raw_exec') throw new UsageError('missing the command to run: corral run [options] -- CMD [ARGS...]');
    if (v.image !== undefined && kind !== 'docker') throw new UsageError('--image needs --driver docker');
    const env: Record<string, string> = { PATH: process.env.PATH || DEFAULT_PATH };
    for (const kv of v.env ?? []) {
      const i = kv.indexOf('=');
      if (i <= 0) throw new UsageError(`--env wants K=V, not ${JSON.stringify(kv)}`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    if (kind === 'docker') delete env.PATH;
    const resources: TaskResources = {};
    if (v.cores !== undefined) resources.cores = parseCpuList(v.cores, '--cores');
    const shares = intFlag('cpu-shares', v['cpu-shares']);
    if (shares !== undefined) resources.cpuShares = shares;
    if (v.memory !== undefined) {
      const m = parseSizeBytes(v.memory);
      if (m === undefined) throw new UsageError(`--memory wants a size like 256M or 1G, not ${JSON.stringify(v.memory)}`);
      resources.memoryBytes = m;
    }
    const pids = intFlag('pids-max', v['pids-max']);
    if (pids !== undefined) resources.pidsMax = pids;
    killSignal = parseSignal(v['kill-signal'] ?? 'SIGTERM', '--kill-signal').name;
    const kt = v['kill-timeout'] === undefined ? 5000 : parseDurationMs(v['kill-timeout']);
    if (kt === undefined) throw new UsageError(`--kill-timeout wants a duration like 5s or 500ms, not ${JSON.stringify(v['kill-timeout'])}`);
    killTimeoutMs = kt;
    const allocId = validateAllocId(v['alloc-id'] ?? randomUUID(), '--alloc-id');
    const name = validateTaskName(v.name ?? 'run', '--name');
    spec = {
      id: `${allocId}-${name}`, allocId, name, env, ...(v.user !== undefined ? { user: v.user } : {}), cwd: v.cwd ?? process.cwd(),
      command: command ?? '', args, ...(v.image !== undefined ? { image: v.image } : {}), inheritEnv: !!v['inherit-env'], json: !!v.json, resources,
    };
  } catch (err) {
    return reportError(err, io.stderr);
  }
  return execute(kind, spec, { killSignal, killTimeoutMs, stateDir: v['state-dir'], noCgroups: !!v['no-cgroups'], cgroupParent: v['cgroup-parent'], json: !!v.json }, io);
}

function toUsage(err: unknown): unknown {
  try {
    usageFromParseArgs(err);
  } catch (e) {
    return e;
  }
  return err;
}

interface ExecOpts {
  killSignal: string;
  killTimeoutMs: number;
  stateDir: string | undefined;
  noCgroups: boolean;
  cgroupParent: string | undefined;
  json: boolean;
}

async function execute(kind: ReturnType<typeof parseDriverKind>, spec: Parameters<typeof taskConfigFor>[1], o: ExecOpts, io: RunIo): Promise<number> {
  let driver: TaskDriver | undefined;
  let started = false;
  let stopRequested = 0;
  let stopping: Promise<void> | undefined;
  const statsAc = new AbortController();
  const peak = { memoryBytes: 0, cpuUserNs: 0, cpuSystemNs: 0, cpuTotalNs: 0 };
  const track = (s: TaskResourceUsage) => {
    peak.memoryBytes = Math.max(peak.memoryBytes, s.memory.maxUsageBytes, s.memory.usageBytes);
    peak.cpuUserNs = Math.max(peak.cpuUserNs, s.cpu.userNs);
    peak.cpuSystemNs = Math.max(peak.cpuSystemNs, s.cpu.systemNs);
    peak.cpuTotalNs = Math.max(peak.cpuTotalNs, s.cpu.totalNs);
  };
  const stopNow = () => {
    if (!started || !driver) return;
    const timeoutMs = stopRequested > 1 ? 0 : o.killTimeoutMs;
    const p = driver.stopTask(spec.id, { timeoutMs, signal: o.killSignal }).catch((err) => {
      if ((err as { code?: string }).code !== 'ABORT_ERR') reportError(err, io.stderr);
    });
    stopping = stopping ? Promise.all([stopping, p]).then(() => {}) : p;
  };
  // Ctrl-C / SIGTERM / SIGHUP: the kill signal, then the group kill after the timeout; a second one kills at once.
  const requestStop = (sig: NodeJS.Signals) => {
    stopRequested++;
    if (stopRequested === 1) io.stderr.write(`corral: ${sig}: stopping the task (${o.killSignal}, group kill after ${o.killTimeoutMs} ms)\n`);
    else io.stderr.write('corral: killing the task now\n');
    stopNow();
  };
  const onSigint = () => requestStop('SIGINT');
  const onSigterm = () => requestStop('SIGTERM');
  const onSighup = () => requestStop('SIGHUP');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  process.on('SIGHUP', onSighup);
  let code = 1;
  try {
    driver = createCliDriver(kind, {
      ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}), noCgroups: o.noCgroups,
      ...(o.cgroupParent !== undefined ? { cgroupParent: o.cgroupParent } : {}),
    });
    const cfg = taskConfigFor(kind, spec);
    await driver.startTask(cfg);
    started = true;
    if (stopRequested > 0) stopNow();
    const sampler = (async () => {
      try {
        for await (const s of driver.taskStats(spec.id, { intervalMs: 500, signal: statsAc.signal })) track(s);
      } catch {
        /* stats are best effort */
      }
    })();
    const result: ExitResult = await driver.waitTask(spec.id);
    statsAc.abort();
    await sampler;
    const sampleStats = (driver as { sampleStats?: (id: string) => TaskResourceUsage }).sampleStats;
    if (typeof sampleStats === 'function') {
      try {
        track(sampleStats.call(driver, spec.id));
      } catch {
        /* best effort */
      }
    }
    if (stopping) await stopping;
    code = exitCodeOf(result);
    if (o.json) io.stdout.write(JSON.stringify({ taskId: spec.id, allocId: spec.allocId, exitResult: result, peak }) + '\n');
  } catch (err) {
    code = reportError(err, io.stderr);
  } finally {
    statsAc.abort();
    if (driver) {
      if (started) {
        await driver.destroyTask(spec.id, { force: true }).catch((err) => {
          code = code === 0 ? 1 : code;
          reportError(err, io.stderr);
        });
      }
      await driver.shutdown();
    }
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    process.off('SIGHUP', onSighup);
  }
  return code;
}

/** The exit code corral run returns for a task's result: its code, 128+n for signal n, 1 when unknown. */
export function exitCodeOf(r: ExitResult): number {
  if (r.signal !== null && r.signal !== undefined && r.signal > 0) return 128 + r.signal;
  if (r.exitCode !== null && r.exitCode !== undefined) return r.exitCode;
  return 1;
}
