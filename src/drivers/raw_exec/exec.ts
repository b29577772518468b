/**
 * execTask: a command run inside a task's cgroup (same user, env and cwd as the task), its output
 * captured, bounded by a timeout. The command leads its own session; on timeout it is killed with
 * its children: every process of its session or process group, or descending from it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ExecTimeoutError, InvalidConfigError } from '../../errors.js';
import { type ExitInfo, type ExitWatch, native } from '../../native.js';
import type { ExecTaskResult } from '../contract.js';
import { DEFAULT_PATH, resolveCommand } from './config.js';
import type { TaskRunner } from './handle.js';
import { type ProcStat, allPids, descendantsOf, killUntilGone, readProcStat } from './procfs.js';

export const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
/** Output kept per stream. */
export const MAX_EXEC_OUTPUT = 4 * 1024 * 1024;

export function validateExecCmd(cmd: unknown): string[] {
  if (!Array.isArray(cmd) || cmd.length === 0) throw new InvalidConfigError('cmd', cmd, 'must be a non-empty array of strings');
  cmd.forEach((c, i) => {
    if (typeof c !== 'string' || c.includes('\0')) throw new InvalidConfigError(`cmd[${i}]`, c, 'must be a string without NUL');
  });
  if (cmd[0] === '') throw new InvalidConfigError('cmd[0]', cmd[0], 'must not be empty');
  return cmd as string[];
}

/** An unlinked temp file: the child writes, we read it back. */
function tempOutput(): number {
  const p = path.join(os.tmpdir(), `corral-exec-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  fs.unlinkSync(p);
  fs.fchmodSync(fd, 0o666);
  return fd;
}

function readBack(fd: number): string {
  const size = Math.min(fs.fstatSync(fd).size, MAX_EXEC_OUTPUT);
  const buf = Buffer.alloc(size);
  let off = 0;
  while (off < size) {
    const n = fs.readSync(fd, buf, off, size - off, off);
    if (n <= 0) break;
    off += n;
  }
  return buf.subarray(0, off).toString('utf8');
}

export interface ExecTracker {
  add(close: () => void): () => void;
}

/** Runs `cmd` in the task's group and resolves with its output and exit result. */
export async function execInTask(runner: TaskRunner, cmdIn: string[], timeoutMs: number, killBoundMs: number, tracker: ExecTracker): Promise<ExecTaskResult> {
  const cmd = validateExecCmd(cmdIn);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new InvalidConfigError('timeoutMs', timeoutMs, 'must be a positive number of milliseconds');
  const st = runner.state;
  const asUser = st.uid !== process.getuid!() || st.gid !== process.getgid!();
  const file = resolveCommand(cmd[0]!, st.cwd, st.env.PATH ?? DEFAULT_PATH, { uid: st.uid, gid: st.gid, groups: st.groups });
  const outFd = tempOutput();
  let errFd = -1;
  try {
    errFd = tempOutput();
    const placement = runner.cgroup?.placement ?? {};
    const spawned = native().spawn({
      file,
      argv: cmd,
      envp: Object.entries(st.env).map(([k, v]) => `${k}=${v}`),
      cwd: st.cwd,
      ...(asUser ? { uid: st.uid, gid: st.gid, groups: st.groups } : {}),
      setsid: true,
      stdio: [-1, outFd, errFd],
      ...(placement.cgroupDir ? { cgroupDir: placement.cgroupDir } : {}),
      ...(placement.joinProcs ? { joinProcs: [...placement.joinProcs] } : {}),
    });
    const pid = spawned.pid;
    let watch: ExitWatch | undefined;
    let untrack: () => void = () => {};
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const info = await new Promise<ExitInfo | undefined>((resolve) => {
      watch = native().watchExit(spawned.pidfd, pid, true, (i) => {
        watch = undefined;
        resolve(i);
      });
      untrack = tracker.add(() => {
        // Driver shutdown: kill the exec'd command and stop waiting.
        void killTree(pid, runner, killBoundMs).catch(() => {});
        watch?.close();
        watch = undefined;
        resolve(undefined);
      });
      timer = setTimeout(() => {
        timedOut = true;
        void killTree(pid, runner, killBoundMs).catch(() => {});
      }, timeoutMs);
    });
    clearTimeout(timer);
    untrack();
    if (timedOut || !info) {
      await killTree(pid, runner, killBoundMs).catch(() => {});
      throw new ExecTimeoutError(cmd, timeoutMs);
    }
    const exitResult = info.signal !== null && info.signal !== undefined
      ? { exitCode: 128 + info.signal, signal: info.signal, oomKilled: false }
      : { exitCode: info.exitCode, signal: null, oomKilled: false };
    return { stdout: readBack(outFd), stderr: readBack(errFd), exitResult };
  } finally {
    fs.closeSync(outFd);
    if (errFd >= 0) fs.closeSync(errFd);
  }
}

/** Kills the exec'd process, its session/process group and its descendants, until none is left. */
async function killTree(pid: number, runner: TaskRunner, boundMs: number): Promise<void> {
  await killUntilGone(() => {
    const candidates = runner.cgroup ? runner.pids() : allPids();
    const stats: ProcStat[] = [];
    for (const p of candidates) {
      const s = readProcStat(p);
      if (s && s.state !== 'Z' && s.state !== 'X') stats.push(s);
    }
    const chosen = new Set(descendantsOf(pid, stats));
    for (const s of stats) if (s.session === pid || s.pgrp === pid) chosen.add(s.pid);
    return [...chosen];
  }, boundMs, `exec ${pid}`);
}
