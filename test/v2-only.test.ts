/**
 * What only a cgroups-v2-only kernel can show (the v2 lane runs this file in scripts/v2vm's guest:
 * `npm run test:v2`): with cgroup2 at /sys/fs/cgroup and real controllers, the default detection
 * picks the v2 manager, and then
 *   - the shared cpuset pool, computed in-process, is rewritten for EVERY running shared task when a
 *     reservation starts and when it ends, as the kernel shows in each process's Cpus_allowed_list;
 *   - memory.max is enforced: an OOM kill the kernel counts in memory.events (oom_kill) and oomKilled();
 *   - cpu.weight is written from Nomad/Docker shares, and it is what the scheduler uses;
 *   - a group kill is one write to cgroup.kill, even for a forking tree;
 *   - native spawn places the child with clone3(CLONE_INTO_CGROUP): it is in its group (and under its
 *     cpuset) from its first instruction.
 * Everywhere else (the hybrid host: cgroup2 only at /sys/fs/cgroup/unified, no controllers) each test
 * logs why it is skipped and passes; the host suite covers the v2 manager there.
 * Each test runs under a sandbox parent of its own (`corral-test-<run>-v2only-....slice`), removed at its
 * teardown (processes killed) even when it fails.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createCgroupManager } from '../src/cgroups/factory.js';
import { coresMinus, formatCpuList } from '../src/cgroups/cpulist.js';
import { sharesToWeight } from '../src/cgroups/resources.js';
import type { CgroupManager, TaskCgroup } from '../src/cgroups/types.js';
import { spawnProcess, type ExitInfo } from '../src/native.js';
import { cpusAllowed, newAllocId, procCgroups, startInGroup, v2CpusetHost, waitFor, type Started } from './helpers/cgroups.js';
import { bound, sandbox } from './helpers/sandbox.js';

/** The guest is emulated (10-50x slower than the host): bounds are stretched there (CORRAL_TEST_SLOWDOWN). waitFor stretches its own. */
const ms = bound;

const { layout, reason: skipReason } = v2CpusetHost();

function v2test(title: string, fn: (t: ExecutionContext, m: CgroupManager, parent: string) => Promise<void> | void, needs: string[] = []): void {
  test.serial(title, async (t) => {
    const sb = sandbox(t, 'v2only');
    if (!layout) { t.log(`skipped: ${skipReason}`); t.pass(); return; }
    const m = createCgroupManager({ parentName: sb.slice });
    sb.defer(async () => {
      try { await m.removeParentIfEmpty(); } catch { /* the sandbox removes it */ }
    });
    const missing = needs.filter((c) => !m.controllers().includes(c));
    if (missing.length > 0) { t.log(`skipped: no ${missing.join(', ')} controller for task groups here`); t.pass(); return; }
    t.timeout(ms(60_000), 'v2-only test (stretched by CORRAL_TEST_SLOWDOWN in the emulated guest)');
    await fn(t, m, sb.slice);
  });
}

function create(m: CgroupManager, task: string, resources: Parameters<CgroupManager['create']>[2] = {}): TaskCgroup {
  return m.create(newAllocId(), task, resources);
}
function start(g: TaskCgroup, file: string, args: string[]): Promise<Started> {
  return startInGroup(g, file, args);
}
/**
 * Awaits a process's exit. startInGroup's exit watch is unref'd, so a test that awaits only the exit
 * would leave the event loop empty ("promise never resolved"): hold a ref'd timer meanwhile.
 */
async function exitOf(s: Started): Promise<ExitInfo> {
  const keep = setInterval(() => undefined, 1000);
  try {
    return await s.exited;
  } finally {
    clearInterval(keep);
  }
}
const read = (g: TaskCgroup, file: string): string => fs.readFileSync(path.join(g.placement.cgroupDir!, file), 'utf8').trim();
const procsOf = (g: TaskCgroup): number[] => read(g, 'cgroup.procs').split('\n').filter(Boolean).map(Number);
async function destroy(g: TaskCgroup, ...started: Started[]): Promise<ExitInfo[]> {
  await g.destroy({ timeoutMs: ms(10_000) });
  return Promise.all(started.map(exitOf));
}

v2test('detection on a v2-only host: mode v2 at /sys/fs/cgroup, the default manager is v2, task groups are <parent>/share.slice/<allocId>-<task>.scope', (t, m, parent) => {
  const f = m.fingerprint();
  t.log(JSON.stringify(f));
  t.is(m.version, 'v2');
  t.is(f['unique.cgroups.version'], 'v2');
  t.is(f['cgroups.mode'], 'v2');
  t.is(f['cgroups.root'], '/sys/fs/cgroup');
  for (const c of ['cpuset', 'cpu', 'memory', 'pids']) t.true(m.controllers().includes(c), `controller ${c}`);
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => / - cgroup /.test(l)), 'no cgroup v1 hierarchy mounted');
  const alloc = newAllocId();
  const g = m.create(alloc, 'layout');
  t.is(g.placement.cgroupDir, path.join('/sys/fs/cgroup', parent, 'share.slice', `${alloc}-layout.scope`));
  t.regex(read(g, 'cgroup.controllers'), /cpuset/);
});

v2test('clone3 placement: the child is in its group from its first instruction', async (t, m, parent) => {
  const g = create(m, 'clone3');
  const out = path.join(os.tmpdir(), `corral-v2only-${process.pid}-${Date.now()}.out`);
  const fd = fs.openSync(out, 'w');
  try {
    // The child's very first action (cat reading /proc/self/cgroup) already sees the group.
    const r = await spawnProcess({ file: '/bin/cat', argv: ['cat', '/proc/self/cgroup'], envp: [], stdio: [-1, fd, fd], cgroupDir: g.placement.cgroupDir!, timeoutMs: 30_000 });
    t.is(r.placement, 'clone3', 'placed by clone3(CLONE_INTO_CGROUP)');
    const info = await new Promise<ExitInfo>((res) => r.process.watch(true, res));
    t.is(info.exitCode, 0);
    t.is(fs.readFileSync(out, 'utf8').trim(), `0::/${parent}/share.slice/${g.name}.scope`);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(out, { force: true });
  }
  const s = await start(g, 'sleep', ['60']);
  t.is(procCgroups(s.pid)[''], `/${parent}/share.slice/${g.name}.scope`);
  t.deepEqual(g.pids(), [s.pid]);
  await destroy(g, s);
});

v2test('the shared cpuset pool is rewritten for every running shared task when a reservation starts and ends (Cpus_allowed_list)', async (t, m) => {
  const usable = m.usableCores();
  if (usable.length < 2) { t.log(`skipped: needs 2 usable cores, has ${formatCpuList(usable)}`); t.pass(); return; }
  // Reserve the last core (the last two when there are 4 or more), so the shared pool keeps at least one.
  const reserved = usable.length >= 4 ? usable.slice(-2) : usable.slice(-1);
  const pool = coresMinus(usable, reserved);
  const all = formatCpuList(usable);
  t.log(`usable ${all}, reserving ${formatCpuList(reserved)}, shared pool while reserved ${formatCpuList(pool)}`);

  // Three shared tasks, each a small process tree (a shell with two children): every process counts.
  const shared = ['a', 'b', 'c'].map((n) => create(m, `shared-${n}`));
  const sharedProcs = await Promise.all(shared.map((g) => start(g, 'sh', ['-c', 'sleep 120 & sleep 120 & wait'])));
  for (const g of shared) await waitFor(() => procsOf(g).length === 3, { what: `3 processes in ${g.name}`, timeoutMs: 5000 });
  const allowed = () => shared.flatMap((g) => procsOf(g).map((pid) => `${g.taskName}:${pid}=${cpusAllowed(pid)}`));
  const expectAll = async (want: string, when: string) => {
    await waitFor(() => allowed().every((a) => a.endsWith(`=${want}`)), { what: `every shared process on ${want} ${when}`, timeoutMs: 2000 })
      .catch(() => undefined);
    const got = allowed();
    t.log(`${when}: ${got.join(' ')}`);
    t.true(got.length === 9 && got.every((a) => a.endsWith(`=${want}`)), `${when}: every shared process on ${want}: ${got.join(' ')}`);
    for (const g of shared) {
      t.is(read(g, 'cpuset.cpus.effective'), want, `${g.name} cpuset.cpus.effective ${when}`);
      t.deepEqual(g.cpus(), want === all ? usable : pool);
    }
  };
  await expectAll(all, 'before the reservation');

  const res = create(m, 'reserved', { resources: { cores: reserved } });
  const r = await start(res, 'sleep', ['120']);
  t.is(cpusAllowed(r.pid), formatCpuList(reserved), 'the reserving task runs on its cores only');
  t.is(read(res, 'cpuset.cpus'), formatCpuList(reserved));
  await expectAll(formatCpuList(pool), 'while the reservation holds');
  t.deepEqual(m.sharedCores(), pool);

  // A shared task that starts during the reservation gets the reduced pool, and the full one after.
  const late = create(m, 'shared-late');
  const l = await start(late, 'sleep', ['120']);
  t.is(cpusAllowed(l.pid), formatCpuList(pool));

  await destroy(res, r);
  await expectAll(all, 'after the reservation ended');
  t.is(cpusAllowed(l.pid), all, 'the late shared task got the whole pool back too');
  t.deepEqual(m.sharedCores(), usable);

  await destroy(late, l);
  for (let i = 0; i < shared.length; i++) await destroy(shared[i]!, sharedProcs[i]!);
}, ['cpuset']);

v2test('memory.max is enforced: the OOM kill shows in memory.events oom_kill and oomKilled()', async (t, m) => {
  const limit = 32 << 20;
  const g = create(m, 'hog', { resources: { memoryBytes: limit } });
  t.is(read(g, 'memory.max'), String(limit));
  t.regex(read(g, 'memory.events'), /^oom_kill 0$/m);
  // dd allocates one 64 MiB buffer and fills it from /dev/zero: twice the limit.
  const s = await start(g, '/bin/dd', ['if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1']);
  const info = await exitOf(s);
  t.is(info.signal, 9, 'killed by the OOM killer');
  const events = read(g, 'memory.events');
  t.log(events.replace(/\n/g, ', '));
  t.true(Number(/^oom_kill (\d+)$/m.exec(events)![1]) >= 1, 'memory.events counts the oom_kill');
  t.true(g.oomKilled());
  t.is(g.limitHits().oomKills, Number(/^oom_kill (\d+)$/m.exec(events)![1]), 'limitHits() is the kernel\'s count');
  await destroy(g);
}, ['memory']);

v2test('cpu.weight is written from shares and the scheduler honours it', async (t, m) => {
  const known: Array<[number, number]> = [[2, 1], [512, 20], [1024, 39], [4096, 157], [262144, 10000]];
  for (const [shares, weight] of known) {
    t.is(sharesToWeight(shares), weight, `sharesToWeight(${shares})`);
    const g = create(m, `w${shares}`, { resources: { cpuShares: shares } });
    t.is(read(g, 'cpu.weight'), String(weight), `cpu.weight for ${shares} shares`);
    await destroy(g);
  }
  // Two spinners on the same core: weight 10000 against 1 gets (nearly) all of it.
  const taskset = ['/usr/bin/taskset', '/bin/taskset'].find((p) => fs.existsSync(p));
  if (!taskset) { t.log('no taskset: the scheduling half is skipped'); return; }
  const core = String(m.usableCores()[0]);
  const heavy = create(m, 'heavy', { resources: { cpuShares: 262144 } });
  const light = create(m, 'light', { resources: { cpuShares: 2 } });
  const spin = ['-c', core, '/bin/sh', '-c', 'while :; do :; done'];
  const hs = await start(heavy, taskset, spin);
  const ls = await start(light, taskset, spin);
  const usage = (g: TaskCgroup) => Number(/^usage_usec (\d+)$/m.exec(read(g, 'cpu.stat'))![1]);
  const h0 = usage(heavy);
  const l0 = usage(light);
  await waitFor(() => usage(heavy) - h0 + usage(light) - l0 > 1_500_000, { what: '1.5 s of CPU between the spinners', timeoutMs: 10_000, intervalMs: 50 });
  const dh = usage(heavy) - h0;
  const dl = usage(light) - l0;
  t.log(`same core ${core}: weight 10000 used ${dh} us, weight 1 used ${dl} us`);
  t.true(dh > 4 * dl, `the heavier weight gets most of the core (${dh} vs ${dl} us)`);
  await destroy(heavy, hs);
  await destroy(light, ls);
}, ['cpu']);

v2test('kill is one write to cgroup.kill, even for a forking tree', async (t, m) => {
  const g = create(m, 'tree');
  t.true(fs.existsSync(path.join(g.placement.cgroupDir!, 'cgroup.kill')), 'the kernel has cgroup.kill');
  const s = await start(g, 'sh', ['-c', 'for i in 1 2 3 4; do sleep 120 & done; (while :; do sleep 120 & wait; done) & wait']);
  await waitFor(() => procsOf(g).length >= 6, { what: 'a tree of 6+ processes', timeoutMs: 5000 });
  const pids = procsOf(g);
  const k = await g.kill({ timeoutMs: ms(5000) });
  t.log(`${pids.length} processes, ${JSON.stringify(k)}`);
  t.is(k.method, 'cgroup.kill');
  t.is(k.signalled, 0, 'no per-pid signals: the kernel killed the group');
  t.deepEqual(g.pids(), []);
  t.regex(read(g, 'cgroup.events'), /^populated 0$/m);
  t.is((await exitOf(s)).signal, 9);
  for (const p of pids) t.false(fs.existsSync(`/proc/${p}/status`) && !/State:\s+Z/.test(fs.readFileSync(`/proc/${p}/status`, 'utf8')), `pid ${p} gone`);
  await destroy(g);
});
