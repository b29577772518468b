/**
 * Typed loader for the C++ addon (native/, built by node-gyp into build/Release/corral.node).
 * This file is the contract between native/ and the TypeScript layers: every function the
 * addon exports is declared here, and nothing outside this file touches the addon directly.
 *
 * Conventions of the addon:
 * - A failing system call throws (or calls back with) an Error in Node's fs convention:
 *   `code` ('ENOENT', 'EBUSY', ...), `errno` (negative, as libuv does), `syscall`, `path`.
 * - Batch calls never throw for one bad item: they return a per-item result.
 * - Nothing blocks the event loop: spawn runs on a thread of its own and is bounded; cgroup creation
 *   (applyAsync) runs on the libuv pool; group waits are events on the loop (watchEvents + timers in
 *   src/cgroups/io.ts), holding no thread.
 * - No fd number crosses into TypeScript: a process is a ProcessHandle that owns its pidfd.
 * - Arguments are checked strictly: integers in range or a TypeError (no NaN-to-0, no unchecked lengths).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupFrozenError, CgroupTimeoutError, NativeAddonError } from './errors.js';

/** What a failed item of a batch reports; also the fields of a thrown native error. */
export interface NativeErrorInfo {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  message: string;
}

export interface NativeError extends Error, NativeErrorInfo {}

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
  /**
   * Bound on the whole spawn (1..86400000). On expiry the callback gets an Error with code
   * 'ETIMEDOUT', syscall 'spawn' and path = the group, and the child (if any) is killed and reaped
   * by the spawn thread once the kernel lets it go.
   */
  timeoutMs: number;
  /**
   * A line appended to `file` (one write) by the spawn's own thread once the child has exec'd, with
   * every `\x01P` replaced by the child's pid and every `\x01T` by its start time: a write-ahead
   * record that says "running" without a further hop off the loop. Its failure does not fail the
   * spawn (SpawnResult.recordError).
   */
  record?: { file: string; text: string };
}

export interface SpawnResult {
  pid: number;
  /** How the child was placed in its cgroup: 'clone3' (CLONE_INTO_CGROUP), 'join' (wrote cgroup.procs), 'none'. */
  placement: 'clone3' | 'join' | 'none';
  /** Owns the child's pidfd: watch it, signal through it, close it. */
  process: ProcessHandle;
  /** Field 22 of the child's /proc/<pid>/stat (clock ticks after boot), read right after the exec. */
  startTime?: number;
  /** SpawnOptions.record's append failed (the process runs; the record does not say so). */
  recordError?: NativeError;
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

/**
 * One process behind one pidfd, owned by this object for its whole life. After the exit was
 * delivered (or close()), the pidfd is closed and signal() throws ESRCH.
 */
export interface ProcessHandle {
  readonly pid: number;
  /** true once closed (exit delivered, close(), or env teardown). */
  readonly closed: boolean;
  /** Calls back once when the process exits, then closes; reaps it (wait4) when `reap`. Once per handle. */
  watch(reap: boolean, callback: (info: ExitInfo) => void): void;
  /** pidfd_send_signal: never reaches a reused pid. ESRCH when the process is gone. */
  signal(signal: number): void;
  /** Stops watching and closes the pidfd (does not reap); the callback is not called afterwards. Idempotent. */
  close(): void;
  ref(): void;
  unref(): void;
}

/** A kernel-notification watch on a cgroup2 `cgroup.events` file; owns its fd. */
export interface EventsWatch {
  close(): void;
  ref(): void;
  unref(): void;
}

/**
 * One step of applyAsync. `absent` fails with EEXIST (syscall 'stat') when the path exists. `create`
 * [path, text, tmp] puts a new whole file in place exclusively: written to `tmp`, then linked (EEXIST,
 * syscall 'link', when `path` exists); the temp file never survives. `unlink` removes a file (one
 * already gone counts as removed).
 */
export type FsOp = readonly ['mkdir' | 'rmdir' | 'absent' | 'unlink', string] | readonly ['write', string, string] | readonly ['create', string, string, string];

export interface NativeAddon {
  /** Writes value[i] to paths[i] (open O_WRONLY, one write, close). Returns one entry per item: null on success. */
  writeFiles(paths: string[], values: string[]): (NativeErrorInfo | null)[];
  /** Reads each file whole. One entry per item: the text, or the error. */
  readFiles(paths: string[]): (string | NativeErrorInfo)[];
  /** Parses a `cgroup.procs` (or `tasks`) file. Throws on error. */
  readProcs(procsPath: string): Int32Array;
  /**
   * mkdir / write / rmdir / absent / create / unlink steps in order on the libuv pool (cgroup creation and limits off the loop);
   * stops at the first failure: an Error with errno fields and `index` of the failed step.
   */
  applyAsync(ops: FsOp[], callback: (err: (NativeError & { index: number }) | null) => void): void;
  /** Signals every process in `cgroup.procs`, each confirmed a member through a pidfd (never a reused pid). */
  signalGroup(procsPath: string, signal: number): { signalled: number; gone: number };
  /**
   * A group kill's steps on corral's own threads (neither the loop nor the libuv pool, see
   * native/control.cc): one control-file write, one read, one confirmed signal of every member.
   */
  controlWrite(path: string, value: string, callback: (err: NativeError | null) => void): void;
  controlRead(path: string, callback: (err: NativeError | null, text?: string) => void): void;
  controlSignalGroup(procsPath: string, signal: number, callback: (err: NativeError | null, result?: { signalled: number; gone: number }) => void): void;
  /** Calls back on the loop each time the kernel notifies a change of a cgroup2 `cgroup.events`. */
  watchEvents(eventsPath: string, callback: (ok: boolean) => void): EventsWatch;
  /** Spawns a process that is inside its cgroup before its first instruction, on a thread of its own, bounded. */
  spawn(opts: SpawnOptions, callback: (err: NativeError | null, result?: SpawnResult) => void): void;
  /** pidfd_open(pid) as a ProcessHandle (for a process this agent did not spawn: watch with reap=false). */
  openProcess(pid: number): ProcessHandle;
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

/**
 * spawn as a Promise. A frozen target group rejects with CgroupFrozenError, a spawn past its bound
 * with CgroupTimeoutError (phase 'start a process'); other failures are the native Node-style errors.
 */
export function spawnProcess(opts: SpawnOptions, addon: NativeAddon = native()): Promise<SpawnResult> {
  return new Promise((resolve, reject) => {
    try {
      addon.spawn(opts, (err, r) => (err ? reject(spawnError(err, opts)) : resolve(r!)));
    } catch (err) {
      reject(err);
    }
  });
}

function spawnError(err: NativeError, opts: SpawnOptions): Error {
  const where = err.path ?? opts.cgroupDir ?? '';
  if (err.syscall === 'cgroup-frozen') return new CgroupFrozenError(where);
  if (err.code === 'ETIMEDOUT' && err.syscall === 'spawn') {
    const e = new CgroupTimeoutError('start a process', where || '(no cgroup)', opts.timeoutMs);
    (e as { cause?: unknown }).cause = err;
    return e;
  }
  return err;
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
  // CORRAL_ADDON: an alternative build (the sanitizer lane's build-asan/), loaded instead of any other.
  if (process.env.CORRAL_ADDON) return require(path.resolve(process.env.CORRAL_ADDON));
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

/** native/record_file.cc, apart from NativeAddon for the same reason as PtyAddon. */
export interface RecordFileAddon {
  /**
   * On the libuv pool, in one job: writes `text` to the new file `tmp` (O_EXCL, 0600), then links it
   * to `file` (exclusive: EEXIST when `file` exists) or renames it over `file`. `tmp` never survives
   * a failure.
   */
  writeRecordAsync(tmp: string, file: string, text: string, exclusive: boolean, callback: (err: NativeError | null) => void): void;
  /** The same steps on the calling thread; throws the failing step's error (`syscall` open, write, close, link or rename). */
  writeRecord(tmp: string, file: string, text: string, exclusive: boolean): void;
  /**
   * On the libuv pool: appends `text` (one record line) to the existing `file` in one write(2), with
   * no truncation and no rename (ENOENT when the file is gone). A short write is cut back off.
   */
  appendRecordAsync(file: string, text: string, callback: (err: NativeError | null) => void): void;
}

export function recordFileNative(): RecordFileAddon {
  return native() as unknown as RecordFileAddon;
}
