/**
 * The v2 manager on the real kernel: on a hybrid host, on the unified mount (no controllers: freeze,
 * kill, procs, events, clone3 work; cpuset/memory/pids/cpu limits are a clear CgroupUnsupportedError);
 * on a v2 host, at the root with real controllers (limits, cpusets, stats, OOM). Tests that need a
 * controller skip (with the reason logged) where it is missing, and vice versa.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CgroupV2Manager } from '../src/cgroups/v2.js';
import { createCgroupManager } from '../src/cgroups/factory.js';
import type { CgroupLayout, TaskResources } from '../src/cgroups/types.js';
import { spawnProcess } from '../src/native.js';
import { CgroupError, CgroupUnsupportedError, CpusetConflictError, InvalidConfigError } from '../src/errors.js';
import {
  cpusAllowed, groupDirsUnder, hostLayout, isRoot, newAllocId, procCgroups, startInGroup, v2Layout, waitFor,
} from './helpers/cgroups.js';
import { sandbox, within } from './helpers/sandbox.js';

const layout: CgroupLayout | undefined = isRoot ? v2Layout() : undefined;
const skipReason = !isRoot ? 'not root' : !layout ? 'no cgroup2 hierarchy on this host' : undefined;

/**
 * test.serial with a v2 manager on a sandbox parent of its own (`parent`), torn down (processes
 * killed, groups removed) whatever happens; skips (logging why) without cgroup2 or without the
 * controllers the test needs.
 */
function v2test(title: string, fn: (t: import('ava').ExecutionContext, m: CgroupV2Manager, parent: string) => Promise<void> | void, needs: string[] = []): void {
  test.serial(title, async (t) => {
    const sb = sandbox(t, 'v2');
    if (skipReason) { t.log(`skipped: ${skipReason}`); t.pass(); return; }
    const m = new CgroupV2Manager({ layout, parentName: sb.slice });
    sb.defer(async () => {
      try { await m.removeParentIfEmpty(); } catch { /* the sandbox removes it */ }
    });
    const missing = needs.filter((c) => !m.controllers().includes(c));
    if (missing.length > 0) { t.log(`skipped: ${layout!.root} offers no ${missing.join(', ')} controller (mode ${layout!.mode})`); t.pass(); return; }
    await fn(t, m, sb.slice);
  });
}

v2test('layout and fingerprint', (t, m, parent) => {
  const f = m.fingerprint();
  t.log(JSON.stringify(f));
  t.is(f['unique.cgroups.version'], 'v2');
  t.is(f['cgroups.root'], layout!.root);
  // The factory picks v2 only where cgroup2 is the root.
  const host = hostLayout();
  t.is(createCgroupManager({ layout: host, parentName: parent.replace(/\.slice$/, '') }).version, host.mode === 'v2' ? 'v2' : 'v1');
});

v2test('a group, a process spawned into it with clone3, procs, freeze/thaw through cgroup.events, kill with cgroup.kill', async (t, m, parent) => {
  const g = m.create(newAllocId(), 'web');
  const dir = g.placement.cgroupDir!;
  t.is(dir, path.join(layout!.root, parent, 'share.slice', `${g.name}.scope`));
  const r = await spawnProcess({ file: '/bin/sleep', argv: ['sleep', '30'], envp: [], stdio: [-1, -1, -1], cgroupDir: dir, setsid: true, timeoutMs: 30_000 });
  t.is(r.placement, 'clone3', 'placed by CLONE_INTO_CGROUP');
  // Ref'd (it closes itself on the exit): the kill's waits end when the group is empty, maybe before the exit is seen.
  const exited = new Promise<number | null>((res) => r.process.watch(true, (i) => res(i.signal)));
  t.is(procCgroups(r.pid)[''], `/${parent}/share.slice/${g.name}.scope`);
  t.deepEqual(g.pids(), [r.pid]);
  const frozen = () => /^frozen (\d)$/m.exec(fs.readFileSync(path.join(dir, 'cgroup.events'), 'utf8'))![1];
  await g.freeze();
  t.is(frozen(), '1');
  t.regex(fs.readFileSync(`/proc/${r.pid}/status`, 'utf8'), /State:\s+S/);
  await g.thaw();
  t.is(frozen(), '0');
  const k = await g.kill();
  t.is(k.method, fs.existsSync(path.join(dir, 'cgroup.kill')) ? 'cgroup.kill' : 'freeze-v2');
  t.deepEqual(g.pids(), []);
  t.is(await exited, 9);
  t.regex(fs.readFileSync(path.join(dir, 'cgroup.events'), 'utf8'), /populated 0/);
  t.false(g.oomKilled());
  await g.destroy();
  t.false(fs.existsSync(dir));
});

v2test('stats: cpu.stat works everywhere; memory is reported unavailable with the reason where there is no memory controller', async (t, m) => {
  const has = (c: string) => m.controllers().includes(c);
  const g = m.create(newAllocId(), 'burn');
  const s = await startInGroup(g, 'sh', ['-c', 'while :; do :; done']);
  await waitFor(() => g.stats().cpu.totalNs > 50e6, { what: '50 ms of CPU', timeoutMs: 10_000 });
  const st = g.stats();
  t.log(JSON.stringify(st));
  t.true(st.cpu.userNs + st.cpu.systemNs > 0);
  if (has('memory')) t.truthy(st.memory);
  else {
    t.is(st.memory, undefined);
    t.regex(st.unavailable.memory!, /memory controller/);
  }
  await g.destroy();
  await s.exited;
});

v2test('without controllers: cpuset, memory, pids and cpu limits are a clear CgroupUnsupportedError and nothing is created', (t, m, parent) => {
  const has = (c: string) => m.controllers().includes(c);
  const cases: Array<[TaskResources, string]> = [[{ cores: [0] }, 'cpuset'], [{ memoryBytes: 64 << 20 }, 'memory'], [{ pidsMax: 10 }, 'pids'], [{ cpuShares: 512 }, 'cpu']];
  let checked = 0;
  for (const [res, ctrl] of cases) {
    if (has(ctrl)) continue;
    checked++;
    const alloc = newAllocId();
    const e = t.throws(() => m.create(alloc, 'limited', { resources: res }), { instanceOf: CgroupUnsupportedError });
    t.is(e!.feature, ctrl);
    t.regex(e!.message, new RegExp(ctrl));
    t.deepEqual(groupDirsUnder(parent).filter((d) => d.includes(alloc)), []);
  }
  if (checked === 0) t.log(`every controller is offered at ${layout!.root}: nothing to refuse`);
  t.pass();
});

v2test('bad input: malformed alloc id, traversal, unknown core, a group that does not exist, a duplicate', async (t, m, parent) => {
  const has = (c: string) => m.controllers().includes(c);
  const alloc = newAllocId();
  t.is(t.throws(() => m.create('1234', 'x'), { instanceOf: InvalidConfigError })!.field, 'allocId');
  t.is(t.throws(() => m.create(alloc, '..'), { instanceOf: InvalidConfigError })!.field, 'name');
  t.is(t.throws(() => m.create(alloc, 'x/../../y'), { instanceOf: InvalidConfigError })!.field, 'name');
  if (has('cpuset')) {
    const e = t.throws(() => m.create(alloc, 'x', { resources: { cores: [4096] } }), { instanceOf: InvalidConfigError });
    t.is(e!.field, 'resources.cores');
    t.regex(e!.message, /4096/);
  }
  const missing = t.throws(() => m.open(alloc, 'ghost'), { instanceOf: CgroupError });
  t.is(missing!.code, 'ENOENT');
  t.regex(missing!.message, /ghost\.scope/);
  const g = m.create(alloc, 'dup');
  t.is(t.throws(() => m.create(alloc, 'dup'), { instanceOf: CgroupError })!.code, 'EEXIST');
  const m2 = new CgroupV2Manager({ layout, parentName: parent });
  t.is(t.throws(() => m2.create(alloc, 'dup'), { instanceOf: CgroupError })!.code, 'EEXIST');
  await g.destroy();
  t.deepEqual(groupDirsUnder(parent), []);
});

v2test('recovery: cleanupStale removes empty leftovers, reports busy ones', async (t, m, parent) => {
  const busy = m.create(newAllocId(), 'busy');
  const s = await startInGroup(busy, 'sleep', ['30']);
  const empty = m.create(newAllocId(), 'empty');
  const m2 = new CgroupV2Manager({ layout, parentName: parent });
  const r = await m2.cleanupStale();
  t.deepEqual(r.removed, [empty.name]);
  t.deepEqual(r.nonEmpty, [busy.name]);
  await m2.open(busy.allocId, busy.taskName).destroy();
  await s.exited;
  t.deepEqual(groupDirsUnder(parent), []);
});

v2test('limits with real controllers: cpu.weight, memory.max (+swap 0), pids.max in the group', async (t, m) => {
  const g = m.create(newAllocId(), 'limited', { resources: { cpuShares: 1024, memoryBytes: 64 << 20, pidsMax: 32 } });
  const dir = g.placement.cgroupDir!;
  t.is(fs.readFileSync(path.join(dir, 'cpu.weight'), 'utf8').trim(), '39');
  t.is(fs.readFileSync(path.join(dir, 'memory.max'), 'utf8').trim(), String(64 << 20));
  t.is(fs.readFileSync(path.join(dir, 'pids.max'), 'utf8').trim(), '32');
  if (fs.existsSync(path.join(dir, 'memory.swap.max'))) t.is(fs.readFileSync(path.join(dir, 'memory.swap.max'), 'utf8').trim(), '0');
  await g.destroy();
}, ['cpu', 'memory', 'pids']);

v2test('memory stats and OOM with a real memory controller', async (t, m) => {
  if (!fs.existsSync('/usr/bin/python3')) { t.log('skipped: no /usr/bin/python3 to allocate memory'); t.pass(); return; }
  const g = m.create(newAllocId(), 'mem');
  const s = await startInGroup(g, '/usr/bin/python3', ['-c', "import time\ns = b'x' * (48 << 20)\ntime.sleep(30)"]);
  await waitFor(() => (g.stats().memory?.rssBytes ?? 0) > 40 << 20, { what: '40 MiB of anon memory charged', timeoutMs: 30_000 });
  const st = g.stats();
  t.log(JSON.stringify(st));
  t.true(st.memory!.usageBytes >= st.memory!.rssBytes);
  t.true(st.memory!.maxUsageBytes >= 40 << 20);
  await g.destroy();
  await s.exited;
  const hog = m.create(newAllocId(), 'hog', { resources: { memoryBytes: 16 << 20 } });
  const h = await startInGroup(hog, '/usr/bin/python3', ['-c', "s = b'x' * (64 << 20)"]);
  t.is((await within(h.exited, 20_000, 'the hog to be OOM-killed')).signal, 9);
  t.true(hog.oomKilled());
  await hog.destroy();
}, ['memory']);

v2test('cpusets with a real cpuset controller: reserved core taken from shared tasks, given back on release', async (t, m) => {
  const usable = m.usableCores();
  if (usable.length < 2) { t.log(`skipped: needs 2 cores, usable ${usable.join(',')}`); t.pass(); return; }
  const c1 = usable[usable.length - 1]!;
  const shared = m.create(newAllocId(), 'shared');
  const s = await startInGroup(shared, 'sleep', ['30']);
  const res = m.create(newAllocId(), 'reserved', { resources: { cores: [c1] } });
  const r = await startInGroup(res, 'sleep', ['30']);
  t.is(cpusAllowed(r.pid), String(c1));
  t.false(cpusAllowed(s.pid).split(/[,-]/).includes(String(c1)) && usable.length === 2);
  t.deepEqual(shared.cpus(), usable.filter((c) => c !== c1));
  t.throws(() => m.create(newAllocId(), 'thief', { resources: { cores: [c1] } }), { instanceOf: CpusetConflictError });
  await res.destroy();
  await r.exited;
  t.deepEqual(shared.cpus(), usable);
  await waitFor(() => cpusAllowed(s.pid) === fs.readFileSync(path.join(shared.placement.cgroupDir!, 'cpuset.cpus.effective'), 'utf8').trim());
  t.pass();
  await shared.destroy();
  await s.exited;
}, ['cpuset']);
