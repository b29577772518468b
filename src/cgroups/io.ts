/**
 * The cgroups layer's access to control files and waits, through the native addon (batched writes
 * and reads; group creation off the loop with applyAsync; freeze/kill waits as events on the loop,
 * see waits.ts). Errors become CgroupError / CgroupTimeoutError.
 * The addon can be replaced (tests inject a fake to exercise error paths).
 */
import * as fs from 'node:fs';
import { native, type FsOp, type NativeAddon, type NativeErrorInfo, type RecordFileAddon } from '../native.js';
import { CgroupError } from '../errors.js';
import { parseSignal } from '../signals.js';
import { GroupOps, type GroupKillMethod, type GroupKillResult } from './waits.js';

export type { GroupKillMethod, GroupKillResult } from './waits.js';
export type AddonProvider = () => NativeAddon;

export class CgroupIO {
  private readonly ops: GroupOps;
  constructor(private readonly addon: AddonProvider = native) {
    this.ops = new GroupOps(addon);
  }

  get native(): NativeAddon {
    return this.addon();
  }

  /** Writes every pair in one native call, in order; throws a CgroupError for the first item that failed. */
  writeAll(writes: ReadonlyArray<readonly [string, string]>): void {
    if (writes.length === 0) return;
    const res = this.addon().writeFiles(writes.map((w) => w[0]), writes.map((w) => w[1]));
    for (let i = 0; i < res.length; i++) {
      const r = res[i];
      if (r) throw errorFromInfo(r, 'write', writes[i]![0], `writing ${JSON.stringify(writes[i]![1])} to ${writes[i]![0]}`);
    }
  }

  /** Writes every pair in one native call and returns the failures (for best-effort undo paths). */
  writeSome(writes: ReadonlyArray<readonly [string, string]>): CgroupError[] {
    if (writes.length === 0) return [];
    const res = this.addon().writeFiles(writes.map((w) => w[0]), writes.map((w) => w[1]));
    const out: CgroupError[] = [];
    res.forEach((r, i) => { if (r) out.push(errorFromInfo(r, 'write', writes[i]![0])); });
    return out;
  }

  /** Reads every file in one native call: the text, or the CgroupError of that item. */
  readAll(paths: readonly string[]): (string | CgroupError)[] {
    if (paths.length === 0) return [];
    return this.addon().readFiles([...paths]).map((r, i) => (typeof r === 'string' ? r : errorFromInfo(r, 'read', paths[i]!)));
  }

  /** Reads one file; throws CgroupError. */
  read(p: string): string {
    const r = this.readAll([p])[0]!;
    if (typeof r !== 'string') throw r;
    return r;
  }

  /** Reads one file, or undefined when it cannot be read. */
  readMaybe(p: string): string | undefined {
    const r = this.readAll([p])[0];
    return typeof r === 'string' ? r : undefined;
  }

  readProcs(procsPath: string): number[] {
    try {
      return Array.from(this.addon().readProcs(procsPath));
    } catch (err) {
      throw CgroupError.from(err, procsPath);
    }
  }

  /** Signals every member (each confirmed through a pidfd). Returns the number signalled. */
  signalGroup(procsPath: string, signal: number): number {
    return this.ops.signal(procsPath, signal);
  }

  /** One control-file write off the loop (a freeze or thaw: the kernel takes the cgroup or freezer mutex). */
  writeControl(p: string, value: string): Promise<void> {
    return this.ops.writeAsync(p, value);
  }

  /** Empties a group with `method`, bounded by timeoutMs from the call; waits are loop events. */
  groupKill(method: GroupKillMethod, procsPath: string, controlDir: string, timeoutMs: number): Promise<GroupKillResult> {
    return this.ops.groupKill(method, procsPath, controlDir, timeoutMs);
  }

  /**
   * Until a v1 freezer.state reads FROZEN/THAWED or a v2 cgroup.events has frozen 1/0; CgroupTimeoutError on expiry.
   * `rewrite` (v1 freeze): keep writing FROZEN, with a THAWED now and then, since a v1 group whose members
   * fork can stay FREEZING until the write is repeated (as runc does).
   */
  async waitFrozen(controlDir: string, version: 1 | 2, frozen: boolean, timeoutMs: number, opts: { rewrite?: boolean } = {}): Promise<void> {
    return this.ops.waitFrozen(controlDir, version, frozen, timeoutMs, opts);
  }

  /** Until the group's cgroup.procs is empty; CgroupTimeoutError on expiry. */
  async waitEmpty(procsPath: string, timeoutMs: number): Promise<void> {
    return this.ops.waitEmpty(procsPath, timeoutMs);
  }

  /** applyAsync on this thread (for the synchronous API): the same steps, errors and `index`. */
  applySync(ops: readonly FsOp[]): void {
    ops.forEach((op, index) => {
      let err: CgroupError | undefined;
      if (op[0] === 'write') {
        const r = this.addon().writeFiles([op[1]], [op[2]])[0];
        if (r) err = errorFromInfo(r, 'write', op[1], `writing ${JSON.stringify(op[2])} to ${op[1]}`);
      } else if (op[0] === 'create') {
        try {
          (this.addon() as unknown as RecordFileAddon).writeRecord(op[3], op[1], op[2], true);
        } catch (e) {
          err = CgroupError.from(e, op[1]);
        }
      } else {
        try {
          if (op[0] === 'mkdir') fs.mkdirSync(op[1]);
          else if (op[0] === 'rmdir') fs.rmdirSync(op[1]);
          else if (op[0] === 'unlink') fs.rmSync(op[1], { force: true });
          else if (fs.existsSync(op[1])) throw Object.assign(new Error(`EEXIST: ${op[1]} exists`), { code: 'EEXIST', errno: -17, syscall: 'stat', path: op[1] });
        } catch (e) {
          err = CgroupError.from(e, op[1]);
        }
      }
      if (err) {
        (err as { index?: number }).index = index;
        throw err;
      }
    });
  }

  /** Each directory made unless it exists, in order, off the loop (one pool job each). */
  async mkdirsAsync(dirs: readonly string[]): Promise<void> {
    for (const d of dirs) {
      try {
        await this.applyAsync([['mkdir', d]]);
      } catch (err) {
        if ((err as CgroupError).code !== 'EEXIST') throw err;
      }
    }
  }

  /**
   * mkdir / write / rmdir / absent / create / unlink steps in order, off the event loop (libuv pool): cgroup creation and its
   * limit writes can stall in the kernel. Throws the CgroupError of the first failed step (later
   * steps did not run); `index` on it says which.
   */
  applyAsync(ops: readonly FsOp[]): Promise<void> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().applyAsync([...ops], (err) => {
          if (!err) return resolve();
          const op = ops[err.index];
          const e = CgroupError.from(err, op?.[1] ?? '');
          (e as { index?: number }).index = err.index;
          reject(e);
        });
      } catch (err) {
        reject(err);
      }
    });
  }
}

/** A native per-item error (or fs error) as a CgroupError with errno fields. */
export function errorFromInfo(info: NativeErrorInfo, syscall: string, p: string, what?: string): CgroupError {
  const code = info.code || 'EIO';
  const msg = `${code}: ${what ?? `${info.syscall || syscall} ${p}`} failed${info.message ? ` (${info.message})` : ''}`;
  return new CgroupError(code, Math.abs(info.errno ?? 0), info.syscall || syscall, info.path ?? p, msg);
}

/** mkdir of a cgroup directory (a cheap cgroupfs syscall; sync is fine on the main thread). */
export function mkdirCg(p: string): void {
  try {
    fs.mkdirSync(p);
  } catch (err) {
    throw CgroupError.from(err, p);
  }
}

/** mkdir that accepts an existing directory. Returns true when it created it. */
export function ensureDirCg(p: string): boolean {
  try {
    fs.mkdirSync(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw CgroupError.from(err, p);
  }
}

export function exists(p: string): boolean {
  return fs.existsSync(p);
}

/** Subdirectories of a cgroup (its child groups); [] when it does not exist. */
export function childGroups(dir: string): string[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return [];
  }
}

/** One rmdir attempt: true when removed or already gone; the error otherwise. */
export function tryRmdir(p: string): true | NodeJS.ErrnoException {
  try {
    fs.rmdirSync(p);
    return true;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return true;
    return e;
  }
}

/**
 * Removes cgroup directories (in the order given: children before parents) off the event loop: the
 * rmdirs run on the libuv pool in one batch; EBUSY (exits still finishing) is retried from that
 * directory on, on timers with exponential backoff (never a busy loop), until `timeoutMs`. A
 * directory already gone counts as removed. Throws the last CgroupError.
 */
export async function rmdirRetryAsync(io: CgroupIO, dirs: readonly string[], timeoutMs: number, after: readonly FsOp[] = []): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 1;
  let from = 0;
  for (;;) {
    if (from >= dirs.length && after.length === 0) return;
    try {
      // `after` rides in the job of the last rmdir: it runs only once every directory is gone.
      await io.applyAsync([...dirs.slice(from).map((d) => ['rmdir', d] as const), ...after]);
      return;
    } catch (err) {
      const e = err as CgroupError & { index?: number };
      const at = from + (e.index ?? 0);
      if (at >= dirs.length) throw err; // one of `after`'s steps
      if (e.code === 'ENOENT') { from = at + 1; continue; }
      if (e.code !== 'EBUSY' || Date.now() >= deadline) throw err;
      from = at;
      await new Promise<void>((res) => setTimeout(res, Math.min(delay, Math.max(1, deadline - Date.now()))));
      delay = Math.min(delay * 2, 100);
    }
  }
}

/** A signal name or number as a number (InvalidConfigError 'signal' for an unknown one). */
export function signalNumber(sig: NodeJS.Signals | number): number {
  return parseSignal(sig).number;
}
