/**
 * Escape tests on the real kernel: whatever a task does (forks at once, double-forks a setsid daemon,
 * ignores SIGTERM, forks in a loop), kill() leaves its group empty, waited for, not slept.
 * Runs on the host's own manager (v1 on a hybrid/v1 host, v2 on a v2 host) and, where a second
 * hierarchy exists (the unified mount of a hybrid host), on the v2 manager there too.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createCgroupManager } from '../src/cgroups/factory.js';
import { CgroupIO } from '../src/cgroups/io.js';
import type { CgroupManager } from '../src/cgroups/types.js';
import { CgroupTimeoutError } from '../src/errors.js';
import {
  groupDirsUnder, hostLayout, isRoot, newAllocId, pidAlive, startInGroup, v2Layout, waitFor,
} from './helpers/cgroups.js';
import { bound, sandbox } from './helpers/sandbox.js';
import type { CgroupLayout } from '../src/cgroups/types.js';

type Manager = CgroupManager;
/** The layouts to run on; each test makes a manager on its own sandbox's parent. */
const variants: Array<{ label: string; layout: CgroupLayout }> = [];

if (isRoot) {
  const host = hostLayout();
  variants.push({ label: `host ${host.mode} (${host.version} manager)`, layout: host });
  const v2 = v2Layout();
  if (host.version === 'v1' && v2) variants.push({ label: `v2 manager on ${v2.root}`, layout: v2 });
}

if (!isRoot) test('cgroup kill tests need root', (t) => { t.log('skipped: not root'); t.pass(); });

/**
 * test.serial with a manager of the variant's kind on a sandbox parent of its own, torn down
 * (processes killed, groups removed) whatever happens.
 */
function killTest(title: string, layout: CgroupLayout, fn: (t: import('ava').ExecutionContext, mgr: Manager) => Promise<void>): void {
  test.serial(title, async (t) => {
    const sb = sandbox(t, 'kill');
    // A v1 freeze completes when every task reaches the freezer; on a loaded machine that took over
    // the default 5 s (a loaded run): the event wait's bound is stretched, the tests assert the states.
    const mgr = createCgroupManager({ layout, parentName: sb.parentFor(layout.version), freezeTimeoutMs: bound(30_000) });
    sb.defer(async () => {
      try { await mgr.removeParentIfEmpty(); } catch { /* the sandbox removes it */ }
    });
    await fn(t, mgr);
  });
}

const bothDead = (pids: number[]) => pids.every((p) => !pidAlive(p));

for (const { label, layout } of variants) {
  killTest(`${label}: a child that forks at once`, layout, async (t, mgr) => {
    const g = mgr.create(newAllocId(), 'forker');
    const s = await startInGroup(g, 'sh', ['-c', 'sleep 30 & sleep 30 & sleep 30 & exec sleep 30']);
    await waitFor(() => g.pids().length >= 4, { what: '4 processes in the group' });
    const seen = g.pids();
    const r = await g.kill();
    t.log(`${r.method}: ${r.signalled} signalled in ${(r.elapsedNs / 1e6).toFixed(2)} ms`);
    t.deepEqual(g.pids(), [], 'empty as soon as kill() resolves');
    t.is((await s.exited).signal, 9);
    await waitFor(() => bothDead(seen), { what: 'every process gone' });
    await g.destroy();
    t.deepEqual(groupDirsUnder(mgr.parentName), []);
  });

  killTest(`${label}: a setsid double-forked daemon`, layout, async (t, mgr) => {
    const g = mgr.create(newAllocId(), 'daemon');
    // The middle shell exits at once: the daemon is an orphan in its own session, still in our group.
    const s = await startInGroup(g, 'sh', ['-c', 'setsid sh -c "sleep 30 & exit 0"; exec sleep 30'], { setsid: false });
    const comm = (p: number) => { try { return fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim(); } catch { return ''; } };
    const sid = (p: number) => { try { return fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[3]; } catch { return ''; } };
    await waitFor(() => { const p = g.pids(); return p.length === 2 && p.every((x) => comm(x) === 'sleep'); }, { what: 'daemon and parent (both sleep) in the group' });
    const seen = g.pids();
    t.is(new Set(seen.map(sid)).size, 2, 'the daemon runs in another session');
    await g.kill();
    t.deepEqual(g.pids(), []);
    await s.exited;
    await waitFor(() => bothDead(seen), { what: 'daemon gone' });
    await g.destroy();
  });

  killTest(`${label}: a process that ignores SIGTERM`, layout, async (t, mgr) => {
    const g = mgr.create(newAllocId(), 'stubborn');
    const s = await startInGroup(g, 'sh', ['-c', 'trap "" TERM; while :; do sleep 0.05; done']);
    // A sleep child shows that the trap is set (SIGTERM before that would end the shell).
    await waitFor(() => g.pids().length >= 2, { what: 'the shell past its trap' });
    t.true(g.signal('SIGTERM') >= 1);
    const before = new Set(g.pids());
    // The shell keeps looping after the signal: a sleep child it forked since then is the proof
    // (waited for, not slept for).
    await waitFor(() => g.pids().some((p) => !before.has(p)), { what: 'a child forked after SIGTERM' });
    t.true(pidAlive(s.pid), 'SIGTERM was ignored');
    await g.kill();
    t.deepEqual(g.pids(), []);
    t.is((await s.exited).signal, 9);
    await g.destroy();
  });

  killTest(`${label}: a (bounded) fork loop, killed while it forks; the event loop keeps ticking`, layout, async (t, mgr) => {
    const g = mgr.create(newAllocId(), 'forkloop');
    const s = await startInGroup(g, 'sh', ['-c', 'i=0; while [ $i -lt 400 ]; do sleep 20 & i=$((i+1)); done; wait']);
    await waitFor(() => g.pids().length >= 30, { what: 'the fork loop to get going' });
    let ticks = 0;
    const iv = setInterval(() => { ticks++; }, 1);
    const r = await g.kill({ timeoutMs: 10_000 });
    clearInterval(iv);
    t.log(`${r.method}: ${r.signalled} signalled in ${(r.elapsedNs / 1e6).toFixed(2)} ms, ${ticks} timer ticks meanwhile`);
    t.deepEqual(g.pids(), []);
    t.is((await s.exited).signal, 9);
    await g.destroy();
    t.false(fs.existsSync((g.placement.cgroupDir ?? g.paths.freezer)!));
  });

  killTest(`${label}: freeze and thaw, observed through the state files`, layout, async (t, mgr) => {
    const g = mgr.create(newAllocId(), 'freezeme');
    const s = await startInGroup(g, 'sh', ['-c', 'while :; do sleep 0.05; done']);
    await waitFor(() => g.pids().length >= 1);
    const state = () => (g.placement.cgroupDir
      ? /^frozen (\d)$/m.exec(fs.readFileSync(path.join(g.placement.cgroupDir, 'cgroup.events'), 'utf8'))![1]
      : fs.readFileSync(path.join(g.paths.freezer!, 'freezer.state'), 'utf8').trim());
    await g.freeze();
    t.is(state(), g.placement.cgroupDir ? '1' : 'FROZEN');
    await g.thaw();
    t.is(state(), g.placement.cgroupDir ? '0' : 'THAWED');
    // A wait that cannot succeed (frozen, waiting for thawed without thawing) times out off the event loop.
    await g.freeze();
    let ticks = 0;
    const iv = setInterval(() => { ticks++; }, 2);
    const v = g.placement.cgroupDir ? 2 : 1;
    const e = await t.throwsAsync(new CgroupIO().waitFrozen(g.placement.cgroupDir ?? g.paths.freezer!, v, false, 200), { instanceOf: CgroupTimeoutError });
    clearInterval(iv);
    t.log(`timeout: ${e!.message}; ${ticks} ticks meanwhile`);
    t.is(e!.phase, 'thaw');
    t.is(e!.timeoutMs, 200);
    // A wait on the main thread would allow no tick at all; under heavy load the loop ticks rarely, but it ticks.
    t.true(ticks >= 2, `the event loop ticked ${ticks} times during a 200 ms wait`);
    // kill works on a frozen group too.
    await g.kill();
    t.deepEqual(g.pids(), []);
    await s.exited;
    await g.destroy();
  });
}
