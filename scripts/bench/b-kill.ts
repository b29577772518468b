/**
 * 3. Group kill of N = 10, 100, 1000, 5000 processes (and a variant whose processes fork in a loop):
 * time from the kill call until the group's cgroup.procs reads empty.
 *
 * Populations come from scripts/bench/forker.c: a subreaper outside the group (this host's PID 1 does
 * not reap orphans) forks a root that joins the group and forks the rest. The kernel's limit is
 * `echo 1 > cgroup.kill` from bash, timed inside bash ($EPOCHREALTIME) until cgroup.procs reads empty;
 * on this hybrid host cgroup.kill exists only on the unified (cgroup2) hierarchy, so that baseline and
 * corral's v2 path run there, and corral's v1 path (freezer: FROZEN, SIGKILL all, THAWED, wait) on v1.
 */
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { NativeAddon } from '../../src/native.js';
import { CgroupIO } from '../../src/cgroups/io.js';
import type { CgroupManager, TaskCgroup } from '../../src/cgroups/types.js';
import {
  BENCH_PARENT, UNIFIED, binPath, checkWithin, errMsg, hasUnified, measure, median, missing, msSince, nowNs, onCleanup, readProcs,
  removeCgroupTree, sleep, timeLeftMs, v1Mounts, type Measure, type Row, type Section, type BenchOptions,
} from './lib.js';
import { loadCgroupManager, loadNative } from './corral.js';

type Mode = 'pause' | 'forkloop' | 'tree';

interface Population {
  root: number;
  got: number;
  done: Promise<void>;
  forker: cp.ChildProcess;
}

const forkers = new Set<cp.ChildProcess>();

/** Starts N processes in the group(s) whose cgroup.procs files are given; resolves when all are in. */
function populate(n: number, mode: Mode, procsFiles: string[]): Promise<Population> {
  return new Promise((resolve, reject) => {
    const f = cp.spawn(binPath('forker'), [String(n), mode, ...procsFiles], { stdio: ['ignore', 'pipe', 'pipe'] });
    forkers.add(f);
    let err = '';
    f.stderr!.on('data', (d) => (err += String(d)));
    const done = new Promise<void>((res) => f.on('exit', () => (forkers.delete(f), res())));
    const timer = setTimeout(() => reject(new Error(`forker: ${n} processes not up within 60 s`)), 60_000);
    let out = '';
    f.stdout!.on('data', (d) => {
      out += String(d);
      const m = /ready (\d+) (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        // Let the fork storm settle (the forker's reaping, page faults) before anything is timed.
        setTimeout(() => resolve({ root: Number(m[1]), got: Number(m[2]), done, forker: f }), 50);
      }
    });
    f.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`forker exited ${code} before ready: ${err.trim()}`));
    });
  });
}

/** Kills whatever is left in a unified group and waits for the forker to have reaped everything. */
async function finish(pop: Population, groupDir: string): Promise<void> {
  for (let i = 0; i < 2000 && readProcs(path.join(groupDir, 'cgroup.procs')).length; i++) {
    try {
      if (fs.existsSync(path.join(groupDir, 'cgroup.kill'))) fs.writeFileSync(path.join(groupDir, 'cgroup.kill'), '1');
      else for (const p of readProcs(path.join(groupDir, 'cgroup.procs'))) process.kill(p, 'SIGKILL');
    } catch {}
    await sleep(5);
  }
  await Promise.race([pop.done, sleep(10_000)]);
}

/** Runs a bash script that prints "$t0 $t1" ($EPOCHREALTIME around its own work) on group `dir`: ms between them. */
function bashTimedMs(script: string, dir: string): number {
  const out = cp.execFileSync('bash', ['-c', script, 'bash', dir], { encoding: 'utf8' }).trim().split(' ');
  const us = (x: string) => {
    const [a, b] = x.split(/[.,]/);
    return Number(a) * 1e6 + Number(b);
  };
  return (us(out[1]!) - us(out[0]!)) / 1000;
}

async function rmdirRetry(dir: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      await sleep(5);
    }
  }
}

export async function run(o: BenchOptions): Promise<Section> {
  const notes: string[] = [];
  if (!hasUnified()) return { id: 'kill', title: '3. Group kill', unit: '', columns: [], rows: [], notes, skipped: 'no cgroup2 (unified) hierarchy: cgroup.kill is not available here' };
  onCleanup(async () => {
    for (const f of forkers) f.kill('SIGKILL');
  });
  const uBase = path.join(UNIFIED, BENCH_PARENT, 'kill');
  fs.mkdirSync(uBase, { recursive: true });
  onCleanup(() => removeCgroupTree(path.join(UNIFIED, BENCH_PARENT)));
  const mounts = v1Mounts();
  const fBase = mounts.freezer ? path.join(mounts.freezer, BENCH_PARENT, 'kill') : undefined;
  if (fBase) {
    fs.mkdirSync(fBase, { recursive: true });
    onCleanup(() => removeCgroupTree(path.join(mounts.freezer!, BENCH_PARENT)));
  }
  const v2Parent = `${BENCH_PARENT}-v2`;
  const v1Parent = `${BENCH_PARENT}-v1`;
  onCleanup(async () => {
    await removeCgroupTree(path.join(UNIFIED, v2Parent));
    for (const mnt of new Set(Object.values(v1Mounts()))) await removeCgroupTree(path.join(mnt, v1Parent));
  });

  const nat = await loadNative();
  const natReason = nat.ok ? undefined : nat.reason;
  const v2 = await loadCgroupManager({ root: UNIFIED, mode: 'v2', version: 'v2', parentName: v2Parent, killTimeoutMs: 120_000 });
  const v1 = await loadCgroupManager({ parentName: v1Parent, killTimeoutMs: 120_000 });
  const v2Reason = v2.ok ? undefined : v2.reason;
  const v1Reason = v1.ok ? (v1.value.version === 'v1' ? undefined : `the default manager here is ${v1.value.version}`) : v1.reason;
  const treeKill = (await import('tree-kill')).default as unknown as (pid: number, sig: string, cb: (err?: Error) => void) => void;

  let gid = 0;
  const newUnified = () => {
    const d = path.join(uBase, `g${gid++}`);
    fs.mkdirSync(d);
    return d;
  };

  type Method = { key: string; run: (n: number, mode: Mode) => Promise<{ ms: number; extra?: string }> };

  /** A population in a fresh unified group, killed by `kill`, timed by `kill` itself or around it. */
  const unifiedRun = async (n: number, mode: Mode, kill: (dir: string, pop: Population) => Promise<number>) => {
    const dir = newUnified();
    const pop = await populate(n, mode, [path.join(dir, 'cgroup.procs')]);
    try {
      return await kill(dir, pop);
    } finally {
      await finish(pop, dir);
      await rmdirRetry(dir);
    }
  };

  const taskCgroupRun = async (mgr: CgroupManager, n: number, mode: Mode) => {
    const cg: TaskCgroup = mgr.create(randomUUID(), 'kill');
    try {
      const procs = cg.placement.cgroupDir ? [path.join(cg.placement.cgroupDir, 'cgroup.procs')] : [...(cg.placement.joinProcs ?? [])];
      const pop = await populate(n, mode, procs);
      const t0 = nowNs();
      await cg.kill({ timeoutMs: 120_000 });
      const ms = msSince(t0);
      await Promise.race([pop.done, sleep(10_000)]);
      return ms;
    } finally {
      await cg.destroy({ timeoutMs: 30_000 });
    }
  };

  const methods: Method[] = [];
  /** groupKill's own elapsedNs (measured in the worker, like bash's in-shell timing), per case. */
  const inWorkerRuns: Record<string, number[]> = {};
  const reasons: Record<string, string> = {};
  if (v2.ok) methods.push({ key: 'corral v2 TaskCgroup.kill', run: async (n, m) => ({ ms: await taskCgroupRun(v2.value, n, m) }) });
  else reasons['corral v2 TaskCgroup.kill'] = v2Reason!;
  if (nat.ok) {
    const nv: NativeAddon = nat.value;
    methods.push({
      key: 'corral groupKill cgroup.kill',
      run: async (n, m) => ({
        ms: await unifiedRun(n, m, async (dir) => {
          const t0 = nowNs();
          const r = await new CgroupIO(() => nv).groupKill('cgroup.kill', path.join(dir, 'cgroup.procs'), dir, 120_000);
          const inWorker = r.elapsedNs / 1e6;
          const ms = msSince(t0);
          (inWorkerRuns[`${n}/${m}`] ??= []).push(inWorker);
          return ms;
        }),
      }),
    });
  } else reasons['corral groupKill cgroup.kill'] = natReason!;
  if (v1.ok && !v1Reason) methods.push({ key: 'corral v1 TaskCgroup.kill (freezer)', run: async (n, m) => ({ ms: await taskCgroupRun(v1.value, n, m) }) });
  else if (nat.ok && fBase) {
    const nv: NativeAddon = nat.value;
    methods.push({
      key: 'corral v1 TaskCgroup.kill (freezer)',
      run: async (n, m) => {
        const dir = path.join(fBase, `g${gid++}`);
        fs.mkdirSync(dir);
        const pop = await populate(n, m, [path.join(dir, 'cgroup.procs')]);
        try {
          const t0 = nowNs();
          await new CgroupIO(() => nv).groupKill('freezer-v1', path.join(dir, 'cgroup.procs'), dir, 120_000);
          return { ms: msSince(t0) };
        } finally {
          await finish(pop, dir);
          await rmdirRetry(dir);
        }
      },
    });
    notes.push(`corral v1 (freezer): the v1 manager was not usable (${v1Reason}); measured native groupKill('freezer-v1') directly`);
  } else reasons['corral v1 TaskCgroup.kill (freezer)'] = v1Reason ?? natReason ?? 'no freezer controller';
  /** `cgroup.kill` written from bash, then `until` (a bash loop) re-reads the group until it is done. */
  const bashKill = (key: string, until: string) => methods.push({
    key,
    run: async (n, m) => ({
      ms: await unifiedRun(n, m, async (dir) =>
        bashTimedMs(`g=$1; t0=$EPOCHREALTIME; echo 1 > "$g/cgroup.kill"; ${until}; t1=$EPOCHREALTIME; echo "$t0 $t1"`, dir)),
    }),
  });
  bashKill('kernel cgroup.kill (sh)', 'while read -r _ < "$g/cgroup.procs"; do :; done');
  // The same end as corral's v2 kill: the group unpopulated (what its removal needs). cgroup.procs
  // reads empty earlier: a dying process leaves that list before it has finished exiting.
  bashKill('kernel cgroup.kill until populated 0 (sh)', 'while mapfile -t e < "$g/cgroup.events"; [[ ${e[0]} != "populated 0" ]]; do :; done');
  // The same end, waited for as corral waits: asleep in poll(2) until the kernel signals a change of
  // cgroup.events (scripts/bench/killwait.c), not re-reading in a busy loop. A sleeping waiter has to be
  // woken and scheduled while the dying processes hold the CPUs; a busy one is already running.
  methods.push({
    key: 'kernel cgroup.kill, poll(2) until populated 0 (C)',
    run: async (n, m) => ({
      ms: await unifiedRun(n, m, async (dir) => Number(cp.execFileSync(binPath('killwait'), [dir], { encoding: 'utf8' }).trim()) / 1000),
    }),
  });
  if (fBase) {
    // v1 has no cgroup.kill: its limit is the freezer sequence itself with no user-space work around
    // it (bash builtins only, no fork): FROZEN (re-written until the state reads FROZEN), SIGKILL
    // every pid, THAWED, re-read cgroup.procs until empty. Timed inside bash like the v2 limit.
    methods.push({
      key: 'kernel v1 freezer loop (sh)',
      run: async (n, m) => {
        const dir = path.join(fBase, `g${gid++}`);
        fs.mkdirSync(dir);
        const pop = await populate(n, m, [path.join(dir, 'cgroup.procs')]);
        try {
          const script = [
            'g=$1; t0=$EPOCHREALTIME',
            'echo FROZEN > "$g/freezer.state"',
            'while read -r s < "$g/freezer.state"; [ "$s" != FROZEN ]; do echo FROZEN > "$g/freezer.state"; done',
            'mapfile -t p < "$g/cgroup.procs"; [ ${#p[@]} -gt 0 ] && kill -9 "${p[@]}" 2>/dev/null',
            'echo THAWED > "$g/freezer.state"',
            'while read -r _ < "$g/cgroup.procs"; do :; done',
            't1=$EPOCHREALTIME; echo "$t0 $t1"',
          ].join('\n');
          return { ms: bashTimedMs(script, dir) };
        } finally {
          await finish(pop, dir);
          await rmdirRetry(dir);
        }
      },
    });
  } else reasons['kernel v1 freezer loop (sh)'] = 'no v1 freezer controller mounted';
  methods.push({
    key: 'node procs loop',
    run: async (n, m) => ({
      ms: await unifiedRun(n, m, async (dir) => {
        const procs = path.join(dir, 'cgroup.procs');
        const t0 = nowNs();
        for (;;) {
          const pids = fs.readFileSync(procs, 'utf8').split('\n').filter(Boolean);
          if (pids.length === 0) break;
          for (const p of pids) {
            try {
              process.kill(Number(p), 'SIGKILL');
            } catch {}
          }
        }
        return msSince(t0);
      }),
    }),
  });
  const survivors: Record<string, string> = {};
  methods.push({
    key: 'tree-kill',
    run: async (n, m) => {
      let extra = '';
      const ms = await unifiedRun(n, m === 'pause' ? 'tree' : m, async (dir, pop) => {
        const t0 = nowNs();
        await new Promise<void>((res) => treeKill(pop.root, 'SIGKILL', () => res()));
        const ms = msSince(t0);
        await sleep(200);
        const left = readProcs(path.join(dir, 'cgroup.procs')).length;
        extra = `${left} of ${pop.got}`;
        return ms;
      });
      return { ms, extra };
    },
  });

  // `times`: measurements per repetition. The small groups are cheap to make and their figures are
  // the noisiest (a few ms, where one scheduling delay counts), so they get more of them.
  const cases: { n: number; mode: Mode; reps: number; times?: number }[] = [
    { n: 10, mode: 'pause', reps: o.quick ? 3 : 7, times: 3 },
    { n: 100, mode: 'pause', reps: o.quick ? 3 : 5 },
    // Before the big populations: a budget spent on N = 5000 still leaves the forking row measured.
    { n: 100, mode: 'forkloop', reps: o.quick ? 2 : 3 },
    { n: 1000, mode: 'pause', reps: o.quick ? 2 : 5 },
    { n: 5000, mode: 'pause', reps: o.quick ? 1 : 4 },
  ];
  const TREE_KILL_MAX = 100;
  const columns = [
    'corral v2 TaskCgroup.kill', 'corral groupKill cgroup.kill', 'kernel cgroup.kill until populated 0 (sh)', 'kernel cgroup.kill, poll(2) until populated 0 (C)', 'kernel cgroup.kill (sh)', 'corral v1 TaskCgroup.kill (freezer)',
    'kernel v1 freezer loop (sh)', 'node procs loop', 'tree-kill',
  ];
  const rows: Row[] = [];
  const failures: Record<string, string> = {};
  // Repetitions outermost, so that a run cut short by the time budget still has every case.
  const allRuns: Record<string, Record<string, number[]>> = {};
  const caseName = (c: { n: number; mode: Mode }) => (c.mode === 'forkloop' ? `N=${c.n}, forking in a loop` : `N=${c.n}`);
  const maxReps = Math.max(...cases.map((c) => c.reps));
  // The budget is checked before every measurement (one N = 5000 population takes seconds to make on a
  // loaded host): a run cut short reports what it measured instead of nothing.
  let cut = '';
  for (let r = 0; r < maxReps && !cut; r++) {
    for (const c of cases) {
      if (cut) break;
      if (r >= c.reps) continue;
      const runs = (allRuns[caseName(c)] ??= {});
      // The order of the methods rotates with each repetition, so no method always follows the same one.
      const order = methods.map((_, i) => methods[(i + r) % methods.length]!);
      for (const m of order.flatMap((x) => Array<Method>(c.times ?? 1).fill(x))) {
        if (timeLeftMs() < 10_000) {
          cut = `time budget reached in repetition ${r + 1} (at ${caseName(c)}); later cases have fewer runs`;
          break;
        }
        if (failures[m.key]) continue;
        // tree-kill never empties a forking population's group (it walks a tree that changes under it):
        // on the forking row it ran for 20 s per try in the first recorded run, measuring nothing new.
        if (m.key === 'tree-kill' && (c.n > TREE_KILL_MAX || r >= 3 || c.mode === 'forkloop')) continue;
        try {
          const res = await m.run(c.n, c.mode);
          (runs[m.key] ??= []).push(res.ms);
          if (res.extra) survivors[caseName(c)] = res.extra;
        } catch (err) {
          failures[m.key] = `${caseName(c)}: ${errMsg(err)}`;
        }
      }
    }
  }
  if (cut) notes.push(cut);
  for (const c of cases) {
    const runs = allRuns[caseName(c)] ?? {};
    const values: Record<string, Measure> = {};
    for (const col of columns) {
      if (failures[col]) values[col] = missing('ms', `failed: ${failures[col]}`);
      else if (reasons[col]) values[col] = missing('ms', reasons[col]!);
      else if (col === 'tree-kill' && c.n > TREE_KILL_MAX) values[col] = missing('ms', 'not run above N=100 (see note)');
      else if (col === 'tree-kill' && c.mode === 'forkloop') values[col] = missing('ms', 'not run on a forking population (see note)');
      else values[col] = measure(runs[col] ?? [], 'ms');
    }
    // Compared with the kernel doing the same: killed and unpopulated (corral's v2 waits end there).
    const kernel = values['kernel cgroup.kill until populated 0 (sh)'];
    rows.push({
      case: caseName(c),
      values,
      checks: [
        checkWithin('v2 TaskCgroup.kill within 1.1x of kernel', values['corral v2 TaskCgroup.kill'], kernel, 1.1),
        checkWithin('native groupKill within 1.1x of kernel', values['corral groupKill cgroup.kill'], kernel, 1.1),
        checkWithin('v1 freezer kill within 1.5x of the v1 kernel-side loop', values['corral v1 TaskCgroup.kill (freezer)'], values['kernel v1 freezer loop (sh)'], 1.5),
      ],
      extra: {
        'groupKill in-worker': inWorkerRuns[`${c.n}/${c.mode}`]?.length ? (median(inWorkerRuns[`${c.n}/${c.mode}`]!)!).toFixed(2) : '—',
        'tree-kill survivors': survivors[caseName(c)] ?? (c.n > TREE_KILL_MAX ? 'not run' : '—'),
      },
    });
  }
  notes.push(
    'tree-kill is run only up to N=100: it spawns one `ps -o pid --ppid P` per process, each scanning all of /proc, so its cost is quadratic (a trial on this machine: N=100 in 2.4 s, N=1000 in 126 s, beyond the 10-minute budget).',
    'tree-kill populations (pause rows) are a process tree in which every 10th child double-forked a setsid\'d daemon (as services do); the daemons are no longer in the root\'s tree, so tree-kill cannot see them: they are the survivors shown, counted in cgroup.procs 200 ms after tree-kill called back. Its time is until its callback, not until the group is empty (it never is). The forking row uses the forking population for every method.',
    'Kernel limit: bash writes cgroup.kill and re-reads cgroup.events until `populated 0` (the end corral\'s v2 kill waits for: the group can be removed), timed with $EPOCHREALTIME inside bash (excludes bash start-up); the targets compare with it. "kernel cgroup.kill, poll(2) until populated 0 (C)" ends at the same point but sleeps in poll(2) on cgroup.events between reads, as corral\'s event-driven wait does (scripts/bench/killwait.c, timed inside the program): the cost of waiting for an event instead of spinning (a reference column, no target: the targets are the issue\'s, against the bash limit). "kernel cgroup.kill (sh)" re-reads cgroup.procs until empty instead, an earlier end (a dying process leaves cgroup.procs before it has finished exiting), for reference. corral times are taken in JS around the call; its waits are events on the loop (cgroup.events notifications on cgroup2, timers on v1); its writes and signals are one step each on a thread of its own (native/control.cc), so nothing of a kill runs on the loop. "groupKill in-worker" is groupKill\'s own elapsedNs (ms), from its first write to the empty group.',
    'The forking row: 100 processes forking flat out on 2 cores; every waiter (bash loop, worker thread, event loop) competes with them for a CPU, so that row measures scheduling latency as much as killing.',
    'v1 freezer path: freeze, wait for FROZEN, SIGKILL every pid, thaw, wait until empty — the only whole-group kill v1 offers. Its limit, "kernel v1 freezer loop (sh)", is the same sequence in bash builtins on a freezer group (timed inside bash): corral\'s v1 TaskCgroup.kill is compared with it (goal within 1.5x); corral\'s groups are in every v1 controller, the baseline\'s in the freezer only.',
  );
  for (const [k, v] of Object.entries(failures)) notes.push(`${k} failed at ${v}`);
  return {
    id: 'kill',
    title: '3. Group kill: from the kill call until the cgroup is empty',
    unit: 'ms (lower is better)',
    columns,
    rows,
    notes,
  };
}
