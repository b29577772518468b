/**
 * run(): one awaited call for the common case, in the spirit of execa, built on the raw_exec driver
 * (not beside it): a driver of its own with a private temporary state dir, generated ids, the task's
 * stdio on pipes, a timeout and an AbortSignal that stop the task and kill its whole group, and a
 * clean-up that leaves no process, cgroup, record or fd behind whatever happened.
 *
 *   const r = await run('sh', ['-c', 'echo hi'], { resources: { memoryBytes: 64 << 20 }, timeoutMs: 5000 });
 *   r.exitCode === 0 && r.stdout === 'hi\n'
 *
 * It rejects when the task could not be started (bad options, unknown command or user, no
 * cgroups, an AbortSignal aborted before the start), and when a timeout or abort could not stop it
 * (the stop and then a plain SIGKILL of its group both failed: the error says what survived); how
 * the task ended is in the result. It never waits unboundedly for a task it was told to stop.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TaskResources } from './cgroups/types.js';
import type { ExitResult } from './drivers/contract.js';
import { RawExecDriver } from './drivers/raw_exec/driver.js';
import { AbortError, InvalidConfigError } from './errors.js';
import { native } from './native.js';
import { parseSignal, signalName } from './signals.js';

export interface RunOptions {
  /** Environment of the task, over the agent's own unless `extendEnv` is false. */
  env?: Record<string, string>;
  /** Start from this process's environment (default true, as child_process and execa do). */
  extendEnv?: boolean;
  /** Absolute working directory (default process.cwd()). */
  cwd?: string;
  /** Run as this user: a name, a uid, or "user:group" (any user the system's NSS knows). */
  user?: string;
  /** Written to the task's stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string | Uint8Array;
  /** Limits of the task's cgroup: cpuShares, cores, memoryBytes, pidsMax. */
  resources?: TaskResources;
  /** Stop the task after this many ms (then `timedOut` is true). */
  timeoutMs?: number;
  /** Aborting stops the task (then `aborted` is true); aborted before the start, run() rejects. */
  signal?: AbortSignal;
  /** Signal for a timeout or abort stop (default SIGTERM); the whole group is SIGKILLed `forceKillAfterMs` later. */
  killSignal?: string | number;
  /** Grace between killSignal and the group kill (default 2000 ms). */
  forceKillAfterMs?: number;
  /** Bytes kept of each of stdout and stderr (default 16 MiB); the rest is read and dropped, and `stdoutTruncated`/`stderrTruncated` say so. */
  maxBuffer?: number;
  /** Cgroup parent (default the driver's: `corral`, `corral.slice` on v2). */
  cgroupParent?: string;
}

export interface RunResult {
  /** null when a signal ended the task. */
  exitCode: number | null;
  /** The signal that ended the task ('SIGKILL'), or null. */
  signal: NodeJS.Signals | null;
  oomKilled: boolean;
  timedOut: boolean;
  aborted: boolean;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** From the start of the task until its main process exited. */
  durationMs: number;
  /** Peak of the task's cgroup (0 where the layout does not measure it). */
  peak: { memoryBytes: number; cpuUserNs: number; cpuSystemNs: number };
}

const DEFAULT_MAX_BUFFER = 16 * 1024 * 1024;
const DEFAULT_FORCE_KILL_AFTER_MS = 2000;
/** After the group is gone nobody can hold the pipes, except a process that got them passed outside: bounded. */
const DRAIN_BOUND_MS = 2000;

interface Checked {
  killSignal: string;
  forceKillAfterMs: number;
  maxBuffer: number;
  timeoutMs: number | undefined;
  input: Uint8Array | undefined;
}

function check(file: unknown, args: unknown, o: RunOptions): Checked {
  if (typeof file !== 'string' || file.trim() === '') throw new InvalidConfigError('file', file, 'must be a non-empty string');
  if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) throw new InvalidConfigError('args', args, 'must be an array of strings');
  if (typeof o !== 'object' || o === null) throw new InvalidConfigError('options', o, 'must be an object');
  const ms = (v: unknown, field: string, min: number): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new InvalidConfigError(field, v, `must be a number of milliseconds ≥ ${min}`);
    return v;
  };
  const maxBuffer = o.maxBuffer ?? DEFAULT_MAX_BUFFER;
  if (!Number.isSafeInteger(maxBuffer) || maxBuffer < 0) throw new InvalidConfigError('maxBuffer', o.maxBuffer, 'must be a whole number of bytes ≥ 0');
  if (o.input !== undefined && typeof o.input !== 'string' && !(o.input instanceof Uint8Array)) {
    throw new InvalidConfigError('input', o.input, 'must be a string or a Uint8Array');
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidConfigError('signal', o.signal, 'must be an AbortSignal');
  if (o.extendEnv !== undefined && typeof o.extendEnv !== 'boolean') throw new InvalidConfigError('extendEnv', o.extendEnv, 'must be true or false');
  if (o.cwd !== undefined && (typeof o.cwd !== 'string' || !path.isAbsolute(o.cwd))) throw new InvalidConfigError('cwd', o.cwd, 'must be an absolute path');
  return {
    killSignal: parseSignal(o.killSignal ?? 'SIGTERM', 'killSignal').name,
    forceKillAfterMs: ms(o.forceKillAfterMs, 'forceKillAfterMs', 0) ?? DEFAULT_FORCE_KILL_AFTER_MS,
    maxBuffer,
    timeoutMs: ms(o.timeoutMs, 'timeoutMs', 1),
    input: typeof o.input === 'string' ? Buffer.from(o.input) : o.input,
  };
}

/** Reads one end of a pipe on the event loop, keeping up to `max` bytes. */
class Capture {
  readonly done: Promise<void>;
  private chunks: Buffer[] = [];
  private kept = 0;
  truncated = false;
  private readonly socket: net.Socket;

  constructor(fd: number, private readonly max: number) {
    this.socket = new net.Socket({ fd, readable: true, writable: false });
    this.socket.on('data', (b: Buffer) => {
      const room = this.max - this.kept;
      if (b.length > room) this.truncated = true;
      if (room > 0) {
        const part = b.length > room ? b.subarray(0, room) : b;
        this.chunks.push(part);
        this.kept += part.length;
      }
    });
    this.done = new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.once('error', () => this.socket.destroy());
    });
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  close(): void {
    this.socket.destroy();
  }
}

function closeFds(fds: number[]): void {
  for (const fd of fds.splice(0)) {
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
    }
  }
}

/** Runs `file` with `args` as a raw_exec task in its own cgroup and resolves once it ended and everything of it is gone. */
export async function run(file: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<RunResult> {
  const c = check(file, args, opts);
  if (opts.signal?.aborted) throw new AbortError('run');
  const stateDir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'corral-run-'));
  const driver = new RawExecDriver({ stateDir, ...(opts.cgroupParent !== undefined ? { cgroupParent: opts.cgroupParent } : {}) });
  const childEnds: number[] = []; // the task's ends, closed in this process once it started
  const captures: Capture[] = [];
  let stdin: net.Socket | undefined;
  let started = false;
  const allocId = randomUUID();
  const id = `${allocId}-run`;
  try {
    const n = native();
    const [outR, outW] = n.pipe();
    childEnds.push(outW);
    captures.push(new Capture(outR, c.maxBuffer));
    const [errR, errW] = n.pipe();
    childEnds.push(errW);
    captures.push(new Capture(errR, c.maxBuffer));
    let inR: number | undefined;
    if (c.input !== undefined) {
      const [r, w] = n.pipe();
      inR = r;
      childEnds.push(r);
      stdin = new net.Socket({ fd: w, readable: false, writable: true });
      stdin.on('error', () => {}); // EPIPE: the task did not read all of its input, which is its business
    }
    const t0 = performance.now();
    await driver.startTask({
      id, allocId, name: 'run',
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.user !== undefined ? { user: opts.user } : {}),
      ...(opts.resources !== undefined ? { resources: opts.resources } : {}),
      driver: {
        command: file, args: [...args], workDir: opts.cwd ?? process.cwd(), inheritEnv: opts.extendEnv ?? true,
        stdoutFd: outW, stderrFd: errW, ...(inR !== undefined ? { stdinFd: inR } : {}),
      },
    });
    started = true;
    closeFds(childEnds);
    if (stdin && c.input) stdin.end(c.input);
    return await supervise(driver, id, c, opts.signal, captures, t0);
  } finally {
    closeFds(childEnds);
    stdin?.destroy();
    // A task that started was destroyed by supervise(); this only covers a throw in between.
    if (started && driver.taskIds().includes(id)) await driver.destroyTask(id, { force: true }).catch(() => {});
    for (const cap of captures) cap.close();
    await driver.shutdown();
    await fs.promises.rm(stateDir, { recursive: true, force: true });
  }
}

async function supervise(driver: RawExecDriver, id: string, c: Checked, signal: AbortSignal | undefined, captures: Capture[], t0: number): Promise<RunResult> {
  let timedOut = false;
  let aborted = false;
  let stopping: Promise<void> | undefined;
  // Ends the wait below when the task could not be stopped: run() then rejects instead of waiting forever.
  const giveUp = new AbortController();
  let stopFailure: Error | undefined;
  const stop = () => {
    stopping ??= driver.stopTask(id, { signal: c.killSignal, timeoutMs: c.forceKillAfterMs }).catch(async (err: unknown) => {
      // The stop failed (e.g. a freeze or group kill that timed out): SIGKILLs without the freezer, bounded.
      try {
        await driver.forceKill(id);
      } catch (fallbackErr) {
        stopFailure = fallbackErr as Error;
        if (stopFailure.cause === undefined) Object.defineProperty(stopFailure, 'cause', { value: err, configurable: true, writable: true });
        giveUp.abort();
      }
    });
  };
  const timer = c.timeoutMs !== undefined ? setTimeout(() => { timedOut = true; stop(); }, c.timeoutMs) : undefined;
  const onAbort = () => { aborted = true; stop(); };
  signal?.addEventListener('abort', onAbort, { once: true });
  // Aborted while the task was starting (its process may already run): an 'abort' listener added
  // after the fact never fires, so the stop starts here.
  if (signal?.aborted) onAbort();
  let exit: ExitResult;
  let durationMs: number;
  try {
    exit = await driver.waitTask(id, { signal: giveUp.signal }).catch((err: unknown) => {
      throw stopFailure ?? err;
    });
    durationMs = performance.now() - t0;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
  await stopping;
  let peak = { memoryBytes: 0, cpuUserNs: 0, cpuSystemNs: 0 };
  try {
    const s = driver.sampleStats(id); // before destroyTask removes the cgroup that holds the peaks
    peak = { memoryBytes: s.memory.maxUsageBytes, cpuUserNs: s.cpu.userNs, cpuSystemNs: s.cpu.systemNs };
  } catch {
    /* no stats on this layout */
  }
  // Kills what the main process left running, removes the cgroup and the record.
  await driver.destroyTask(id, { force: true });
  // Every writer is gone with the group: the pipes reach EOF now (bounded, see DRAIN_BOUND_MS).
  let drainTimer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(captures.map((x) => x.done)),
    new Promise<void>((resolve) => { drainTimer = setTimeout(resolve, DRAIN_BOUND_MS); }),
  ]);
  clearTimeout(drainTimer);
  const [out, err] = captures as [Capture, Capture];
  return {
    exitCode: exit.exitCode,
    signal: exit.signal === null ? null : (signalName(exit.signal) ?? null),
    oomKilled: exit.oomKilled,
    timedOut,
    aborted,
    stdout: out.text(),
    stderr: err.text(),
    stdoutTruncated: out.truncated,
    stderrTruncated: err.truncated,
    durationMs,
    peak,
  };
}
