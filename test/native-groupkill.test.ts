// Kernel tests of the group kill and the bounded waits (CgroupIO over the addon; the waits are events
// on the loop): groupKill with every method against groups holding a fork loop, a setsid
// double-forked daemon and a process that ignores SIGTERM; waitEmpty / waitFrozen; timeouts
// (CgroupTimeoutError); the main thread stays free. Groups live under corral-test-native-<random>.
// Runs on a hybrid host (v2 groups on /sys/fs/cgroup/unified, v1 freezer and pids) and on a v2-only one
// (groups at /sys/fs/cgroup, pids.max in the v2 group itself); tests that need the v1 freezer skip,
// with the reason logged, where it is missing.
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, spawnProcess, type ExitInfo, type NativeError } from '../src/native.js';
import { CgroupIO, type GroupKillMethod, type GroupKillResult } from '../src/cgroups/io.js';
import { CgroupTimeoutError } from '../src/errors.js';
import { hostLayout, v2RootControllers } from './helpers/cgroups.js';
import { until } from './helpers/loop.js';
import { SLOWDOWN, sandbox } from './helpers/sandbox.js';

const n = native();
const layout = hostLayout();
/** The cgroup2 mount: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a v2 one. */
const V2 = layout.unifiedMount ?? '/sys/fs/cgroup/unified';
/** v1 freezer and pids mounts (none on a v2-only host). */
const FREEZER = layout.v1Mounts.freezer;
const PIDS = layout.v1Mounts.pids;
/** Where pids.max bounds the fork loop: a v1 pids group, else pids.max in the v2 group itself. */
const V2_PIDS = !PIDS && v2RootControllers({ ...layout, root: V2 }).includes('pids');
const noFreezer = FREEZER ? undefined : `no v1 freezer hierarchy on this host (mode ${layout.mode})`;
/** Stretches waits in the emulated v2 guest (CORRAL_TEST_SLOWDOWN); 1 on the host. */
const SLOW = SLOWDOWN;
const live = new Set<number>();

/**
 * Groups for one test under a sandbox parent of its own (`PARENT`, in every hierarchy), removed at
 * the test's teardown (everything thawed, processes killed) even when the test fails.
 */
function cgroups(t: Pick<ExecutionContext, 'teardown'>): { PARENT: string; mkgroup: (root: string, name: string) => string } {
  const PARENT = sandbox(t, 'groupkill').parent;
  return {
    PARENT,
    mkgroup(root, name) {
      const parent = path.join(root, PARENT);
      if (!fs.existsSync(parent)) {
        fs.mkdirSync(parent);
        // v2-only: the parent holds no process, so it may enable pids for its (leaf) children.
        if (root === V2 && V2_PIDS) fs.writeFileSync(path.join(parent, 'cgroup.subtree_control'), '+pids');
      }
      const dir = path.join(parent, name);
      fs.mkdirSync(dir);
      return dir;
    },
  };
}

function procsOf(dir: string): number[] {
  return Array.from(n.readProcs(path.join(dir, 'cgroup.procs')));
}

/** native spawn + watch(reap); killed at the test's teardown if still alive. */
async function spawnWatched(t: Pick<ExecutionContext, 'teardown'>, argv: string[], where: { cgroupDir?: string; joinProcs?: string[] }): Promise<{ pid: number; exit: Promise<ExitInfo> }> {
  const r = await spawnProcess({ file: argv[0]!, argv, envp: ['PATH=/usr/bin:/bin'], stdio: [-1, -1, -1], timeoutMs: 30_000, ...where });
  live.add(r.pid);
  t.teardown(() => { if (live.has(r.pid)) { try { process.kill(r.pid, 'SIGKILL'); } catch { /* gone */ } } });
  const exit = new Promise<ExitInfo>((resolve) =>
    r.process.watch(true, (info) => {
      live.delete(r.pid);
      resolve(info);
    }),
  );
  return { pid: r.pid, exit };
}

const io = new CgroupIO();
interface KillOpts { method: GroupKillMethod; procsPath: string; controlDir: string; timeoutMs: number }
function groupKill(o: KillOpts): Promise<GroupKillResult> {
  return io.groupKill(o.method, o.procsPath, o.controlDir, o.timeoutMs);
}
function waitEmpty(procs: string, timeoutMs: number): Promise<void> {
  return io.waitEmpty(procs, timeoutMs);
}
function waitFrozen(dir: string, version: 1 | 2, frozen: boolean, timeoutMs: number): Promise<void> {
  return io.waitFrozen(dir, version, frozen, timeoutMs);
}

// Forks without end (a failed fork at pids.max is retried, not fatal as it is for sh), ignoring SIGTERM.
const FORK_LOOP = ['/usr/bin/perl', '-e', '$SIG{TERM} = "IGNORE"; while (1) { my $p = fork; if (defined $p && $p == 0) { sleep 100; exit 0 } }'];
const DAEMON = ['/bin/sh', '-c', '(setsid /bin/sh -c "trap \\"\\" TERM HUP; /bin/sleep 100 & exec /bin/sleep 101" &); exit 0'];
const NO_TERM = ['/bin/sh', '-c', 'trap "" TERM; /bin/sleep 102'];

/**
 * A task group for the method (v2 group or v1 freezer group) with pids.max bounding the fork loop: a
 * v1 pids group joined as well (hybrid), or pids.max in the v2 group itself (v2-only).
 */
function taskGroup(mkgroup: (root: string, name: string) => string, method: GroupKillMethod, name: string) {
  if (method === 'freezer-v1') {
    const dir = mkgroup(FREEZER!, name);
    const pids = mkgroup(PIDS!, name);
    fs.writeFileSync(path.join(pids, 'pids.max'), '40');
    return { dir, procs: path.join(dir, 'cgroup.procs'), where: { joinProcs: [path.join(dir, 'cgroup.procs'), path.join(pids, 'cgroup.procs')] } };
  }
  const dir = mkgroup(V2, `${name}.scope`);
  if (PIDS) {
    const pids = mkgroup(PIDS, name);
    fs.writeFileSync(path.join(pids, 'pids.max'), '40');
    return { dir, procs: path.join(dir, 'cgroup.procs'), where: { cgroupDir: dir, joinProcs: [path.join(pids, 'cgroup.procs')] } };
  }
  fs.writeFileSync(path.join(dir, 'pids.max'), '40');
  return { dir, procs: path.join(dir, 'cgroup.procs'), where: { cgroupDir: dir } };
}
/** Why the fork-loop test for the method cannot run here, or undefined. */
function noKillGroup(method: GroupKillMethod): string | undefined {
  if (method === 'freezer-v1') return noFreezer ?? (PIDS ? undefined : 'no v1 pids hierarchy to bound the fork loop');
  return PIDS || V2_PIDS ? undefined : `neither a v1 pids hierarchy nor a pids controller at ${V2} to bound the fork loop`;
}

for (const method of ['cgroup.kill', 'freeze-v2', 'freezer-v1', 'signal-loop'] as const) {
  // Serial: the fork loop eats a CPU while it runs; other tests' timing should not depend on it.
  test.serial(`groupKill ${method}: fork loop, setsid double-forked daemon and a SIGTERM-ignorer are all gone`, async (t) => {
    const { mkgroup } = cgroups(t);
    const why = noKillGroup(method);
    if (why) { t.log(`skipped: ${why}`); t.pass(); return; }
    const g = taskGroup(mkgroup, method, `kill-${method.replace('.', '-')}`);
    const daemon = await spawnWatched(t, DAEMON, g.where);
    const noTerm = await spawnWatched(t, NO_TERM, g.where);
    t.is((await daemon.exit).exitCode, 0, 'the daemon launcher exits at once; its grandchildren stay in the group');
    const sleepers = () => procsOf(g.dir).filter((p) => {
      try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('/bin/sleep\u000010'); } catch { return false; }
    });
    // Before the fork loop fills pids.max, or the daemon's own forks could fail.
    await until('the daemon and the SIGTERM-ignorer to be running', () => sleepers().length >= 3);
    const loop = await spawnWatched(t, FORK_LOOP, g.where);
    await until('the fork loop to fill the group', () => procsOf(g.dir).length >= 20);
    // SIGTERM is not enough for all of them.
    n.signalGroup(g.procs, 15);
    await until('SIGTERM to be handled', () => n.readProcs(g.procs).length > 0 && fs.existsSync(`/proc/${noTerm.pid}`));

    const before = procsOf(g.dir).length;
    const res = await groupKill({ method, procsPath: g.procs, controlDir: g.dir, timeoutMs: 10_000 * SLOW });
    t.deepEqual(procsOf(g.dir), [], 'group empty when groupKill calls back');
    t.true(res.elapsedNs > 0 && res.elapsedNs < 10e9 * SLOW);
    if (method === 'cgroup.kill') t.is(res.signalled, 0);
    else t.true(res.signalled >= Math.min(before, 3), `signalled ${res.signalled} of ~${before}`);
    t.is((await loop.exit).signal, 9);
    t.is((await noTerm.exit).signal, 9);
    if (method === 'freezer-v1') t.is(fs.readFileSync(path.join(g.dir, 'freezer.state'), 'utf8').trim(), 'THAWED');
    if (method === 'freeze-v2') t.is(fs.readFileSync(path.join(g.dir, 'cgroup.freeze'), 'utf8').trim(), '0');
  });
}

test('groupKill on an empty group resolves at once; on a missing group with ENOENT', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'empty.scope');
  const res = await groupKill({ method: 'cgroup.kill', procsPath: path.join(g, 'cgroup.procs'), controlDir: g, timeoutMs: 1000 });
  t.is(res.signalled, 0);
  const missing = path.join(V2, PARENT, 'missing.scope');
  for (const method of ['cgroup.kill', 'freeze-v2', 'signal-loop'] as const) {
    const err = (await t.throwsAsync(groupKill({ method, procsPath: path.join(missing, 'cgroup.procs'), controlDir: missing, timeoutMs: 1000 }))) as NativeError;
    t.is(err.code, 'ENOENT', method);
    t.is(err.syscall, 'open');
    t.true(err.path!.startsWith(missing));
  }
});

test('waitEmpty: CgroupTimeoutError on a group that stays busy; resolves once it empties', async (t) => {
  const { mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'wait.scope');
  const procs = path.join(g, 'cgroup.procs');
  const s = await spawnWatched(t, ['/bin/sleep', '100'], { cgroupDir: g });
  const err = await t.throwsAsync(waitEmpty(procs, 30), { instanceOf: CgroupTimeoutError });
  t.like(err, { code: 'ERR_CGROUP_TIMEOUT', phase: 'become empty', path: procs, timeoutMs: 30 });
  // The main thread is free while the wait runs: this timer is what empties the group.
  const waiting = waitEmpty(procs, 5000 * SLOW);
  setTimeout(() => process.kill(s.pid, 'SIGKILL'), 50);
  await waiting;
  t.is((await s.exit).signal, 9);
});

test('waitFrozen: v1 freezer.state and v2 cgroup.events, both directions, and ETIMEDOUT', async (t) => {
  const { mkgroup } = cgroups(t);
  // The v1 half runs where there is a v1 freezer; the v2 half everywhere.
  const f = FREEZER ? mkgroup(FREEZER, 'wf') : undefined;
  if (!f) t.log(`v1 half skipped: ${noFreezer}`);
  const u = mkgroup(V2, 'wf.scope');
  const s = await spawnWatched(t, ['/bin/sleep', '100'], { cgroupDir: u, ...(f ? { joinProcs: [path.join(f, 'cgroup.procs')] } : {}) });
  if (f) {
    const e1 = await t.throwsAsync(waitFrozen(f, 1, true, 20), { instanceOf: CgroupTimeoutError });
    t.like(e1, { phase: 'freeze', path: f });
  }
  const e2 = await t.throwsAsync(waitFrozen(u, 2, true, 20), { instanceOf: CgroupTimeoutError });
  t.like(e2, { phase: 'freeze', path: u });

  if (f) {
    fs.writeFileSync(path.join(f, 'freezer.state'), 'FROZEN');
    await waitFrozen(f, 1, true, 5000 * SLOW);
    fs.writeFileSync(path.join(f, 'freezer.state'), 'THAWED');
    await waitFrozen(f, 1, false, 5000 * SLOW);
  }
  fs.writeFileSync(path.join(u, 'cgroup.freeze'), '1');
  await waitFrozen(u, 2, true, 5000 * SLOW);
  fs.writeFileSync(path.join(u, 'cgroup.freeze'), '0');
  await waitFrozen(u, 2, false, 5000 * SLOW);
  process.kill(s.pid, 'SIGKILL');
  t.is((await s.exit).signal, 9);
});

// A v1-frozen task is the only way to hold a task that SIGKILL cannot end (a v2-frozen one still dies):
// where there is no v1 freezer these two skip.
test('groupKill signal-loop: CgroupTimeoutError while a v1-frozen task cannot die; main thread free; empties after thaw', async (t) => {
  const { mkgroup } = cgroups(t);
  if (!FREEZER) { t.log(`skipped: ${noFreezer}`); t.pass(); return; }
  const f = mkgroup(FREEZER, 'stuck');
  const u = mkgroup(V2, 'stuck.scope');
  const procs = path.join(u, 'cgroup.procs');
  const s = await spawnWatched(t, ['/bin/sleep', '100'], { cgroupDir: u, joinProcs: [path.join(f, 'cgroup.procs')] });
  fs.writeFileSync(path.join(f, 'freezer.state'), 'FROZEN');
  await waitFrozen(f, 1, true, 5000 * SLOW);
  let ticks = 0;
  const iv = setInterval(() => ticks++, 5);
  try {
    const err = await t.throwsAsync(groupKill({ method: 'signal-loop', procsPath: procs, controlDir: u, timeoutMs: 150 }), { instanceOf: CgroupTimeoutError });
    t.like(err, { phase: 'become empty', path: procs });
    // Logged, not asserted: a CPU-starved machine (or an ASan build) may not tick a 5 ms timer within a
    // 150 ms bound. The thaw-from-a-timer below is the proof that the loop runs while groupKill waits.
    t.log(`event loop ticked ${ticks} times while groupKill ran`);
  } finally {
    clearInterval(iv);
  }
  // Now the thaw comes from a JS timer while groupKill waits: it can only finish if the loop runs.
  const killing = groupKill({ method: 'signal-loop', procsPath: procs, controlDir: u, timeoutMs: 5000 * SLOW });
  setTimeout(() => fs.writeFileSync(path.join(f, 'freezer.state'), 'THAWED'), 50);
  const res = await killing;
  t.true(res.signalled >= 1);
  t.deepEqual(procsOf(u), []);
  t.is((await s.exit).signal, 9);
});

test('groupKill freeze-v2: CgroupTimeoutError freeze when the group cannot freeze, and it is thawed again', async (t) => {
  const { mkgroup } = cgroups(t);
  // A task held in the v1 freezer cannot reach the v2 freezer's trap, so cgroup.events never says frozen 1.
  if (!FREEZER) { t.log(`skipped: ${noFreezer}`); t.pass(); return; }
  const f = mkgroup(FREEZER, 'nofreeze');
  const u = mkgroup(V2, 'nofreeze.scope');
  const s = await spawnWatched(t, ['/bin/sleep', '100'], { cgroupDir: u, joinProcs: [path.join(f, 'cgroup.procs')] });
  fs.writeFileSync(path.join(f, 'freezer.state'), 'FROZEN');
  await waitFrozen(f, 1, true, 5000 * SLOW);
  const r = await groupKill({ method: 'freeze-v2', procsPath: path.join(u, 'cgroup.procs'), controlDir: u, timeoutMs: 150 }).then(
    (res) => ({ err: null, res }),
    (err: CgroupTimeoutError) => ({ err, res: undefined }),
  );
  fs.writeFileSync(path.join(f, 'freezer.state'), 'THAWED');
  if (r.err === null) {
    // This kernel froze it anyway (v2 freezer reached the task): the kill must then have worked.
    t.log('kernel froze a v1-frozen task through cgroup.freeze; timeout path not provoked here');
    t.deepEqual(procsOf(u), []);
  } else {
    t.true(r.err instanceof CgroupTimeoutError);
    t.like(r.err, { phase: 'freeze', path: u });
    t.is(fs.readFileSync(path.join(u, 'cgroup.freeze'), 'utf8').trim(), '0', 'thawed on the way out');
    process.kill(s.pid, 'SIGKILL');
  }
  t.is((await s.exit).signal, 9);
});
