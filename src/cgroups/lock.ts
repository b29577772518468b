/**
 * The host-wide lock of a cpuset partition: every corral process using one cgroup parent takes it
 * before it reads the reservations from the tree and changes them, so two agents (or an agent and
 * `corral run`s) never hand out a core twice. It is flock(2) on a file named after the hierarchy and
 * the parent: the kernel drops it when the holder's file is closed or the holder dies (SIGKILL
 * included), so a dead holder never wedges the next one.
 *
 * The loop's way is holdAsync: LOCK_NB tries on timers (backing off from 1 ms to 20 ms), bounded by a
 * timeout that names the holder, so a waiting agent keeps serving everything else; the holder's
 * section may itself await (off-loop cgroup steps). Within one process holdAsync callers queue
 * behind each other, so only the one at the head polls the flock.
 * `hold` is the synchronous variant for the public synchronous calls (CgroupManager.create/open, for
 * callers without a loop): it waits with Atomics.wait pauses, blocking its thread, and refuses at once
 * while an asynchronous holder of this process is inside its section (waiting would deadlock).
 * Re-entrant within one lock object for synchronous sections.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupTimeoutError } from '../errors.js';
import type { AddonProvider } from './io.js';

/** Where the lock files live unless ManagerOptions.lockDir says otherwise (tmpfs: gone at reboot, like the cgroups). */
export const DEFAULT_LOCK_DIR = '/run/corral';
export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;

const pause = new Int32Array(new SharedArrayBuffer(4));
/** Lock files an asynchronous holder of this process is inside (any HostLock object: two managers of one parent share the file). */
const asyncHeldFiles = new Set<string>();
const HOLDER = Buffer.from(`pid ${process.pid}`.padEnd(23) + '\n');

/** The lock file of the partition of `parentName` in the hierarchy at `root`: the same name in every process. */
export function lockFileFor(lockDir: string, root: string, parentName: string): string {
  const enc = (s: string) => s.replace(/%/g, '%25').replace(/\//g, '%2F');
  return path.join(lockDir, `cpuset-${enc(root)}-${enc(parentName)}.lock`);
}

export class HostLock {
  private depth = 0;
  private heldFd: number | undefined;
  /** The tail of this process's holdAsync queue. */
  private queue: Promise<unknown> = Promise.resolve();
  /** An asynchronous holder is inside its section (holds the flock across awaits). */
  private asyncHeld = false;

  constructor(
    readonly file: string,
    private readonly addon: AddonProvider,
    private readonly timeoutMs = DEFAULT_LOCK_TIMEOUT_MS,
  ) {}

  /**
   * Runs `fn` holding the lock, which is taken without ever blocking the loop; releases it however
   * `fn` ends. Callers of this process run one at a time, in call order.
   */
  holdAsync<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      const fd = await this.acquireAsync();
      this.asyncHeld = true;
      asyncHeldFiles.add(this.file);
      this.depth = 1;
      this.heldFd = fd;
      try {
        return await fn();
      } finally {
        this.depth = 0;
        this.heldFd = undefined;
        this.asyncHeld = false;
        asyncHeldFiles.delete(this.file);
        fs.closeSync(fd); // closing the only description holding the flock releases it
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Runs `fn` holding the lock, waiting synchronously (see the file comment); releases it however `fn` ends. */
  hold<T>(fn: () => T): T {
    if (this.asyncHeld || asyncHeldFiles.has(this.file)) {
      throw new CgroupTimeoutError('get its cpuset lock synchronously (an asynchronous operation of this process holds it: use the asynchronous call)', this.file, 0);
    }
    if (this.depth > 0) {
      this.depth++;
      try {
        return fn();
      } finally {
        this.depth--;
      }
    }
    const fd = this.acquire();
    this.depth = 1;
    this.heldFd = fd;
    try {
      return fn();
    } finally {
      this.depth = 0;
      this.heldFd = undefined;
      fs.closeSync(fd); // closing the only description holding the flock releases it
    }
  }

  /** While held: removes the lock file (the partition is gone). Waiters notice the unlinked inode and retry. */
  unlinkHeld(): void {
    if (this.heldFd === undefined) return;
    try {
      fs.unlinkSync(this.file);
    } catch { /* already gone */ }
  }

  private acquire(): number {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const fd = this.lockOnce(deadline);
      // Taken on a file that was unlinked meanwhile (its partition removed): take the new one instead.
      if (sameInode(fd, this.file)) return this.mark(fd);
      fs.closeSync(fd);
    }
  }

  /** acquire without blocking: one LOCK_NB try per timer tick until the deadline. */
  private async acquireAsync(): Promise<number> {
    const deadline = Date.now() + this.timeoutMs;
    let delay = 1;
    for (;;) {
      // The lock dir is tmpfs (/run) by default: the open is a cheap syscall, never a disk wait.
      const fd = this.openLockFile();
      let taken = false;
      try {
        taken = this.addon().flockTry(fd, true);
      } catch (err) {
        fs.closeSync(fd);
        throw err;
      }
      if (taken) {
        if (sameInode(fd, this.file)) return this.mark(fd);
        fs.closeSync(fd); // the file was unlinked meanwhile (its partition removed): take the new one
        continue;
      }
      if (Date.now() >= deadline) {
        const who = this.holder(fd);
        fs.closeSync(fd);
        throw new CgroupTimeoutError(`get its cpuset lock (held by ${who})`, this.file, this.timeoutMs);
      }
      fs.closeSync(fd);
      await new Promise<void>((resolve) => setTimeout(resolve, Math.max(1, Math.min(delay, deadline - Date.now()))));
      delay = Math.min(delay * 2, 20);
    }
  }

  private openLockFile(): number {
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o755 });
    // Node opens with O_CLOEXEC: no spawned child can inherit (and so keep) the lock.
    return fs.openSync(this.file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  }

  private lockOnce(deadline: number): number {
    const fd = this.openLockFile();
    let delay = 0.05;
    try {
      while (!this.addon().flockTry(fd, true)) {
        if (Date.now() >= deadline) {
          throw new CgroupTimeoutError(`get its cpuset lock (held by ${this.holder(fd)})`, this.file, this.timeoutMs);
        }
        Atomics.wait(pause, 0, 0, delay);
        delay = Math.min(delay * 2, 5);
      }
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    return fd;
  }

  private mark(fd: number): number {
    // Who holds it, for the message of a process that times out waiting (diagnostics only). Fixed width
    // and in place: no truncate, no size change, so no metadata work on a disk-backed lock dir.
    try {
      fs.writeSync(fd, HOLDER, 0, HOLDER.length, 0);
    } catch { /* a read-only lock dir still locks */ }
    return fd;
  }

  private holder(fd: number): string {
    try {
      const b = Buffer.alloc(64);
      const n = fs.readSync(fd, b, 0, b.length, 0);
      return b.subarray(0, n).toString().trim() || 'an unknown process';
    } catch {
      return 'an unknown process';
    }
  }
}

function sameInode(fd: number, file: string): boolean {
  try {
    const a = fs.fstatSync(fd);
    const b = fs.statSync(file);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}
