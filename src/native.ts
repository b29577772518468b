/**
 * Typed loader for the C++ addon (native/, built by node-gyp into build/Release/corral.node).
 * This file is the contract between native/ and the TypeScript layers: every function the
 * addon exports is declared here, and nothing outside this file touches the addon directly.
 *
 * Conventions of the addon:
 * - A failing system call throws (or calls back with) an Error in Node's fs convention:
 *   `code` ('ENOENT', 'EBUSY', ...), `errno` (negative, as libuv does), `syscall`, `path`.
 * - Batch calls never throw for one bad item: they return a per-item result.
 * - Nothing that waits runs on the main thread: waits are async workers with a bound.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NativeAddonError } from './errors.js';

/** What a failed item of a batch reports; also the fields of a thrown native error. */
export interface NativeErrorInfo {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  message: string;
}

export interface NativeError extends Error, NativeErrorInfo {}

/** How groupKill empties a cgroup. */
export type GroupKillMethod =
  /** v2 with `cgroup.kill` (Linux 5.14+): write 1, then wait until `cgroup.procs` is empty. */
  | 'cgroup.kill'
  /** v1 freezer: `freezer.state` FROZEN, wait until FROZEN, SIGKILL every pid, THAWED, wait until empty. */
  | 'freezer-v1'
  /** v2 without cgroup.kill: `cgroup.freeze` 1, wait for `frozen 1` in cgroup.events, SIGKILL all, thaw, wait until empty. */
  | 'freeze-v2'
  /** No freezer at all (noCgroups fallback is elsewhere): SIGKILL every pid in rounds until empty. */
  | 'signal-loop';

export interface GroupKillOptions {
  method: GroupKillMethod;
  /** `cgroup.procs` of the group to empty (for v1: the freezer controller's group). */
  procsPath: string;
  /** Directory of the group's control files for the freeze/kill file (v1 freezer dir or v2 group dir). */
  controlDir: string;
  /** Bound on the whole operation; on expiry the callback gets an error with code 'ETIMEDOUT' and syscall 'freeze' or 'wait-empty'. */
  timeoutMs: number;
}

export interface GroupKillResult {
  /** Number of SIGKILLs delivered (0 with cgroup.kill, which does not report it). */
  signalled: number;
  /** Nanoseconds from the call until the group was seen empty. */
  elapsedNs: number;
}

export interface SpawnOptions {
  /** Absolute path of the executable (the caller resolves PATH). */
  file: string;
  argv: string[];
  /** `KEY=VALUE` strings: exactly the child's environment. */
  envp: string[];
  cwd?: string;
  uid?: number;
  gid?: number;
  /** Supplementary groups; set (to this list, possibly empty) whenever uid/gid is given. */
  groups?: number[];
  /** New session (setsid) so the task leads its own process group. */
  setsid?: boolean;
  /** With setsid: stdin (a pty slave) becomes the session's controlling terminal (TIOCSCTTY). */
  controllingTty?: boolean;
  /** fds that become the child's 0, 1, 2; -1 means /dev/null. Every other fd is closed in the child. */
  stdio: [number, number, number];
  /** v2: the cgroup directory; the child is created in it with clone3(CLONE_INTO_CGROUP). */
  cgroupDir?: string;
  /** `cgroup.procs` files the child writes itself into before execve (v1: one per controller). */
  joinProcs?: string[];
  /** Written to /proc/self/oom_score_adj in the child before execve. */
  oomScoreAdj?: number;
}

export interface SpawnResult {
  pid: number;
  /** A pidfd for the child, owned by the caller (close with closeFd, or hand to watchExit). */
  pidfd: number;
  /** How the child was placed in its cgroup: 'clone3' (CLONE_INTO_CGROUP), 'join' (wrote cgroup.procs), 'none'. */
  placement: 'clone3' | 'join' | 'none';
}

export interface Rusage {
  userUs: number;
  systemUs: number;
  maxRssKb: number;
}

export interface ExitInfo {
  /** null when the process was not our child (recovered) or was killed by a signal. */
  exitCode: number | null;
  /** Signal number that ended it, or null. */
  signal: number | null;
  /** true when we reaped it and so know how it ended. */
  reaped: boolean;
  rusage?: Rusage;
}

export interface ExitWatch {
  /** Stops watching and closes the pidfd; the callback is not called afterwards. Idempotent. */
  close(): void;
  ref(): void;
  unref(): void;
}

export interface NativeAddon {
  /** Writes value[i] to paths[i] (open O_WRONLY, one write, close). Returns one entry per item: null on success. */
  writeFiles(paths: string[], values: string[]): (NativeErrorInfo | null)[];
  /** Reads each file whole. One entry per item: the text, or the error. */
  readFiles(paths: string[]): (string | NativeErrorInfo)[];
  /** Parses a `cgroup.procs` (or `tasks`) file. Throws on error. */
  readProcs(procsPath: string): Int32Array;
  /** kill(pid, signal) for each pid. ESRCH counts as gone, not as an error. */
  killPids(pids: Int32Array, signal: number): { signalled: number; gone: number };
  /** Reads `cgroup.procs` and signals every pid once. Returns the number signalled. */
  signalGroup(procsPath: string, signal: number): number;
  /** Empties a cgroup with the given method, off the main thread, bounded by timeoutMs. */
  groupKill(opts: GroupKillOptions, callback: (err: NativeError | null, result?: GroupKillResult) => void): void;
  /** Waits (off the main thread) until `cgroup.procs` is empty, bounded; 'ETIMEDOUT' error on expiry. */
  waitEmpty(procsPath: string, timeoutMs: number, callback: (err: NativeError | null) => void): void;
  /** Waits (off the main thread) until a v1 freezer.state reads `state` or a v2 cgroup.events has `frozen 0|1`. */
  waitFrozen(controlDir: string, version: 1 | 2, frozen: boolean, timeoutMs: number, callback: (err: NativeError | null) => void): void;
  /** Spawns a process that is inside its cgroup before its first instruction (vfork-style: no page-table copy). */
  spawn(opts: SpawnOptions): SpawnResult;
  /** Calls back once when the process behind pidfd exits; reaps it (wait4) when `reap`, reporting status and rusage. Takes ownership of pidfd. */
  watchExit(pidfd: number, pid: number, reap: boolean, callback: (info: ExitInfo) => void): ExitWatch;
  pidfdOpen(pid: number): number;
  pidfdSendSignal(pidfd: number, signal: number): void;
  closeFd(fd: number): void;
  /** statfs(2) f_type of a path, e.g. 0x63677270 (cgroup2), 0x27e0eb (cgroup v1), 0x01021994 (tmpfs). */
  statfsType(path: string): number;
  /** A user through NSS (getpwnam_r/getpwuid_r, then getgrouplist), on the threadpool: null when unknown. */
  lookupUser(nameOrUid: string | number, callback: (err: NativeError | null, user?: NssUser | null) => void): void;
  /** A group through NSS (getgrnam_r/getgrgid_r), on the threadpool: null when unknown. */
  lookupGroup(nameOrGid: string | number, callback: (err: NativeError | null, group?: NssGroup | null) => void): void;
  /** lookupUser on the calling thread (a slow NSS source blocks it). */
  lookupUserSync(nameOrUid: string | number): NssUser | null;
  lookupGroupSync(nameOrGid: string | number): NssGroup | null;
  /** pipe2(O_CLOEXEC): [readFd, writeFd], both owned by the caller. */
  pipe(): [number, number];
  /** flock(fd, LOCK_EX or LOCK_SH | LOCK_NB): true when taken, false when held elsewhere. Closing the fd releases it. */
  flockTry(fd: number, exclusive: boolean): boolean;
}

export interface NssUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /** Every group of the user (getgrouplist), the primary gid included. */
  groups: number[];
}

export interface NssGroup {
  name: string;
  gid: number;
}

export const CGROUP2_SUPER_MAGIC = 0x63677270;
export const CGROUP_SUPER_MAGIC = 0x27e0eb;
export const TMPFS_MAGIC = 0x01021994;

// The package root (the directory holding binding.gyp): src/ when run from source, dist/src/ once compiled.
const PACKAGE_ROOT = [path.join(__dirname, '..'), path.join(__dirname, '..', '..')].find((d) => fs.existsSync(path.join(d, 'binding.gyp'))) ??
  path.join(__dirname, '..', '..');

let cached: NativeAddon | undefined;

/**
 * Loads the addon once, through node-gyp-build: a local build (build/Release, what `npm rebuild` or
 * `node-gyp rebuild` makes) wins, else the prebuild for this platform and libc under prebuilds/.
 * Neither is a NativeAddonError that says how to rebuild.
 */
export function native(): NativeAddon {
  if (cached) return cached;
  try {
    cached = loadBuild() as NativeAddon;
    return cached;
  } catch (err) {
    if (/^No native build was found/.test(String((err as Error)?.message))) {
      throw new NativeAddonError(
        `corral's native addon is missing: no build in ${path.join(PACKAGE_ROOT, 'build', 'Release')} and no prebuild for ` +
          `${process.platform}-${process.arch} in ${path.join(PACKAGE_ROOT, 'prebuilds')}. ` +
          `Build it with \`npm rebuild corral --build-from-source\` (or \`npx node-gyp rebuild\` in ${PACKAGE_ROOT}); ` +
          `it needs python3, make and a C++ compiler.`,
        { cause: err },
      );
    }
    throw explainLoadFailure(PACKAGE_ROOT, err);
  }
}

function loadBuild(): unknown {
  let load: (dir: string) => unknown;
  try {
    load = require('node-gyp-build') as (dir: string) => unknown;
  } catch {
    // A checkout whose node_modules predates node-gyp-build (until its next `npm ci`): the local build only.
    return require(path.join(PACKAGE_ROOT, 'build', 'Release', 'corral.node'));
  }
  return load(PACKAGE_ROOT);
}

function explainLoadFailure(p: string, err: unknown): NativeAddonError {
  const msg = String((err as Error)?.message ?? err);
  if (/NODE_MODULE_VERSION|was compiled against a different Node\.js version/.test(msg)) {
    return new NativeAddonError(
      `corral's native addon at ${p} was built for another Node.js ABI than this one ` +
        `(Node ${process.version}, ABI ${process.versions.modules}). Rebuild it with \`npm rebuild corral --build-from-source\`. (${msg})`,
      { cause: err },
    );
  }
  return new NativeAddonError(`corral's native addon at ${p} failed to load: ${msg}. Rebuild it with \`npm rebuild corral --build-from-source\`.`, { cause: err });
}

/** native/pty.cc, kept apart from NativeAddon so that fakes of the cgroup calls need not implement it. */
export interface PtyAddon {
  /** A pseudo-terminal pair (both O_CLOEXEC, caller owns both fds) with this window size. */
  openPty(rows: number, cols: number): { master: number; slave: number; path: string };
  /** TIOCSWINSZ on the master: the kernel then sends SIGWINCH to the terminal's foreground group. */
  resizePty(masterFd: number, rows: number, cols: number): void;
}

export function ptyNative(): PtyAddon {
  return native() as unknown as PtyAddon;
}
