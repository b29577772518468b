/**
 * Shared helpers for tests that use real cgroups: a unique parent name, a process started inside a
 * group (native spawn with the group's placement), a bounded waitFor, and a clean-up that kills and
 * removes everything under one of the suite's parents (sandbox(t) in ./sandbox.ts calls it at teardown).
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnProcess, type ExitInfo, type ProcessHandle } from '../../src/native.js';
import { detectCgroupLayout } from '../../src/cgroups/detect.js';
import { DEFAULT_LOCK_DIR } from '../../src/cgroups/lock.js';
import type { CgroupLayout, SpawnPlacement, TaskCgroup } from '../../src/cgroups/types.js';
import { bound, isTestName, uniqueName } from './names.js';

export const isRoot = process.getuid?.() === 0;

/** The host's detected layout (what the default manager would run on). */
export function hostLayout(): CgroupLayout {
  return detectCgroupLayout();
}

/**
 * The layout of a cgroups-v2-only host with the cpuset controller, as the v2 lane's guest is; else
 * why this host is not one (the test says so and skips).
 */
export function v2CpusetHost(): { layout?: CgroupLayout; reason?: string } {
  if (!isRoot) return { reason: 'not root' };
  let layout: CgroupLayout;
  try {
    layout = detectCgroupLayout();
  } catch (err) {
    return { reason: `cgroup detection failed: ${(err as Error).message}` };
  }
  if (layout.mode !== 'v2') {
    return { reason: `detection reports mode ${layout.mode} (root ${layout.root}), not a cgroups-v2-only host; run npm run test:v2 for the v2 lane` };
  }
  const ctl = fs.readFileSync(path.join(layout.root, 'cgroup.controllers'), 'utf8').split(/\s+/).filter(Boolean);
  if (!ctl.includes('cpuset')) return { reason: `mode v2 but ${layout.root} offers no cpuset controller (${ctl.join(' ') || 'none'})` };
  return { layout };
}

/** The v2 layout to test the v2 manager on: the root on a v2 host, /sys/fs/cgroup/unified on a hybrid one; undefined on pure v1. */
export function v2Layout(): CgroupLayout | undefined {
  try {
    return detectCgroupLayout({ version: 'v2' });
  } catch {
    return undefined;
  }
}

/** Controllers the cgroup2 root offers (empty on a hybrid host's unified mount). */
export function v2RootControllers(layout: CgroupLayout | undefined = v2Layout()): string[] {
  if (!layout) return [];
  try {
    return fs.readFileSync(path.join(layout.root, 'cgroup.controllers'), 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * A parent name no other test (file, worker or concurrent run) uses: `corral-test-<run>-<file>-<pid>-<n>`,
 * with `.slice` for v2. (sandbox(t) gives one per test, with its teardown.)
 */
export function uniqueParent(file: string, version: 'v1' | 'v2'): string {
  const base = uniqueName(file);
  return version === 'v2' ? `${base}.slice` : base;
}

export const newAllocId = (): string => randomUUID();

export interface Started {
  pid: number;
  /** Resolves when the process exits (reaped). */
  exited: Promise<ExitInfo>;
}

/**
 * Exit watches of startInGroup's processes that have not fired yet, with the group paths each was
 * placed in: cleanupParent closes the leftovers under its parent only (concurrent tests in one file
 * keep theirs).
 */
const openWatches = new Map<ProcessHandle, string[]>();

/**
 * Starts a process already inside a group (native spawn with the group's placement: clone3 into
 * the v2 directory, or the child joins every v1 controller before execve). `file` is resolved
 * against /bin and /usr/bin when not absolute. The exit watch is ref'd (a test that awaits only
 * `exited` keeps the event loop alive); it closes itself when the process exits, and cleanupParent
 * closes any still open.
 */
export async function startInGroup(group: Pick<TaskCgroup, 'placement'> | SpawnPlacement, file: string, args: string[] = [], opts: { setsid?: boolean } = {}): Promise<Started> {
  const placement: SpawnPlacement = 'placement' in group ? group.placement : group;
  const abs = path.isAbsolute(file) ? file : ['/bin', '/usr/bin'].map((d) => path.join(d, file)).find((p) => fs.existsSync(p)) ?? file;
  const r = await spawnProcess({
    file: abs,
    argv: [file, ...args],
    envp: [`PATH=${process.env.PATH ?? '/usr/bin:/bin'}`],
    stdio: [-1, -1, -1],
    setsid: opts.setsid ?? true,
    ...(placement.cgroupDir ? { cgroupDir: placement.cgroupDir } : {}),
    ...(placement.joinProcs ? { joinProcs: [...placement.joinProcs] } : {}),
    timeoutMs: 30_000,
  });
  let resolveExit!: (i: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((res) => { resolveExit = res; });
  const w = r.process;
  w.watch(true, (info) => {
    openWatches.delete(w);
    resolveExit(info);
  });
  openWatches.set(w, [...(placement.cgroupDir ? [placement.cgroupDir] : []), ...(placement.joinProcs ?? [])]);
  return { pid: r.pid, exited };
}

/**
 * Polls `pred` every `intervalMs` until it is true; rejects naming `what` after the bound. `timeoutMs`
 * (default 5000) is the bound on an idle host: it is stretched by CORRAL_TEST_SLOWDOWN here, so pass
 * the plain number, not bound(n). Wait for exactly what the test then asserts.
 */
export async function waitFor(pred: () => boolean | Promise<boolean>, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<void> {
  const timeoutMs = bound(opts.timeoutMs ?? 5000);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
  }
}

/** `Cpus_allowed_list` of /proc/<pid>/status. */
export function cpusAllowed(pid: number): string {
  const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? m[1]! : '';
}

/** True while the process exists and is not a zombie (an orphan's zombie may linger until init reaps it). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The cgroup paths of a process per hierarchy (`/proc/<pid>/cgroup`): controller list (or '' for v2) → path. */
export function procCgroups(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const c of m[1]!.split(',')) out[c] = m[2]!;
  }
  return out;
}

function readPids(procs: string): number[] {
  try {
    return fs.readFileSync(procs, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Every directory (depth-first, children before parents) of a tree. */
function treeDirs(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) if (e.isDirectory()) out.push(...treeDirs(path.join(dir, e.name)));
  out.push(dir);
  return out;
}

/**
 * Kills every process and removes every directory under `parentName`: in each v1 controller mount
 * and in the cgroup2 root (v2, or the unified mount of a hybrid host). Bounded; never throws.
 * Returns what could not be removed.
 */
export async function cleanupParent(parentName: string, timeoutMs = bound(10_000)): Promise<string[]> {
  // Only the suite's own parents (corral-test-...): never a default parent a live agent may use.
  if (!isTestName(parentName)) throw new Error(`refusing to clean ${parentName}: not one of the test suite's parents`);
  const roots = new Set<string>();
  try {
    const l = hostLayout();
    for (const mp of Object.values(l.v1Mounts)) roots.add(mp);
    if (l.unifiedMount) roots.add(l.unifiedMount);
    roots.add(l.root);
  } catch { /* no cgroups */ }
  const v2 = v2Layout();
  if (v2) roots.add(v2.root);
  const deadline = Date.now() + timeoutMs;
  const left: string[] = [];
  const tops = [...roots].map((r) => path.join(r, parentName)).filter((top) => fs.existsSync(top));
  // Thaw everything first, in every hierarchy: a process frozen in a v1 freezer group cannot die,
  // and would keep its groups in the other hierarchies busy.
  for (const top of tops) {
    for (const d of treeDirs(top)) {
      for (const [f, v] of [['freezer.state', 'THAWED'], ['cgroup.freeze', '0']] as const) {
        try { if (fs.existsSync(path.join(d, f))) fs.writeFileSync(path.join(d, f), v); } catch { /* ignore */ }
      }
    }
  }
  for (const top of tops) {
    for (const d of treeDirs(top)) {
      for (;;) {
        const pids = readPids(path.join(d, 'cgroup.procs'));
        if (pids.length === 0) break;
        try { if (fs.existsSync(path.join(d, 'cgroup.kill'))) fs.writeFileSync(path.join(d, 'cgroup.kill'), '1'); } catch { /* ignore */ }
        for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
        if (Date.now() > deadline) break;
        await new Promise((res) => setTimeout(res, 5));
      }
      for (;;) {
        try {
          fs.rmdirSync(d);
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          if (code !== 'EBUSY' || Date.now() > deadline) { left.push(d); break; }
          await new Promise((res) => setTimeout(res, 5));
        }
      }
    }
  }
  // Lock files of the parent's cpuset partition (default lock dir; tests with their own remove theirs).
  try {
    for (const f of fs.readdirSync(DEFAULT_LOCK_DIR)) if (f.endsWith(`-${parentName}.lock`)) fs.rmSync(path.join(DEFAULT_LOCK_DIR, f), { force: true });
  } catch { /* none */ }
  // The processes are gone: their watches fire (and close) on the next turns of the loop. Close
  // whatever of this parent is still open after a short grace so no ref'd watch keeps the worker alive.
  const seg = `/${parentName}/`;
  const mine = () => [...openWatches].filter(([, dirs]) => dirs.some((d) => d.includes(seg))).map(([w]) => w);
  const grace = Math.min(deadline, Date.now() + 1000);
  while (mine().length > 0 && Date.now() < grace) await new Promise((res) => setTimeout(res, 10));
  for (const w of mine()) {
    try { w.close(); } catch { /* closed */ }
    openWatches.delete(w);
  }
  return left;
}

/**
 * Task group directories (named `<uuid>-...`) under `parentName` in any hierarchy: "nothing left
 * behind" checks. A name without `.slice` is looked up with it too: drivers and `corral run` given
 * `--cgroup-parent x` use `x.slice` on cgroups v2, so the check is not vacuous in the v2 lane.
 */
export function groupDirsUnder(parentName: string): string[] {
  if (!parentName.endsWith('.slice')) return [...groupDirsUnderExactly(parentName), ...groupDirsUnderExactly(`${parentName}.slice`)];
  return groupDirsUnderExactly(parentName);
}

function groupDirsUnderExactly(parentName: string): string[] {
  const roots = new Set<string>();
  try {
    const l = hostLayout();
    for (const mp of Object.values(l.v1Mounts)) roots.add(mp);
    if (l.unifiedMount) roots.add(l.unifiedMount);
  } catch { /* none */ }
  const v2 = v2Layout();
  if (v2) roots.add(v2.root);
  const out: string[] = [];
  for (const r of roots) {
    const top = path.join(r, parentName);
    out.push(...treeDirs(top).filter((d) => /^[0-9a-f]{8}-[0-9a-f]{4}-/.test(path.basename(d))));
  }
  return out;
}
