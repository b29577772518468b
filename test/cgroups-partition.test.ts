/**
 * The cpuset partition on the real kernel, on the host's own manager (v1 on a hybrid/v1 host, v2 in
 * the v2 lane): shared tasks follow a reservation through their share parent; two processes reserving
 * at once never overlap; a process SIGKILLed while holding the host lock does not wedge the next;
 * a task started under corral 0.1's layout is recovered, kept off reserved cores and cleaned up.
 * Skips (saying why) without root, without a cpuset controller, or with fewer than 2 usable cores.
 */
import test from 'ava';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { createCgroupManager } from '../src/cgroups/factory.js';
import { formatCpuList, parseCpuList } from '../src/cgroups/cpulist.js';
import type { CgroupLayout, CgroupManager } from '../src/cgroups/types.js';
import { CgroupTimeoutError, CpusetConflictError } from '../src/errors.js';
import { cpusAllowed, groupDirsUnder, hostLayout, isRoot, newAllocId, startInGroup, waitFor, type Started } from './helpers/cgroups.js';
import { type Sandbox, bound, sandbox, uniqueName } from './helpers/sandbox.js';

const layout: CgroupLayout | undefined = isRoot ? hostLayout() : undefined;

function skipReason(): string | undefined {
  if (!isRoot) return 'not root';
  const m = createCgroupManager({ layout: layout!, parentName: uniqueName('partition-probe'), lockDir: os.tmpdir() });
  if (!m.controllers().includes('cpuset')) return `no cpuset controller for the ${m.version} manager here (mode ${layout!.mode})`;
  if (m.usableCores().length < 2) return `needs 2 usable cores, has ${formatCpuList(m.usableCores())}`;
  return undefined;
}
const skip = skipReason();

/** Each test: its own sandbox (parent, and its state dir as the lock dir every process of the test uses). */
interface Ctx { parent: string; lockDir: string; sb: Sandbox; manager(opts?: { lockTimeoutMs?: number }): CgroupManager }

function ptest(title: string, fn: (t: import('ava').ExecutionContext, c: Ctx) => Promise<void>): void {
  test.serial(title, async (t) => {
    const sb = sandbox(t, 'partition');
    if (skip) { t.log(`skipped: ${skip}`); t.pass(); return; }
    const parent = sb.parentFor(layout!.version);
    const lockDir = sb.stateDir;
    const manager = (opts: { lockTimeoutMs?: number } = {}) => createCgroupManager({ layout: layout!, parentName: parent, lockDir, ...opts });
    await fn(t, { parent, lockDir, sb, manager });
  });
}

/** A second corral process (test/fixtures/cgroups-partition/agent.ts) with a line protocol; killed at teardown. */
function agent(c: Ctx): { proc: ChildProcessWithoutNullStreams; ask: (line: string) => Promise<Record<string, unknown>> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'fixtures/cgroups-partition/agent.ts'), c.parent, c.lockDir], { stdio: 'pipe' });
  c.sb.defer(() => { proc.kill('SIGKILL'); });
  const answers: Array<(v: Record<string, unknown>) => void> = [];
  readline.createInterface({ input: proc.stdout }).on('line', (l) => answers.shift()?.(JSON.parse(l) as Record<string, unknown>));
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += String(d); });
  const ask = (line: string) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not answer ${JSON.stringify(line)} in time; stderr: ${stderr}`)), bound(30_000));
    answers.push((v) => { clearTimeout(timer); resolve(v); });
    proc.stdin.write(line + '\n');
  });
  return { proc, ask };
}

const allowedOf = (s: Started) => cpusAllowed(s.pid);

ptest('a reservation begins and ends while many shared tasks run: each one\'s Cpus_allowed_list follows, never holding the reserved core', async (t, c) => {
  const m = c.manager();
  const usable = m.usableCores();
  const core = usable[usable.length - 1]!;
  const rest = formatCpuList(usable.filter((c) => c !== core));
  const all = formatCpuList(usable);
  const N = 40;
  const shared = Array.from({ length: N }, (_, i) => m.create(newAllocId(), `s${i}`));
  const procs = await Promise.all(shared.map((g) => startInGroup(g, 'sleep', ['60'])));
  await waitFor(() => procs.every((p) => allowedOf(p) === all), { what: `${N} shared tasks on ${all}` });
  const t0 = process.hrtime.bigint();
  const r = m.create(newAllocId(), 'reserved', { resources: { cores: [core] } });
  const beginMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const rp = await startInGroup(r, 'sleep', ['60']);
  t.is(allowedOf(rp), String(core));
  // On v1 the kernel moves the share group's tasks before the write returns; v2 propagates too: waited, bounded.
  await waitFor(() => procs.every((p) => allowedOf(p) === rest), { what: `every shared task on ${rest}`, timeoutMs: 5000 });
  for (const p of procs) t.false(parseCpuList(allowedOf(p)).includes(core));
  t.deepEqual(m.sharedCores(), usable.filter((c) => c !== core));
  const t1 = process.hrtime.bigint();
  await r.destroy();
  const endMs = Number(process.hrtime.bigint() - t1) / 1e6;
  t.is((await rp.exited).signal, 9);
  await waitFor(() => procs.every((p) => allowedOf(p) === all), { what: `every shared task back on ${all}`, timeoutMs: 5000 });
  t.log(`${N} shared tasks: reservation began in ${beginMs.toFixed(2)} ms (create included), ended in ${endMs.toFixed(2)} ms (kill + rmdir included)`);
  for (const g of shared) await g.destroy();
  t.deepEqual(groupDirsUnder(m.parentName), []);
});

ptest('two managers in two processes reserving the same core at once: one gets it, the other a CpusetConflictError naming it', async (t, c) => {
  const m = c.manager();
  const parentName = c.parent;
  const usable = m.usableCores();
  const core = usable[usable.length - 1]!;
  const a = agent(c);
  const b = agent(c);
  // A shared task of this process watches the whole time.
  const watcher = m.create(newAllocId(), 'watcher');
  const w = await startInGroup(watcher, 'sleep', ['60']);
  const rounds = 8;
  const winners: string[] = [];
  for (let i = 0; i < rounds; i++) {
    const [ra, rb] = await Promise.all([a.ask(`reserve ${core} a${i}`), b.ask(`reserve ${core} b${i}`)]);
    const oks = [ra, rb].filter((r) => r.ok);
    t.is(oks.length, 1, `round ${i}: exactly one reservation of core ${core} (a: ${JSON.stringify(ra)}, b: ${JSON.stringify(rb)})`);
    const [win, lose] = ra.ok ? [ra, rb] : [rb, ra];
    t.is(lose.code, 'ERR_CPUSET_CONFLICT');
    t.is(lose.heldBy, win.name, 'the conflict names the holder');
    winners.push(String(win.name).slice(37));
    // This process sees the reservation in the tree, and its shared task is off the core.
    t.deepEqual(m.sharedCores(), usable.filter((c) => c !== core));
    await waitFor(() => !parseCpuList(cpusAllowed(w.pid)).includes(core), { what: 'the shared task off the reserved core' });
    const e = t.throws(() => m.create(newAllocId(), 'thief', { resources: { cores: [core] } }), { instanceOf: CpusetConflictError });
    t.is(e!.heldBy, win.name as string);
    t.deepEqual(await (ra.ok ? a : b).ask('release'), { ok: true });
  }
  t.log(`winners: ${winners.join(' ')}`);
  t.deepEqual(m.sharedCores(), usable);
  await waitFor(() => cpusAllowed(w.pid) === formatCpuList(usable), { what: 'the shared task back on every core' });
  await watcher.destroy();
  t.deepEqual(groupDirsUnder(parentName), []);
});

ptest('a process SIGKILLed while holding the host lock does not wedge the next one', async (t, c) => {
  const m = c.manager({ lockTimeoutMs: 300 });
  const usable = m.usableCores();
  const core = usable[usable.length - 1]!;
  await m.create(newAllocId(), 'first').destroy(); // sets the parent up
  const a = agent(c);
  t.deepEqual(await a.ask('hold-lock'), { held: true });
  // While it holds the lock, a reservation waits, bounded, and names the holder.
  const e = t.throws(() => m.create(newAllocId(), 'blocked', { resources: { cores: [core] } }), { instanceOf: CgroupTimeoutError });
  t.regex(e!.message, new RegExp(`held by pid ${a.proc.pid}`));
  t.deepEqual(groupDirsUnder(m.parentName), [], 'nothing left by the refused reservation');
  // createAsync waits for the lock on timers: the loop keeps ticking, and the bound and the holder's name are the same.
  let beats = 0;
  let last = performance.now();
  let gap = 0;
  const hb = setInterval(() => { const n = performance.now(); gap = Math.max(gap, n - last); last = n; beats++; }, 10);
  const t1 = performance.now();
  const ea = await t.throwsAsync(m.createAsync(newAllocId(), 'blocked-async', { resources: { cores: [core] } }), { instanceOf: CgroupTimeoutError });
  clearInterval(hb);
  t.log(`createAsync while the lock is held: ${ea!.code} after ${(performance.now() - t1).toFixed(0)} ms (bound 300); ${beats} heartbeats, max gap ${gap.toFixed(1)} ms`);
  t.regex(ea!.message, new RegExp(`held by pid ${a.proc.pid}`));
  t.true(beats > 0, 'the loop ticked while the lock was awaited');
  t.deepEqual(groupDirsUnder(m.parentName), [], 'nothing left by the refused asynchronous reservation');
  const exited = new Promise((res) => a.proc.once('exit', res));
  a.proc.kill('SIGKILL');
  await exited;
  const t0 = process.hrtime.bigint();
  const g = m.create(newAllocId(), 'next', { resources: { cores: [core] } });
  t.log(`reservation after the holder's death: ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2)} ms`);
  t.deepEqual(g.cpus(), [core]);
  await g.destroy();
  const ga = await m.createAsync(newAllocId(), 'next-async', { resources: { cores: [core] } });
  t.deepEqual(ga.cpus(), [core]);
  await ga.destroy();
});

ptest('recovery of a task started under corral 0.1\'s layout: opened, kept off a reservation, stopped, cleaned up', async (t, c) => {
  const parentName = c.parent;
  const usable = c.manager().usableCores();
  const core = usable[usable.length - 1]!;
  const rest = usable.filter((c) => c !== core);
  const allocShared = newAllocId();
  const allocRes = newAllocId();
  const w = (f: string, v: string) => fs.writeFileSync(f, v);
  let oldShared: Started;
  let oldRes: Started;
  if (layout!.version === 'v1') {
    // corral 0.1 on v1: <parent>/<group> per controller; cpuset <parent>/shared/<group> and <parent>/reserved/<group>.
    const cs = path.join(layout!.v1Mounts.cpuset!, parentName);
    const mems = fs.readFileSync(path.join(layout!.v1Mounts.cpuset!, 'cpuset.mems'), 'utf8').trim();
    const mk = (d: string, cpus: number[]) => { fs.mkdirSync(d); w(path.join(d, 'cpuset.cpus'), formatCpuList(cpus)); w(path.join(d, 'cpuset.mems'), mems); };
    mk(cs, usable);
    mk(path.join(cs, 'shared'), rest);
    mk(path.join(cs, 'reserved'), [core]);
    mk(path.join(cs, 'shared', `${allocShared}-old`), rest);
    mk(path.join(cs, 'reserved', `${allocRes}-oldres`), [core]);
    const joins = (name: string, sub: string) => {
      const out = [path.join(cs, sub, name, 'cgroup.procs')];
      for (const mp of new Set(Object.entries(layout!.v1Mounts).filter(([c]) => ['freezer', 'cpu', 'cpuacct', 'memory', 'pids'].includes(c)).map(([, p]) => fs.realpathSync(p)))) {
        fs.mkdirSync(path.join(mp, parentName, name), { recursive: true });
        out.push(path.join(mp, parentName, name, 'cgroup.procs'));
      }
      return out;
    };
    oldShared = await startInGroup({ joinProcs: joins(`${allocShared}-old`, 'shared') }, 'sleep', ['60']);
    oldRes = await startInGroup({ joinProcs: joins(`${allocRes}-oldres`, 'reserved') }, 'sleep', ['60']);
  } else {
    // corral 0.1 on v2: <parent>/<group>.scope, each with its cpuset.cpus written.
    const p = path.join(layout!.root, parentName);
    fs.mkdirSync(p);
    w(path.join(layout!.root, 'cgroup.subtree_control'), '+cpuset');
    w(path.join(p, 'cgroup.subtree_control'), '+cpuset');
    const mk = (name: string, cpus: number[]) => { const d = path.join(p, `${name}.scope`); fs.mkdirSync(d); w(path.join(d, 'cpuset.cpus'), formatCpuList(cpus)); return d; };
    oldShared = await startInGroup({ cgroupDir: mk(`${allocShared}-old`, rest) }, 'sleep', ['60']);
    oldRes = await startInGroup({ cgroupDir: mk(`${allocRes}-oldres`, [core]) }, 'sleep', ['60']);
  }
  t.is(cpusAllowed(oldRes.pid), String(core));
  // A new agent: opens both (v2 0.1 kept no record of reservations: the task's persisted resources say it).
  const m = c.manager();
  const gs = m.open(allocShared, 'old');
  const gr = m.open(allocRes, 'oldres', { resources: { cores: [core] } });
  t.deepEqual(gs.pids(), [oldShared.pid]);
  t.deepEqual(gr.pids(), [oldRes.pid]);
  t.deepEqual(gr.cpus(), [core]);
  t.deepEqual(m.sharedCores(), rest, 'the 0.1 reservation counts');
  t.is(t.throws(() => m.create(newAllocId(), 'thief', { resources: { cores: [core] } }), { instanceOf: CpusetConflictError })!.heldBy, gr.name);
  // A new shared task runs beside the old one, off the old reservation.
  const fresh = m.create(newAllocId(), 'fresh');
  const f = await startInGroup(fresh, 'sleep', ['60']);
  t.is(cpusAllowed(f.pid), formatCpuList(rest));
  // The old reserved task ends: its core goes back to every shared task, old and new.
  await gr.destroy();
  t.is((await oldRes.exited).signal, 9);
  await waitFor(() => cpusAllowed(f.pid) === formatCpuList(usable) && cpusAllowed(oldShared.pid) === formatCpuList(usable),
    { what: 'both shared tasks on every core' });
  await gs.destroy();
  t.is((await oldShared.exited).signal, 9);
  await fresh.destroy();
  await f.exited;
  t.deepEqual(groupDirsUnder(parentName), []);
  await m.removeParentIfEmpty();
  const left = [...Object.values(layout!.v1Mounts), layout!.root].filter((r) => fs.existsSync(path.join(r, parentName)));
  t.deepEqual(left, [], 'the parent, old and new partitions included, is gone');
});
