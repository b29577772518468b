/**
 * raw_exec recovery and ownership as an operator breaks them, on the real kernel, as root: a pid
 * handed to another session leader while no agent ran, an agent SIGKILLed in the middle of many
 * starts, bad and edited handles, two agents on one state dir, a full state dir.
 * Tasks are started by a separate agent process (test/fixtures/recovery/agent.ts), as a real
 * agent restart would leave them.
 */
import test, { type ExecutionContext } from 'ava';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomInt, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RawExecDriver } from '../src/drivers/raw_exec/index.js';
import { resolvePluginConfig } from '../src/drivers/raw_exec/config.js';
import { checkExecUser } from '../src/drivers/raw_exec/recover.js';
import { createCgroupManager } from '../src/cgroups/index.js';
import { TaskStore } from '../src/store/task-store.js';
import { TaskExistsError } from '../src/errors.js';
import { processStartTime } from '../src/store/owner.js';
import type { TaskConfig, TaskHandle } from '../src/drivers/contract.js';
import { groupDirsUnder, hostLayout, isRoot, pidAlive, waitFor } from './helpers/cgroups.js';
import { type Sandbox, bound, sandbox } from './helpers/sandbox.js';

const ts = isRoot ? test.serial : test.skip;
const version = isRoot ? hostLayout().version : 'v1';
const AGENT = path.join(__dirname, 'fixtures', 'recovery', 'agent.ts');
const ENV = { PATH: '/usr/local/bin:/usr/bin:/bin' };

interface RawState { pid: number; startTime: number; pgid: number; uid: number; gid: number; file: string; cgroup: { name: string; paths: Record<string, string> } | null }
const stateOf = (h: TaskHandle) => h.driverState as unknown as RawState;

/** A distinctive `sleep` argument: every process of a test can be found by its cmdline. */
function marker(): string {
  return `${100000 + randomInt(800000)}.${randomInt(100000, 999999)}`;
}

function sleeper(allocId: string, name: string, mark: string, extra: Partial<TaskConfig> = {}): TaskConfig<any> {
  return { id: `${name}-${randomUUID().slice(0, 8)}`, allocId, name, env: ENV, driver: { command: 'sleep', args: [mark] }, ...extra };
}

/** Live (non-zombie) `sleep <mark>` processes (the fixture agent's own argv holds the mark too). */
function pidsWith(mark: string): number[] {
  const out: number[] = [];
  for (const n of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${n}/cmdline`, 'utf8').split('\0');
      if (path.basename(argv[0] ?? '') === 'sleep' && argv[1] === mark && pidAlive(Number(n))) out.push(Number(n));
    } catch { /* gone */ }
  }
  return out.sort((a, b) => a - b);
}

interface AgentRun {
  child: ChildProcess;
  started: TaskHandle[];
  failed: string[];
  /** Resolves on `begin` (about to start the tasks). */
  begun: Promise<void>;
  /** Resolves on `done` (every start returned). */
  done: Promise<void>;
  exited: Promise<number | null>;
}

/** Runs the fixture agent; it is SIGKILLed at teardown if still alive. */
function runAgent(sb: Sandbox, spec: { noCgroups?: boolean; tasks: TaskConfig<any>[]; stay?: boolean }): AgentRun {
  const full = { stateDir: sb.stateDir, ...(spec.noCgroups ? {} : { cgroupParent: sb.parent }), ...spec };
  const child = spawn(process.execPath, ['--import=tsx', AGENT, JSON.stringify(full)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  sb.defer(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const run: AgentRun = { child, started: [], failed: [], begun: undefined!, done: undefined!, exited };
  let onBegin!: () => void;
  let onDone!: () => void;
  run.begun = new Promise((r) => { onBegin = r; });
  run.done = new Promise((r) => { onDone = r; });
  let buf = '';
  child.stdout!.on('data', (b: Buffer) => {
    buf += b.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line === 'begin') onBegin();
      else if (line === 'done') onDone();
      else if (line.startsWith('started ')) run.started.push(JSON.parse(line.slice(8)) as TaskHandle);
      else if (line.startsWith('failed ')) run.failed.push(line.slice(7));
    }
  });
  void exited.then(() => { onBegin(); onDone(); });
  return run;
}

function driverFor(t: ExecutionContext, sb: Sandbox, opts: ConstructorParameters<typeof RawExecDriver>[0] = {}): RawExecDriver {
  const d = new RawExecDriver({ stateDir: sb.stateDir, ...(opts.noCgroups ? {} : { cgroupParent: sb.parent }), groupKillTimeoutMs: bound(10_000), ...opts });
  sb.defer(() => d.shutdown());
  void t;
  return d;
}

/** A process of our own, leader of its own session (as any daemon), killed at teardown. */
function sessionLeader(sb: Sandbox, mark: string): ChildProcess {
  const c = spawn('sleep', [mark], { detached: true, stdio: 'ignore' });
  sb.defer(() => { c.kill('SIGKILL'); });
  return c;
}

/**
 * Hands `pid` to a new session leader: writes pid - 1 to /proc/sys/kernel/ns_last_pid and forks,
 * retrying while other processes on the host take the number first.
 */
async function reusePid(sb: Sandbox, pid: number, mark: string): Promise<ChildProcess> {
  await waitFor(() => !fs.existsSync(`/proc/${pid}`), { what: `pid ${pid} to be reaped` });
  for (let i = 0; i < 500; i++) {
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const c = spawn('sleep', [mark], { detached: true, stdio: 'ignore' });
    if (c.pid === pid) {
      sb.defer(() => { c.kill('SIGKILL'); });
      return c;
    }
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
  throw new Error(`could not hand pid ${pid} to a new process`);
}

async function killPid(pid: number): Promise<void> {
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  await waitFor(() => !pidAlive(pid), { what: `pid ${pid} to die` });
}

for (const noCgroups of [true, false]) {
  ts(`pid reuse (${noCgroups ? 'noCgroups' : 'cgroups, group gone as after a reboot'}): the task is reported gone and the new session leader that got its pid survives stop, signal and destroy`, async (t) => {
    const sb = sandbox(t, 'reuse');
    const mark = marker();
    const run = runAgent(sb, { noCgroups, tasks: [sleeper(randomUUID(), 'web', mark)] });
    t.is(await run.exited, 0);
    const h = run.started[0]!;
    const { pid } = stateOf(h);
    if (!noCgroups) {
      // The task and its group end while no agent runs (a reboot keeps /var/lib/corral, not cgroups).
      await createCgroupManager({ version, parentName: version === 'v2' ? sb.slice : sb.parent }).open(h.allocId, h.taskName).destroy();
    } else {
      await killPid(pid);
    }
    const intruder = await reusePid(sb, pid, marker());
    t.is(intruder.pid, pid);
    const d = driverFor(t, sb, { noCgroups });
    const r = await d.recoverAll();
    t.deepEqual(r.failed, []);
    t.deepEqual(r.recovered, [h.taskId]);
    t.deepEqual(r.gone, [h.taskId]);
    t.is(d.inspectTask(h.taskId).state, 'exited');
    t.regex((await d.waitTask(h.taskId)).err ?? '', noCgroups ? /another process/ : /(another process|cgroup .* is gone)/);
    await d.stopTask(h.taskId, { timeoutMs: 0 });
    await t.throwsAsync(d.signalTask(h.taskId, 'SIGKILL'), { code: 'ERR_TASK_NOT_RUNNING' });
    await d.destroyTask(h.taskId, { force: true });
    t.true(pidAlive(pid), 'the process that got the pid is untouched');
    t.is(processStartTime(pid), processStartTime(intruder.pid!));
    t.deepEqual(d.store.list().handles, []);
  });
}


/** A record file's current record: its last line (a start appends the running record to the starting one). */
function lastRecordLine(file: string): string {
  return fs.readFileSync(file, 'utf8').trim().split('\n').pop()!;
}

ts('agent SIGKILLed at random points during 50 concurrent starts, repeated: every task process is tracked or killed, no group without a record', async (t) => {
  const sb = sandbox(t, 'crash');
  const RUNS = Number(process.env.CORRAL_CRASH_RUNS ?? 4);
  const N = 50;
  const stats = { interrupted: 0, recovered: 0, killedInGroups: 0, interruptedWithGroup: 0 };
  let window: number | undefined;
  const perRun: string[] = [];
  for (let run = 0; run < RUNS; run++) {
    const mark = marker();
    const allocId = randomUUID();
    const tasks = Array.from({ length: N }, (_, i) => sleeper(allocId, `t${i}`, mark));
    const agent = runAgent(sb, { tasks, stay: true });
    // The kill lands at a random instant of the starts, so over the runs it hits every step of a
    // start: the first run measures how long they take (begin to all returned); later runs kill at
    // a uniformly random time within the first three quarters of that. (The agent's output comes in
    // one burst at the end, so the kill cannot be timed on returned starts.)
    await agent.begun;
    const t0 = Date.now();
    if (window === undefined) {
      await agent.done;
      window = Math.max(10, Date.now() - t0);
    } else {
      await new Promise((r) => setTimeout(r, randomInt(0, Math.max(1, Math.floor(window! * 0.75)))));
    }
    agent.child.kill('SIGKILL');
    await agent.exited;
    const d = driverFor(t, sb);
    const r = await d.recoverAll();
    t.deepEqual(r.failed.map((f) => `${f.taskId}: ${f.error.message}`), [], `run ${run}`);
    t.deepEqual(r.problems, [], `run ${run}`);
    t.deepEqual(r.owned, [], `run ${run}`);
    t.deepEqual(r.staleNonEmpty, [], `run ${run}: no group with processes and no record`);
    const records = d.store.records().records;
    t.true(records.every((x) => x.state === 'running' && x.ownerStatus === 'self'), `run ${run}: every record left is running and ours`);
    t.is(records.length, r.recovered.length, `run ${run}`);
    // Tracked: every live process of the run is the main process of a recovered, running task.
    const tracked = new Set(r.recovered.filter((id) => d.inspectTask(id).state === 'running').map((id) => Number(d.inspectTask(id).driverAttributes.pid)));
    t.deepEqual(pidsWith(mark), [...tracked].sort((a, b) => a - b), `run ${run}: no untracked process`);
    // Every group under the parent has a record.
    const names = new Set(records.map((x) => `${x.handle.allocId}-${x.handle.taskName}`));
    const orphans = groupDirsUnder(sb.parent).map((g) => path.basename(g).replace(/\.scope$/, '')).filter((g) => g.startsWith(allocId) && !names.has(g));
    t.deepEqual(orphans, [], `run ${run}: no orphan group`);
    perRun.push(`${r.recovered.length}+${r.interruptedStarts.length}`);
    stats.interrupted += r.interruptedStarts.length;
    stats.recovered += r.recovered.length;
    stats.killedInGroups += r.interruptedStarts.reduce((n, s) => n + s.killed, 0);
    stats.interruptedWithGroup += r.interruptedStarts.filter((s) => s.group !== null).length;
    for (const id of d.taskIds()) await d.destroyTask(id, { force: true });
    await d.shutdown();
    t.deepEqual(pidsWith(mark), [], `run ${run}: nothing left after destroy`);
    t.deepEqual(groupDirsUnder(sb.parent).filter((g) => path.basename(g).startsWith(allocId)), []);
  }
  t.log(`${RUNS} runs × ${N} starts (kill within ${window} ms of the first start): ${stats.recovered} tasks recovered, ${stats.interrupted} interrupted starts resolved (${stats.interruptedWithGroup} with a group, ${stats.killedInGroups} processes killed in them); recovered+interrupted per run: ${perRun.join(' ')}`);
});

ts('a bad handle among good ones is reported in failed and skipped; the good ones are recovered and stale clean-up still runs', async (t) => {
  const sb = sandbox(t, 'badone');
  const mark = marker();
  const allocId = randomUUID();
  const run = runAgent(sb, { tasks: [sleeper(allocId, 'a', mark), sleeper(allocId, 'b', mark)] });
  t.is(await run.exited, 0);
  const store = new TaskStore(sb.stateDir);
  const good = run.started[0]!;
  const raw = JSON.parse(lastRecordLine(store.fileFor(good.taskId))) as Record<string, unknown>;
  fs.writeFileSync(store.fileFor('bad'), JSON.stringify({ ...raw, taskId: 'bad', allocId: 'not-a-uuid', config: { ...(raw.config as object), id: 'bad', allocId: 'not-a-uuid' } }));
  // An empty group of ours that no record names: what stale clean-up removes.
  const crashed = randomUUID();
  createCgroupManager({ version, parentName: version === 'v2' ? sb.slice : sb.parent }).create(crashed, 'left');
  const d = driverFor(t, sb);
  const r = await d.recoverAll();
  t.deepEqual(r.recovered.sort(), run.started.map((h) => h.taskId).sort());
  t.deepEqual(r.failed.map((f) => [f.taskId, (f.error as { code?: string }).code, (f.error as { field?: string }).field]), [['bad', 'ERR_INVALID_CONFIG', 'handle.allocId']]);
  t.deepEqual(r.staleRemoved, [`${crashed}-left`]);
  t.true(fs.existsSync(store.fileFor('bad')), 'a bad record is left as it is, for the operator');
  t.is(pidsWith(mark).length, 2);
  for (const h of run.started) await d.destroyTask(h.taskId, { force: true });
  t.deepEqual(pidsWith(mark), []);
});

ts('edited handles are refused and never acted upon: uid removed, uid denied, an unrelated pid, cgroup paths outside the parent or at another task\'s group', async (t) => {
  const sb = sandbox(t, 'edited');
  const mark = marker();
  const allocId = randomUUID();
  const names = ['nouid', 'root', 'otherpid', 'otherpidcg', 'outside', 'swapped', 'ok'];
  const run = runAgent(sb, { tasks: names.map((n) => sleeper(allocId, n, mark, { user: 'nobody' })) });
  t.is(await run.exited, 0);
  const by = Object.fromEntries(run.started.map((h) => [h.taskName, h]));
  const store = new TaskStore(sb.stateDir);
  const edit = (name: string, f: (s: Record<string, unknown>) => void) => {
    const file = store.fileFor(by[name]!.taskId);
    const rec = JSON.parse(lastRecordLine(file)) as { driverState: Record<string, unknown> };
    f(rec.driverState);
    fs.writeFileSync(file, JSON.stringify(rec));
  };
  const bystander = sessionLeader(sb, marker());
  await waitFor(() => processStartTime(bystander.pid!) !== undefined, { what: 'bystander to start' });
  const bst = processStartTime(bystander.pid!)!;
  edit('nouid', (s) => { delete s.uid; });
  edit('root', (s) => { s.uid = 0; });
  edit('otherpid', (s) => { s.pid = bystander.pid; s.pgid = bystander.pid; s.startTime = bst; s.cgroup = null; });
  edit('otherpidcg', (s) => { s.pid = bystander.pid; s.pgid = bystander.pid; s.startTime = bst; });
  edit('outside', (s) => {
    const cg = s.cgroup as { paths: Record<string, string> };
    const k = Object.keys(cg.paths)[0]!;
    // The same group under a sibling of corral's parent (v1 /sys/fs/cgroup/<ctl>/someone-else/..., v2 /sys/fs/cgroup/someone-else/...).
    const p = cg.paths[k]!;
    const seg = p.includes(`/${sb.slice}/`) ? `/${sb.slice}/` : `/${sb.parent}/`;
    cg.paths[k] = `${p.slice(0, p.indexOf(seg))}/someone-else/${path.basename(p)}`;
  });
  // Inside the parent, but another task's group.
  edit('swapped', (s) => { (s.cgroup as { paths: Record<string, string> }).paths = { ...stateOf(by.ok!).cgroup!.paths }; });
  const d = driverFor(t, sb, { deniedHostUids: '0' });
  const r = await d.recoverAll();
  const failed = Object.fromEntries(r.failed.map((f) => [by[Object.keys(by).find((n) => by[n]!.taskId === f.taskId)!]!.taskName, (f.error as { field?: string }).field]));
  t.deepEqual(r.recovered, [by.ok!.taskId]);
  t.is(failed.nouid, 'handle.driverState.uid');
  t.is(failed.root, 'handle.driverState.uid');
  t.is(failed.otherpid, 'handle.driverState.cgroup');
  t.is(failed.otherpidcg, 'handle.driverState.pid');
  t.regex(failed.outside ?? '', /^handle\.driverState\.cgroup\.paths\./);
  t.regex(failed.swapped ?? '', /^handle\.driverState\.cgroup\.paths\./);
  for (const n of names.filter((x) => x !== 'ok')) {
    await t.throwsAsync(d.stopTask(by[n]!.taskId), { code: 'ERR_TASK_NOT_FOUND' }, `${n} is not held`);
  }
  t.true(pidAlive(bystander.pid!), 'the unrelated process is untouched');
  // The refused tasks were not acted upon: all seven still run.
  t.is(pidsWith(mark).length, 7);
  // execTask on the recovered task runs as its recorded user.
  const ex = await d.execTask(by.ok!.taskId, ['id', '-u']);
  t.is(ex.stdout.trim(), '65534');
  // The same records under noCgroups: the unrelated pid (cgroup: null) is refused there too.
  await d.destroyTask(by.ok!.taskId, { force: true });
  await d.shutdown();
  const d2 = driverFor(t, sb, { noCgroups: true });
  await t.throwsAsync(d2.recoverTask(store.get(by.otherpid!.taskId)!), { code: 'ERR_INVALID_CONFIG', message: /not the task's/ });
  t.true(pidAlive(bystander.pid!));
});

ts('two agents on one state dir: the second skips the first one\'s tasks while it lives (ERR_TASK_OWNED naming it), adopts them once it died', async (t) => {
  const sb = sandbox(t, 'twoagents');
  const mark = marker();
  const allocId = randomUUID();
  const a = runAgent(sb, { tasks: [sleeper(allocId, 'x', mark), sleeper(allocId, 'y', mark)], stay: true });
  await a.done;
  t.is(a.started.length, 2);
  const [hx, hy] = a.started as [TaskHandle, TaskHandle];
  const b = driverFor(t, sb);
  const r = await b.recoverAll();
  t.deepEqual(r.recovered, []);
  t.deepEqual(r.owned.map((o) => [o.taskId, o.ownerPid]).sort(), [[hx.taskId, a.child.pid], [hy.taskId, a.child.pid]].sort());
  t.deepEqual(r.staleRemoved, [], 'the live agent\'s groups are not stale');
  const err = await t.throwsAsync(b.recoverTask(hx));
  t.is((err as { code?: string }).code, 'ERR_TASK_OWNED');
  t.is((err as unknown as { ownerPid: number }).ownerPid, a.child.pid!);
  await t.throwsAsync(b.destroyTask(hx.taskId, { force: true }), { code: 'ERR_TASK_NOT_FOUND' });
  t.is(pidsWith(mark).length, 2, 'both tasks still run');
  // Forced: taken over while the first agent lives.
  await b.recoverTask(hx, { force: true });
  t.is(b.store.getRecord(hx.taskId)!.ownerStatus, 'self');
  a.child.kill('SIGKILL');
  await a.exited;
  const r2 = await b.recoverAll();
  t.deepEqual(r2.recovered, [hy.taskId], 'x is held already');
  t.deepEqual(b.taskIds().sort(), [hx.taskId, hy.taskId].sort());
  t.deepEqual(r2.owned, []);
  t.is(b.store.getRecord(hy.taskId)!.ownerStatus, 'self');
  t.is(b.inspectTask(hy.taskId).state, 'running');
  for (const h of [hx, hy]) await b.destroyTask(h.taskId, { force: true });
  t.deepEqual(pidsWith(mark), []);
});

ts('a full state dir (ENOSPC on a tiny tmpfs): startTask fails before anything exists; no temp file, no group, no process', async (t) => {
  const sb = sandbox(t, 'enospc');
  const dir = path.join(sb.stateDir, 'full');
  fs.mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', dir]);
  sb.defer(() => execFileSync('umount', [dir]));
  const d = new RawExecDriver({ stateDir: dir, cgroupParent: sb.parent });
  sb.defer(() => d.shutdown());
  // Fill it (the tasks dir first, so only the records' writes fail).
  fs.mkdirSync(path.join(dir, 'tasks'), { recursive: true });
  try { fs.writeFileSync(path.join(dir, 'filler'), Buffer.alloc(64 * 1024)); } catch { /* full */ }
  const mark = marker();
  const cfg = sleeper(randomUUID(), 'full', mark);
  const err = await t.throwsAsync(d.startTask(cfg));
  t.is((err as NodeJS.ErrnoException).code, 'ENOSPC');
  t.deepEqual(fs.readdirSync(path.join(dir, 'tasks')), []);
  t.deepEqual(groupDirsUnder(sb.parent), []);
  t.deepEqual(pidsWith(mark), []);
});

ts('the running record: appended by the spawn thread with pid and start time; when that append fails (record gone), the driver writes it', async (t) => {
  const sb = sandbox(t, 'runrec');
  const mgr = createCgroupManager({ parentName: sb.parent });
  // Removes the task's record between its create and the spawn, once: the spawn's append gets ENOENT.
  let drop: string | undefined;
  const createAsync = mgr.createAsync.bind(mgr);
  mgr.createAsync = async (...a: Parameters<typeof mgr.createAsync>) => {
    const g = await createAsync(...a);
    if (drop) fs.rmSync(drop);
    drop = undefined;
    return g;
  };
  const d = driverFor(t, sb, { cgroupManager: mgr });
  const store = new TaskStore(sb.stateDir);
  const lines = (id: string) => fs.readFileSync(store.fileFor(id), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { state: string; driverState: { pid: number; pgid: number; startTime: number } });
  const a = sleeper(randomUUID(), 'appended', marker());
  const ha = await d.startTask(a);
  const la = lines(a.id);
  t.deepEqual(la.map((l) => l.state), ['starting', 'running']);
  const pid = (ha.driverState as { pid: number }).pid;
  t.like(la[1]!.driverState, { pid, pgid: pid, startTime: processStartTime(pid) });
  t.deepEqual(store.getRecord(a.id)?.handle, ha);
  const b = sleeper(randomUUID(), 'rewritten', marker());
  drop = store.fileFor(b.id);
  const hb = await d.startTask(b);
  const lb = lines(b.id);
  t.deepEqual(lb.map((l) => l.state), ['running']);
  t.is(lb[0]!.driverState.pid, (hb.driverState as { pid: number }).pid);
  for (const id of [a.id, b.id]) await d.destroyTask(id, { force: true });
  t.false(fs.existsSync(store.fileFor(a.id)));
});

ts('the record and the group in one job: another agent\'s record refuses the start with nothing made; a failure after the record removes it', async (t) => {
  const sb = sandbox(t, 'onejob');
  const d = driverFor(t, sb);
  const store = new TaskStore(sb.stateDir);
  // Another agent's record of the id (written by a store of another owner, as a live agent would).
  const theirs = sleeper(randomUUID(), 'theirs', marker());
  const other = new TaskStore(sb.stateDir, { owner: { pid: 1, startTime: processStartTime(1)! } });
  other.create({ version: 1, driver: 'raw_exec', taskId: theirs.id, allocId: theirs.allocId, taskName: theirs.name, startedAt: new Date().toISOString(), config: theirs, driverState: {} } as TaskHandle, 'running');
  const before = fs.readFileSync(store.fileFor(theirs.id), 'utf8');
  await t.throwsAsync(d.startTask(theirs), { instanceOf: TaskExistsError });
  t.is(fs.readFileSync(store.fileFor(theirs.id), 'utf8'), before, 'their record untouched');
  t.deepEqual(groupDirsUnder(sb.parent), [], 'no group made');
  // A step after the record fails: the group's name exists where a reserved task of that name would be.
  const mine = sleeper(randomUUID(), 'clash', marker());
  const mgr = createCgroupManager({ parentName: sb.parent });
  const recipeConflict = mgr.version === 'v1'
    ? path.join(hostLayout().v1Mounts.cpuset!, sb.parent, 'reserve', `${mine.allocId}-${mine.name}`)
    : path.join(hostLayout().root, `${sb.parent}.slice`, 'reserve.slice', `${mine.allocId}-${mine.name}.scope`);
  fs.mkdirSync(recipeConflict, { recursive: true });
  sb.defer(() => fs.rmdirSync(recipeConflict));
  const err = await t.throwsAsync(d.startTask(mine));
  t.is((err as NodeJS.ErrnoException).code, 'EEXIST');
  t.false(fs.existsSync(store.fileFor(mine.id)), 'our record removed');
  t.deepEqual(groupDirsUnder(sb.parent).filter((g) => g !== recipeConflict), [], 'no group of ours left');
  t.deepEqual(pidsWith(mine.id), []);
});

test('exec user check: no recorded user, or a denied one, is ExecUserRefusedError (ERR_TASK_NO_USER)', (t) => {
  const plugin = resolvePluginConfig({ deniedHostUids: '0', deniedHostGids: '10-15' });
  const task = (s: Partial<RawState> & { groups?: unknown }) => ({ id: 'x', state: s }) as unknown as Parameters<typeof checkExecUser>[0];
  t.throws(() => checkExecUser(task({ gid: 1, groups: [] }), plugin), { code: 'ERR_TASK_NO_USER', message: /no recorded user/ });
  t.throws(() => checkExecUser(task({ uid: 0, gid: 1, groups: [] }), plugin), { code: 'ERR_TASK_NO_USER', message: /uid 0/ });
  t.throws(() => checkExecUser(task({ uid: 65534, gid: 65534, groups: [12] }), plugin), { code: 'ERR_TASK_NO_USER' });
  t.notThrows(() => checkExecUser(task({ uid: 65534, gid: 65534, groups: [] }), plugin));
});
