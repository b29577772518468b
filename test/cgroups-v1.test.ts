/**
 * The v1 manager on the real kernel (a v1 or hybrid host). On a v2-only host every test here skips
 * with the reason logged. Each test runs a manager of its own on a parent of its own (sandbox), torn
 * down (processes killed, groups removed) even when the test fails, so one failure never fails another.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupV1Manager } from '../src/cgroups/v1.js';
import type { CgroupLayout } from '../src/cgroups/types.js';
import { CgroupError, CgroupUnsupportedError, CpusetConflictError, InvalidConfigError } from '../src/errors.js';
import {
  cpusAllowed, groupDirsUnder, hostLayout, isRoot, newAllocId, procCgroups, startInGroup, waitFor,
} from './helpers/cgroups.js';
import { sandbox, within, type Sandbox } from './helpers/sandbox.js';

const layout: CgroupLayout | undefined = isRoot ? hostLayout() : undefined;
const skipReason = !isRoot ? 'not root' : layout!.version !== 'v1' ? `host layout is ${layout!.mode}: no cgroup v1 controllers` : undefined;

/**
 * test.serial with a sandbox (its parent, torn down whatever happens) and a manager on it; skips
 * (logging why) off v1.
 */
function v1test(title: string, fn: (t: import('ava').ExecutionContext, m: CgroupV1Manager, sb: Sandbox) => Promise<void> | void): void {
  test.serial(title, async (t) => {
    const sb = sandbox(t, 'v1');
    if (skipReason) { t.log(`skipped: ${skipReason}`); t.pass(); return; }
    const m = new CgroupV1Manager({ layout, parentName: sb.parent });
    await fn(t, m, sb);
  });
}

v1test('a group in every controller, limits written, a process spawned inside all of them', async (t, m, { parent }) => {
  const alloc = newAllocId();
  const t0 = process.hrtime.bigint();
  const g = m.create(alloc, 'web', { resources: { cpuShares: 512, memoryBytes: 64 << 20, pidsMax: 64 } });
  t.log(`create: ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2)} ms (first create also makes the parents)`);
  t.deepEqual(Object.keys(g.paths).sort(), m.controllers().slice().sort());
  t.is(fs.readFileSync(path.join(g.paths.cpu!, 'cpu.shares'), 'utf8').trim(), '512');
  t.is(fs.readFileSync(path.join(g.paths.memory!, 'memory.limit_in_bytes'), 'utf8').trim(), String(64 << 20));
  t.is(fs.readFileSync(path.join(g.paths.pids!, 'pids.max'), 'utf8').trim(), '64');
  if (fs.existsSync(path.join(g.paths.memory!, 'memory.memsw.limit_in_bytes'))) {
    t.is(fs.readFileSync(path.join(g.paths.memory!, 'memory.memsw.limit_in_bytes'), 'utf8').trim(), String(64 << 20));
  }
  const s = await startInGroup(g, 'sleep', ['30']);
  const cg = procCgroups(s.pid);
  for (const c of m.controllers()) t.is(cg[c], c === 'cpuset' ? `/${parent}/share` : `/${parent}/${alloc}-web`, `${c} placement`);
  t.deepEqual(g.pids(), [s.pid]);
  const t1 = process.hrtime.bigint();
  await g.destroy();
  t.log(`destroy (kill + rmdir of ${g.placement.joinProcs!.length} dirs): ${(Number(process.hrtime.bigint() - t1) / 1e6).toFixed(2)} ms`);
  t.is((await s.exited).signal, 9);
  t.deepEqual(groupDirsUnder(parent), []);
  // A second create/destroy, parents existing: the lean path.
  const t2 = process.hrtime.bigint();
  const g2 = m.create(newAllocId(), 'again');
  await g2.destroy();
  t.log(`create+destroy of an empty group: ${(Number(process.hrtime.bigint() - t2) / 1e6).toFixed(2)} ms`);
});

v1test('cpusets: a reservation takes core 1 from a running shared task and gives it back on release', async (t, m, { parent }) => {
  const usable = m.usableCores();
  if (usable.length < 2) { t.log(`skipped: needs 2 cores, usable ${usable.join(',')}`); t.pass(); return; }
  const [c0, c1] = [usable[0]!, usable[usable.length - 1]!];
  const shared = m.create(newAllocId(), 'shared');
  const s = await startInGroup(shared, 'sleep', ['30']);
  t.is(cpusAllowed(s.pid), usable.length === 2 ? `${c0}-${c1}` : fs.readFileSync(path.join(shared.paths.cpuset!, 'cpuset.cpus'), 'utf8').trim());
  const res = m.create(newAllocId(), 'reserved', { resources: { cores: [c1] } });
  const r = await startInGroup(res, 'sleep', ['30']);
  t.is(cpusAllowed(r.pid), String(c1));
  t.false(cpusAllowed(s.pid).split(',').includes(String(c1)));
  if (usable.length === 2) t.is(cpusAllowed(s.pid), String(c0));
  t.deepEqual(shared.cpus(), usable.filter((c) => c !== c1));
  t.deepEqual(res.cpus(), [c1]);
  // The core is taken: a second reservation of it is a conflict naming the holder; nothing is left behind.
  const before = groupDirsUnder(parent).length;
  const e = t.throws(() => m.create(newAllocId(), 'thief', { resources: { cores: [c1] } }), { instanceOf: CpusetConflictError });
  t.is(e!.heldBy, res.name);
  t.is(groupDirsUnder(parent).length, before);
  await res.destroy();
  t.is((await r.exited).signal, 9);
  t.deepEqual(shared.cpus(), usable);
  if (usable.length === 2) t.is(cpusAllowed(s.pid), `${c0}-${c1}`);
  await shared.destroy();
  await s.exited;
});

v1test('stats rise while a task burns CPU and allocates memory', async (t, m, sb) => {
  const g = m.create(newAllocId(), 'busy');
  // dd's 48 MiB buffer is charged while dd runs (~200 ms of system time on a slow machine): the peak
  // is only there once dd has finished, which the marker file says.
  const done = path.join(sb.stateDir, 'dd-done');
  const s = await startInGroup(g, 'sh', ['-c', `dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null; : > ${done}; while :; do :; done`]);
  const first = g.stats();
  await waitFor(() => fs.existsSync(done) && g.stats().cpu.totalNs > first.cpu.totalNs + 50e6, { what: 'dd finished and 50 ms of CPU', timeoutMs: 20_000 });
  const st = g.stats();
  t.log(JSON.stringify(st));
  t.true(st.cpu.totalNs > 0);
  t.true(st.cpu.userNs + st.cpu.systemNs > 0);
  t.truthy(st.memory);
  t.true(st.memory!.maxUsageBytes >= 40 << 20, `peak ${st.memory!.maxUsageBytes} ≥ 40 MiB (dd's 48 MiB buffer)`);
  t.deepEqual(st.unavailable, {});
  await g.destroy();
  await s.exited;
});

v1test('oomKilled: a task over its memory limit is killed by the kernel and reported', async (t, m) => {
  const g = m.create(newAllocId(), 'hog', { resources: { memoryBytes: 16 << 20 } });
  t.false(g.oomKilled());
  t.deepEqual(g.limitHits(), { oomKills: 0, pidsLimitHits: 0 });
  // Touches 64 MiB from user space (a kernel-mode fault would fail the syscall instead of invoking the OOM killer).
  const s = await startInGroup(g, '/usr/bin/python3', ['-c', "s = b'x' * (64 << 20)"]);
  const ex = await within(s.exited, 20_000, 'the hog to be OOM-killed');
  t.is(ex.signal, 9, 'killed by the OOM killer');
  t.true(g.oomKilled());
  t.is(g.limitHits().oomKills, 1, 'memory.oom_control oom_kill: the kernel\'s count');
  await g.destroy();
});

v1test('bad input: clear errors and no group left behind', async (t, m, { parent }) => {
  const alloc = newAllocId();
  const count = () => groupDirsUnder(parent).length;
  const n0 = count();
  const unknown = t.throws(() => m.create(alloc, 'x', { resources: { cores: [99] } }), { instanceOf: InvalidConfigError });
  t.is(unknown!.field, 'resources.cores');
  t.regex(unknown!.message, /core 99 is not usable/);
  const badId = t.throws(() => m.create('not-a-uuid', 'x'), { instanceOf: InvalidConfigError });
  t.is(badId!.field, 'allocId');
  const trav = t.throws(() => m.create(alloc, '../../escape'), { instanceOf: InvalidConfigError });
  t.is(trav!.field, 'name');
  t.throws(() => m.create(alloc, 'a/b'), { instanceOf: InvalidConfigError });
  t.throws(() => m.create(alloc, 'nul\0'), { instanceOf: InvalidConfigError });
  const missing = t.throws(() => m.open(alloc, 'never-made'), { instanceOf: CgroupError });
  t.is(missing!.code, 'ENOENT');
  t.regex(missing!.message, /never-made/);
  // A layout without the pids controller: asking for a pids limit is refused before anything is made.
  const noPids: CgroupLayout = { ...m.layout, v1Mounts: { ...m.layout.v1Mounts } };
  delete noPids.v1Mounts.pids;
  const m2 = new CgroupV1Manager({ layout: noPids, parentName: parent });
  const u = t.throws(() => m2.create(alloc, 'limited', { resources: { pidsMax: 10 } }), { instanceOf: CgroupUnsupportedError });
  t.is(u!.feature, 'pids');
  t.regex(u!.message, /pids/);
  // An existing group: EEXIST, and the existing one is untouched.
  const g = m.create(alloc, 'dup');
  const dup = t.throws(() => m.create(alloc, 'dup'), { instanceOf: CgroupError });
  t.is(dup!.code, 'EEXIST');
  t.true(fs.existsSync(g.paths.freezer!));
  await g.destroy();
  t.is(count(), n0);
});

v1test('recovery: open() re-attaches a group (with its reservation); cleanupStale removes empty leftovers and reports busy ones', async (t, m, { parent }) => {
  const usable = m.usableCores();
  const a = newAllocId();
  const res = usable.length >= 2 ? { cores: [usable[usable.length - 1]!] } : {};
  const kept = m.create(a, 'kept', { resources: res });
  const busy = m.create(newAllocId(), 'busy');
  const s = await startInGroup(busy, 'sleep', ['30']);
  const empty = m.create(newAllocId(), 'empty');
  // A new agent (a second manager on the same parent) finds them.
  const m2 = new CgroupV1Manager({ layout: m.layout, parentName: parent });
  const reopened = m2.open(a, 'kept');
  t.deepEqual(reopened.cpus(), kept.cpus());
  const mine = new Set([kept.name, busy.name, empty.name]);
  const r = await m2.cleanupStale({ keep: (n) => !mine.has(n) || n === kept.name });
  t.deepEqual(r.removed, [empty.name]);
  t.deepEqual(r.nonEmpty, [busy.name]);
  t.false(fs.existsSync(empty.paths.freezer!));
  await m2.open(busy.allocId, busy.taskName).destroy();
  await s.exited;
  await reopened.destroy();
  t.deepEqual(groupDirsUnder(parent), []);
});

v1test('destroy({ after }): the steps run in the job of the last rmdir, once the group is gone; a second destroy does not run them', async (t, m, sb) => {
  const file = path.join(sb.stateDir, 'record.json');
  fs.mkdirSync(sb.stateDir, { recursive: true });
  fs.writeFileSync(file, 'x\n');
  const g = await m.createAsync(newAllocId(), 'after');
  const dirs = (g as unknown as { owned: string[] }).owned; // the share group it joined is not one
  t.true(dirs.length > 0);
  t.true(await g.destroy({ after: [['unlink', file]] }));
  t.false(fs.existsSync(file));
  t.deepEqual(dirs.filter((d) => fs.existsSync(d)), []);
  fs.writeFileSync(file, 'y\n');
  t.false(await g.destroy({ after: [['unlink', file]] }), 'already destroyed: the caller runs its steps itself');
  t.true(fs.existsSync(file));
  // A group that cannot be removed (a process in it) keeps the file.
  const busy = await m.createAsync(newAllocId(), 'busy');
  const procs = Object.values(busy.paths).map((d) => path.join(d, 'cgroup.procs'));
  const { spawnProcess } = await import('../src/native.js');
  const r = await spawnProcess({ file: '/bin/sleep', argv: ['sleep', '30'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000, joinProcs: procs });
  sb.defer(() => { try { r.process.signal(9); } catch { /* gone */ } });
  const rmdirOnly = (busy as unknown as { owned: string[] }).owned;
  const { rmdirRetryAsync, CgroupIO } = await import('../src/cgroups/io.js');
  await t.throwsAsync(rmdirRetryAsync(new CgroupIO(), rmdirOnly, 50, [['unlink', file]]), { code: 'EBUSY' });
  t.true(fs.existsSync(file), 'the record stays while the group does');
  r.process.signal(9);
  await new Promise((res) => r.process.watch(true, res));
  t.true(await busy.destroy({ after: [['unlink', file]] }));
  t.false(fs.existsSync(file));
});
