/**
 * The cgroups layer's access to control files and waits, through the native addon (batched writes
 * and reads; freeze/kill waits off the main thread). Errors become CgroupError / CgroupTimeoutError.
 * The addon can be replaced (tests inject a fake to exercise error paths).
 */
import * as fs from 'node:fs';
import { native, type GroupKillMethod, type GroupKillResult, type NativeAddon, type NativeError, type NativeErrorInfo } from '../native.js';
import { CgroupError, CgroupTimeoutError } from '../errors.js';
import { parseSignal } from '../signals.js';

export type AddonProvider = () => NativeAddon;

export class CgroupIO {
  constructor(private readonly addon: AddonProvider = native) {}

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

  signalGroup(procsPath: string, signal: number): number {
    try {
      return this.addon().signalGroup(procsPath, signal);
    } catch (err) {
      throw CgroupError.from(err, procsPath);
    }
  }

  groupKill(method: GroupKillMethod, procsPath: string, controlDir: string, timeoutMs: number): Promise<GroupKillResult> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().groupKill({ method, procsPath, controlDir, timeoutMs }, (err, result) => {
          if (err) reject(waitError(err, controlDir, timeoutMs, 'be emptied'));
          else resolve(result ?? { signalled: 0, elapsedNs: 0 });
        });
      } catch (err) {
        reject(CgroupError.from(err, controlDir));
      }
    });
  }

  waitFrozen(controlDir: string, version: 1 | 2, frozen: boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().waitFrozen(controlDir, version, frozen, timeoutMs, (err) => {
          if (err) reject(waitError(err, controlDir, timeoutMs, frozen ? 'freeze' : 'thaw'));
          else resolve();
        });
      } catch (err) {
        reject(CgroupError.from(err, controlDir));
      }
    });
  }

  waitEmpty(procsPath: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().waitEmpty(procsPath, timeoutMs, (err) => {
          if (err) reject(waitError(err, procsPath, timeoutMs, 'become empty'));
          else resolve();
        });
      } catch (err) {
        reject(CgroupError.from(err, procsPath));
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

function waitError(err: NativeError, p: string, timeoutMs: number, phase: string): Error {
  if (err.code === 'ETIMEDOUT') {
    // groupKill says which of its phases ran out ('freeze' or 'wait-empty'); a plain wait knows its own.
    const ph = phase !== 'be emptied' ? phase : err.syscall === 'freeze' ? 'freeze' : 'become empty';
    const e = new CgroupTimeoutError(ph, p, timeoutMs);
    (e as { cause?: unknown }).cause = err;
    return e;
  }
  return CgroupError.from(err, p);
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
 * Removes cgroup directories (in the order given: children before parents), retrying on EBUSY with
 * exponential backoff on timers (never a busy loop) until `timeoutMs`. Throws the last CgroupError.
 */
export async function rmdirRetry(dirs: readonly string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 1;
  for (const d of dirs) {
    for (;;) {
      const r = tryRmdir(d);
      if (r === true) break;
      if (r.code !== 'EBUSY' || Date.now() >= deadline) throw CgroupError.from(r, d);
      await new Promise<void>((res) => setTimeout(res, Math.min(delay, Math.max(1, deadline - Date.now()))));
      delay = Math.min(delay * 2, 100);
    }
  }
}

/** A signal name or number as a number (InvalidConfigError 'signal' for an unknown one). */
export function signalNumber(sig: NodeJS.Signals | number): number {
  return parseSignal(sig).number;
}
