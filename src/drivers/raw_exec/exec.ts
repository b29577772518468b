/**
 * execTask for raw_exec: a command run inside a task's cgroup (same user, env and cwd as the task),
 * its output captured, bounded by a timeout. The command leads its own session; on timeout or
 * driver shutdown it is killed with its children: every process of its session or process group,
 * or descending from it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { AbortError, ExecTimeoutError } from '../../errors.js';
import { spawnProcess, type ExitInfo, type ProcessHandle } from '../../native.js';
import type { ExecTaskResult } from '../contract.js';
import { reapedExit } from '../core/exit.js';
import { killTree } from '../../util/proc.js';
import { MAX_EXEC_OUTPUT } from '../core/task-config.js';
import { DEFAULT_PATH, resolveCommand } from './config.js';
import type { RawExecTask } from './task.js';

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

/** Runs `cmd` (validated) in the task's group and resolves with its output and exit result. */
export async function execInTask(task: RawExecTask, cmd: string[], timeoutMs: number, killBoundMs: number, signal: AbortSignal): Promise<ExecTaskResult> {
  const st = task.state;
  const asUser = st.uid !== process.getuid!() || st.gid !== process.getgid!();
  const file = resolveCommand(cmd[0]!, st.cwd, st.env.PATH ?? DEFAULT_PATH, { uid: st.uid, gid: st.gid, groups: st.groups });
  const outFd = tempOutput();
  let errFd = -1;
  try {
    errFd = tempOutput();
    const placement = task.cgroup?.placement ?? {};
    // Off the event loop and bounded by the exec's own timeout: a frozen task group is refused at
    // once (CgroupFrozenError), a command that never gets to exec is a CgroupTimeoutError.
    const spawned = await spawnProcess({
      file,
      argv: cmd,
      envp: Object.entries(st.env).map(([k, v]) => `${k}=${v}`),
      cwd: st.cwd,
      ...(asUser ? { uid: st.uid, gid: st.gid, groups: st.groups } : {}),
      setsid: true,
      stdio: [-1, outFd, errFd],
      ...(placement.cgroupDir ? { cgroupDir: placement.cgroupDir } : {}),
      ...(placement.joinProcs ? { joinProcs: [...placement.joinProcs] } : {}),
      timeoutMs: Math.min(Math.max(1, Math.ceil(timeoutMs)), 86_400_000),
    });
    const pid = spawned.pid;
    // Within a cgroup the exec'd tree is among the group's pids; without one, anywhere.
    const kill = () => killTree(pid, killBoundMs, task.cgroup ? () => task.pids() : undefined);
    let watch: ProcessHandle | undefined = spawned.process;
    let why: 'timeout' | 'shutdown' | undefined;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const info = await new Promise<ExitInfo | undefined>((resolve) => {
      spawned.process.watch(true, (i) => {
        watch = undefined;
        resolve(i);
      });
      onAbort = () => {
        // Driver shutdown: kill the exec'd command and stop waiting.
        why = 'shutdown';
        void kill().catch(() => {});
        watch?.close();
        watch = undefined;
        resolve(undefined);
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(() => {
        why ??= 'timeout';
        void kill().catch(() => {});
      }, timeoutMs);
    });
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
    if (why || !info) {
      await kill().catch(() => {});
      if (why === 'shutdown') throw new AbortError('execTask (the driver was shut down)');
      throw new ExecTimeoutError(cmd, timeoutMs);
    }
    return { stdout: readBack(outFd), stderr: readBack(errFd), exitResult: reapedExit(info.exitCode, info.signal) };
  } finally {
    fs.closeSync(outFd);
    if (errFd >= 0) fs.closeSync(errFd);
  }
}
