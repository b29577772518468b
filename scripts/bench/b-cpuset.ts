/**
 * 4. A reservation change with N = 10, 100 and 1000 shared tasks running. corral's manager on this
 * host (v1 here): N shared tasks, each a `sleep` in its own groups and in the share group; then a task
 * reserving one core is created (the reservation begins: the share pool shrinks, the reserve parent
 * grows, the reserved group gets its core) and destroyed (it ends). Figures: µs for each, per N. Goal:
 * flat in N (N = 1000 within 1.5x of N = 10), since the kernel moves the share group's tasks itself.
 * For scale, what corral 0.1's layout did in the same run: one cpuset group per shared task, each
 * rewritten (native batch) when the pool changes.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { createCgroupManager } from '../../src/cgroups/factory.js';
import { formatCpuList, parseCpuList } from '../../src/cgroups/cpulist.js';
import type { CgroupManager, TaskCgroup } from '../../src/cgroups/types.js';
import { native, spawnProcess, type ProcessHandle } from '../../src/native.js';
import {
  BENCH_PARENT, checkWithin, errMsg, measure, missing, nowNs, onCleanup, removeCgroupTree, rootMems, timeLeftMs, usSince, v1Mounts,
  type Measure, type Row, type Section, type BenchOptions,
} from './lib.js';

const TITLE = '4. Reservation change with N shared tasks running';
const ENVP = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];
const BEGIN = 'corral: reservation begins';
const END = 'corral: reservation ends';
const OLD = '0.1 layout: N cpusets rewritten';
const KERNEL = 'kernel: the share write alone';
const INSIDE = 'begins: of which the batch writing the share pool';
const SHARED = 'a shared task created, for comparison';
const DELTA = 'begins − shared create (the reservation itself)';

export async function run(o: BenchOptions): Promise<Section> {
  const notes: string[] = [];
  const skipped = (why: string): Section => ({ id: 'cpuset', title: TITLE, unit: '', columns: [], rows: [], notes, skipped: why });
  const parentName = `${BENCH_PARENT}-cpuset`;
  const lockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-bench-locks-'));
  onCleanup(() => fs.rmSync(lockDir, { recursive: true, force: true }));
  let mgr: CgroupManager;
  try {
    mgr = createCgroupManager({ parentName, lockDir });
  } catch (err) {
    return skipped(`no cgroup manager: ${errMsg(err)}`);
  }
  onCleanup(async () => {
    for (const mnt of new Set(Object.values(mgr.layout.v1Mounts))) await removeCgroupTree(path.join(mnt, parentName));
    if (mgr.version === 'v2') await removeCgroupTree(path.join(mgr.layout.root, parentName));
  });
  if (!mgr.controllers().includes('cpuset')) return skipped(`no cpuset controller for corral's ${mgr.version} manager here`);
  const usable = mgr.usableCores();
  if (usable.length < 2) return skipped(`needs 2 usable cores to reserve one (usable: ${formatCpuList(usable)})`);
  const core = usable[usable.length - 1]!;
  const n = native();

  // The shared tasks: groups and a sleeping process each, kept running across the Ns.
  const shared: Array<{ g: TaskCgroup; pid: number; watch: ProcessHandle }> = [];
  onCleanup(async () => {
    for (const s of shared) {
      try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
      await s.g.destroy().catch(() => undefined);
    }
  });
  const grow = async (to: number) => {
    while (shared.length < to) {
      const g = mgr.create(randomUUID(), `s${shared.length}`);
      // v1: the process joins the share group only (what a reservation change touches); its per-task
      // groups stay empty, which saves five RCU-bound joins per start and changes nothing measured here.
      const placement = mgr.version === 'v1' && g.paths.cpuset ? { joinProcs: [path.join(g.paths.cpuset, 'cgroup.procs')] } : g.placement;
      const r = await spawnProcess({ file: '/bin/sleep', argv: ['sleep', '3600'], envp: ENVP, stdio: [-1, -1, -1], timeoutMs: 30_000, ...placement }, n);
      r.process.watch(true, () => undefined);
      shared.push({ g, pid: r.pid, watch: r.process });
    }
  };
  const shareCpusFile = () => {
    const g = shared[0]?.g;
    if (!g) return undefined;
    return mgr.version === 'v1' ? path.join(g.paths.cpuset!, 'cpuset.cpus') : path.join(path.dirname(g.placement.cgroupDir!), 'cpuset.cpus');
  };
  const allowed = (pid: number) => parseCpuList(/^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '');

  // corral 0.1's layout for scale: N per-task cpuset groups under a shared parent, rewritten in one native batch.
  const cs = v1Mounts().cpuset;
  const oldBase = cs ? path.join(cs, BENCH_PARENT, 'old-shared') : undefined;
  const oldFiles: string[] = [];
  if (oldBase) {
    onCleanup(() => removeCgroupTree(path.join(cs!, BENCH_PARENT)));
    const all = formatCpuList(usable);
    for (const d of [path.dirname(oldBase), oldBase]) {
      if (!fs.existsSync(d)) fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'cpuset.cpus'), all);
      fs.writeFileSync(path.join(d, 'cpuset.mems'), rootMems());
    }
  }
  const growOld = (to: number) => {
    while (oldBase && oldFiles.length < to) {
      const d = path.join(oldBase, `t${oldFiles.length}`);
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'cpuset.cpus'), formatCpuList(usable));
      fs.writeFileSync(path.join(d, 'cpuset.mems'), rootMems());
      oldFiles.push(path.join(d, 'cpuset.cpus'));
    }
  };
  const oldValues = [formatCpuList(usable.filter((c) => c !== core)), formatCpuList(usable)];
  let flip = 0;

  const rows: Row[] = [];
  const reps = o.quick ? 5 : 15;
  for (const N of [10, 100, 1000]) {
    if (timeLeftMs() < 15_000) {
      notes.push(`N = ${N}: not measured, time budget reached`);
      break;
    }
    const tg = nowNs();
    try {
      await grow(N);
      growOld(N);
    } catch (err) {
      notes.push(`N = ${N}: could not start the shared tasks: ${errMsg(err)}`);
      break;
    }
    notes.push(`N = ${N}: ${N} shared tasks started in ${(usSince(tg) / 1e3).toFixed(0)} ms (untimed)`);
    const begin: number[] = [];
    const end: number[] = [];
    const old: number[] = [];
    const kern: number[] = [];
    const sharedCreate: number[] = [];
    const inside: number[] = [];
    const split: Array<[number, number, number]> = [];
    let check = '';
    for (let r = 0; r < reps; r++) {
      if (r >= 3 && timeLeftMs() < 10_000) {
        notes.push(`N = ${N}: time budget reached after ${r} of ${reps} repetitions`);
        break;
      }
      // The native batch that writes the share pool, timed inside the create: the kernel moving every
      // shared task's affinity happens in that one write.
      // The rest of the create is split the same way: the mkdirs, the other native write batches.
      const shareFile = shareCpusFile();
      const writeFiles = n.writeFiles;
      // The fs module object itself (the import is a getter-only namespace): what corral's fs calls reach.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const realFs = require('node:fs') as { mkdirSync: typeof fs.mkdirSync };
      const mkdirSync = realFs.mkdirSync;
      let inShare = 0;
      let inOther = 0;
      let inMkdir = 0;
      n.writeFiles = ((paths: string[], values: string[]) => {
        const t = nowNs();
        try { return writeFiles.call(n, paths, values); } finally {
          if (shareFile && paths.includes(shareFile)) inShare += usSince(t);
          else inOther += usSince(t);
        }
      }) as typeof n.writeFiles;
      realFs.mkdirSync = ((...a: Parameters<typeof fs.mkdirSync>) => {
        const t = nowNs();
        try { return mkdirSync(...a); } finally { inMkdir += usSince(t); }
      }) as typeof fs.mkdirSync;
      const t0 = nowNs();
      let g;
      try {
        g = mgr.create(randomUUID(), 'reserved', { resources: { cores: [core] } });
      } finally {
        n.writeFiles = writeFiles;
        realFs.mkdirSync = mkdirSync;
      }
      const tb = usSince(t0);
      begin.push(tb);
      inside.push(inShare);
      split.push([inMkdir, inOther, tb - inShare - inOther - inMkdir]);
      if (r === 0) {
        // Untimed: every shared task is off the reserved core now.
        const on = shared.filter((s) => allowed(s.pid).includes(core)).length;
        check = on === 0 ? `all ${N} off core ${core}` : `${on} of ${N} still on core ${core}!`;
      }
      const t1 = nowNs();
      await g.destroy();
      end.push(usSince(t1));
      // The same groups without a reservation: creating a task's groups beside N siblings costs the kernel
      // more as N grows (memory cgroups above all), reservation or not.
      const t4 = nowNs();
      const sg = mgr.create(randomUUID(), 'plain');
      sharedCreate.push(usSince(t4));
      await sg.destroy();
      // The kernel's part, for the slope: the share group's one cpuset.cpus write (shrink, then back), which
      // moves every task in it. Timed apart from corral, on the bench's own parent.
      const shareCpus = shareCpusFile();
      if (shareCpus) {
        for (const v of [formatCpuList(usable.filter((c) => c !== core)), formatCpuList(usable)]) {
          const t3 = nowNs();
          const res = n.writeFiles([shareCpus], [v]);
          kern.push(usSince(t3));
          if (res[0]) throw new Error(`share write: ${res[0].code}`);
        }
      }
      if (oldFiles.length >= N) {
        const files = oldFiles.slice(0, N);
        const v = oldValues[flip++ % 2]!;
        const t2 = nowNs();
        const res = n.writeFiles(files, files.map(() => v));
        old.push(usSince(t2));
        const bad = res.find((x) => x !== null);
        if (bad) throw new Error(`0.1 layout rewrite: ${bad.code} ${bad.path ?? ''}`);
      }
    }
    const mb = measure(begin, 'µs');
    const ms = measure(sharedCreate, 'µs');
    const values: Record<string, Measure> = {
      [BEGIN]: mb,
      [SHARED]: ms,
      [DELTA]: mb.median != null && ms.median != null ? { median: Math.max(1, mb.median - ms.median), runs: [], unit: 'µs', note: 'difference of the two medians' } : missing('µs', 'n/a'),
      [END]: measure(end, 'µs'),
      [OLD]: oldBase ? measure(old, 'µs') : missing('µs', 'no v1 cpuset hierarchy here'),
      [KERNEL]: kern.length ? measure(kern, 'µs') : missing('µs', 'no share group'),
      [INSIDE]: inside.some((x) => x > 0) ? measure(inside, 'µs') : missing('µs', 'no share write seen'),
    };
    rows.push({ case: `N = ${N}`, values, checks: [], extra: { 'shared tasks after the reservation began': check } });
    const med = (k: 0 | 1 | 2) => measure(split.map((x) => x[k]), 'µs').median?.toFixed(0) ?? '?';
    // On a loaded 2-core machine any sample can carry a 10-30 ms preemption, whatever N: the lower
    // quartile shows the cost without it.
    const q1 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 4)]?.toFixed(0) ?? '?';
    notes.push(`N = ${N}: the rest of "begins", medians in µs: mkdir of the task's groups ${med(0)}, other write batches ${med(1)}, everything else (host lock, the tree read, JS) ${med(2)}. Lower quartiles (preemption stalls left out), µs: begins ${q1(begin)}, the share pool's batch ${q1(inside)}, ends ${q1(end)}; ${begin.filter((x) => x > 8000).length} of ${begin.length} begins took over 8 ms.`);
  }
  // Flat in N: the N = 1000 figures against N = 10's.
  const first = rows[0];
  for (const row of rows.slice(1)) {
    row.checks.push(checkWithin('begins: within 1.5x of N = 10', row.values[BEGIN], first?.values[BEGIN], 1.5));
    row.checks.push(checkWithin('the reservation itself: within 1.5x of N = 10', row.values[DELTA], first?.values[DELTA], 1.5));
    row.checks.push(checkWithin('ends: within 1.5x of N = 10', row.values[END], first?.values[END], 1.5));
  }
  notes.push(`corral: ${mgr.version} manager (${mgr.layout.mode} host); the reserved task reserves core ${core}. "begins" = manager.create of that task (its groups in every controller, the host lock, the partition read from the tree and written: ${mgr.version === 'v1' ? 'share, reserve and the reserved group' : 'share.slice and the reserved scope'}); "ends" = TaskCgroup.destroy (rmdir of its groups, the lock, the pool given back).`);
  if (oldBase) notes.push(`"${OLD}" = corral 0.1's layout, for scale: N cpuset groups (no process in them, as in the earlier recorded run, so a lower bound) each rewritten in one native batch; every v1 cpuset write costs the kernel ~100+ µs.`);
  notes.push(`"${INSIDE}" = the native batch, inside that create, that writes the share group's cpuset.cpus (${mgr.version === 'v1' ? 'in one batch with the rest of the partition' : 'alone'}): the kernel moves every shared task's affinity inside it, so this is where the growth in N would be.`);
  notes.push(`"${KERNEL}" = one write of the share group's cpuset.cpus with the N tasks in it (the kernel updates each task's affinity), timed alone: what is left of the slope in N is this, not corral's writes (a constant 3 + 1 per change).`);
  return { id: 'cpuset', title: TITLE, unit: 'µs per reservation change (lower is better; flat in N is the goal)', columns: [BEGIN, INSIDE, END, SHARED, DELTA, KERNEL, OLD], rows, notes };
}
