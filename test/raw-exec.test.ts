/**
 * raw_exec on the real kernel, as root: Nomad's raw_exec driver scenarios plus corral's guarantees
 * (nothing left behind, recovery from a second process, every bad field named). Every test runs in
 * its own sandbox (cgroup parent, state dir; setup() first): its drivers, tasks and groups are
 * removed at its teardown, so a failing test leaves nothing another test could count.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { RawExecDriver } from '../src/drivers/raw_exec/index.js';
import { createCgroupManager } from '../src/cgroups/index.js';
import { AbortError, ExecTimeoutError, InvalidConfigError, TaskExistsError, TaskNotFoundError, TaskRunningError } from '../src/errors.js';
import type { TaskConfig, TaskEvent, TaskHandle } from '../src/drivers/contract.js';
import { cpusAllowed, groupDirsUnder, hostLayout, isRoot, newAllocId, waitFor } from './helpers/cgroups.js';
import { sandbox } from './helpers/sandbox.js';

const version = isRoot ? hostLayout().version : 'v1';
const ENV = { PATH: '/usr/local/bin:/usr/bin:/bin' };

/**
 * The test's sandbox and what the tests use of it: PARENT (v1 name, or `.slice` on v2), STATE (its
 * state dir, also where tmpFile() puts files), a default driver, mkDriver() for more, and the pids
 * to SIGKILL at teardown. Call first: the teardown is registered before anything can fail.
 */
function setup(tt: ExecutionContext) {
  const sb = sandbox(tt, 'rawexec');
  const PARENT = sb.parentFor(version);
  const STATE = sb.stateDir;
  const drivers: RawExecDriver[] = [];
  const knownPids = new Set<number>();
  sb.defer(async () => {
    for (const d of drivers) {
      for (const id of d.taskIds()) await d.destroyTask(id, { force: true }).catch(() => {});
      await d.shutdown();
    }
    for (const p of knownPids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  });
  const mkDriver = (opts: ConstructorParameters<typeof RawExecDriver>[0] = {}): RawExecDriver => {
    const d = new RawExecDriver({ stateDir: STATE, cgroupParent: PARENT, ...opts });
    drivers.push(d);
    return d;
  };
  return {
    sb, PARENT, STATE, knownPids, mkDriver,
    driver: mkDriver(),
    tmpFile: (name: string): string => path.join(STATE, `${name}-${randomBytes(4).toString('hex')}`),
    groupsOf: (allocId: string): string[] => groupDirsUnder(PARENT).filter((d) => path.basename(d).startsWith(allocId)),
    pidOf: (h: TaskHandle): number => {
      const pid = (h.driverState as { pid: number }).pid;
      knownPids.add(pid);
      return pid;
    },
  };
}

const t = isRoot ? test : test.skip;
const ts = isRoot ? test.serial : test.skip;

let seq = 0;
function task(driverCfg: Record<string, unknown>, extra: Partial<TaskConfig> = {}): TaskConfig<any> {
  seq++;
  return { id: `t${seq}-${randomBytes(3).toString('hex')}`, allocId: newAllocId(), name: `task${seq}`, env: ENV, driver: driverCfg, ...extra };
}

/** Alive and not a zombie. */
function running(pid: number): boolean {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const st = s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    return st !== 'Z' && st !== 'X';
  } catch {
    return false;
  }
}

/** Every pid (non-zombie) whose cmdline contains `marker`. */
function hasMarker(pid: number, marker: string): boolean {
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker); } catch { return false; }
}

function pidsWithMarker(marker: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(marker) && running(Number(name))) out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}

function procsOf(h: TaskHandle): number[] {
  const st = h.driverState as { cgroup: { paths: Record<string, string> } | null };
  const dir = st.cgroup!.paths.freezer ?? st.cgroup!.paths.unified ?? Object.values(st.cgroup!.paths)[0]!;
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

t('start/wait: exit 0, output appended to stdoutPath, environment exactly the task env minus denied names', async (tt) => {
  const { mkDriver, tmpFile, groupsOf } = setup(tt);
  const d = mkDriver({ deniedEnvvars: ['*_TOKEN'] });
  const out = tmpFile('out');
  fs.writeFileSync(out, 'before\n');
  const cfg = task({ command: 'sh', args: ['-c', 'echo hello; env | sort'], deniedEnvvars: ['AWS_*'] },
    { env: { ...ENV, KEEP: 'yes', GITHUB_TOKEN: 'secret', AWS_KEY: 'secret2' }, stdoutPath: out });
  const h = await d.startTask(cfg);
  tt.is(h.driver, 'raw_exec');
  tt.deepEqual(JSON.parse(JSON.stringify(h)), h, 'handle is JSON-serialisable');
  const r = await d.waitTask(cfg.id);
  tt.deepEqual(r, { exitCode: 0, signal: null, oomKilled: false });
  const text = fs.readFileSync(out, 'utf8');
  tt.true(text.startsWith('before\nhello\n'), 'appended');
  const names = text.split('\n').slice(2).filter(Boolean).map((l) => l.split('=')[0]).filter((n) => n !== 'PWD' && n !== 'SHLVL' && n !== '_');
  tt.deepEqual(names.sort(), ['KEEP', 'PATH'], 'no agent env, no denied names');
  tt.is(d.inspectTask(cfg.id).state, 'exited');
  tt.truthy(fs.existsSync(d.store.fileFor(cfg.id)), 'handle persisted');
  await d.destroyTask(cfg.id);
  tt.false(fs.existsSync(d.store.fileFor(cfg.id)), 'destroy forgets the handle');
  tt.deepEqual(groupsOf(cfg.allocId), []);
  tt.throws(() => d.inspectTask(cfg.id), { instanceOf: TaskNotFoundError });
});

t('non-zero exit code, stderr to stderrPath; a second start with the same id is refused', async (tt) => {
  const { driver, tmpFile } = setup(tt);
  const err = tmpFile('err');
  const cfg = task({ command: '/bin/sh', args: ['-c', 'echo oops >&2; sleep 0.3; exit 3'] }, { stderrPath: err });
  await driver.startTask(cfg);
  await tt.throwsAsync(driver.startTask(cfg), { instanceOf: TaskExistsError });
  const r = await driver.waitTask(cfg.id);
  tt.is(r.exitCode, 3);
  tt.is(r.signal, null);
  tt.is(fs.readFileSync(err, 'utf8'), 'oops\n');
  await driver.destroyTask(cfg.id);
});

t('stdout into a FIFO: starting never blocks (no reader yet), and a reader gets the output', async (tt) => {
  const { driver, tmpFile } = setup(tt);
  const fifo = tmpFile('fifo');
  await new Promise<void>((res, rej) => execFile('mkfifo', [fifo], (e) => (e ? rej(e) : res())));
  // No reader at all: O_WRONLY would block the event loop here; the driver's O_RDWR open does not.
  const lonely = task({ command: 'true' }, { stdoutPath: fifo });
  await driver.startTask(lonely);
  tt.is((await driver.waitTask(lonely.id)).exitCode, 0);
  await driver.destroyTask(lonely.id);
  // With a reader: the task's output arrives through the FIFO.
  const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    const cfg = task({ command: 'sh', args: ['-c', 'echo through-fifo'] }, { stdoutPath: fifo });
    await driver.startTask(cfg);
    tt.is((await driver.waitTask(cfg.id)).exitCode, 0);
    const buf = Buffer.alloc(100);
    const n = fs.readSync(fd, buf, 0, 100, null);
    tt.is(buf.subarray(0, n).toString(), 'through-fifo\n');
    await driver.destroyTask(cfg.id);
  } finally {
    fs.closeSync(fd);
  }
});

t('inheritEnv passes the agent environment under the task env (only when asked)', async (tt) => {
  const { driver, tmpFile } = setup(tt);
  const out = tmpFile('out');
  process.env.CORRAL_TEST_AGENT_VAR = 'from-agent';
  const cfg = task({ command: 'sh', args: ['-c', 'echo "$CORRAL_TEST_AGENT_VAR/$OWN"'], inheritEnv: true }, { env: { ...ENV, OWN: 'own' }, stdoutPath: out });
  await driver.startTask(cfg);
  await driver.waitTask(cfg.id);
  tt.is(fs.readFileSync(out, 'utf8'), 'from-agent/own\n');
  await driver.destroyTask(cfg.id);
});

t('start/kill/wait: SIGTERM ends the task; several waiters share one result; an aborted wait rejects alone', async (tt) => {
  const { driver, groupsOf, pidOf } = setup(tt);
  const cfg = task({ command: 'sleep', args: ['30'] });
  const h = await driver.startTask(cfg);
  const ac = new AbortController();
  const w1 = driver.waitTask(cfg.id);
  const w2 = driver.waitTask(cfg.id);
  const w3 = driver.waitTask(cfg.id, { signal: ac.signal });
  ac.abort();
  await tt.throwsAsync(w3, { instanceOf: AbortError });
  tt.is(driver.inspectTask(cfg.id).state, 'running');
  await driver.stopTask(cfg.id, { timeoutMs: 5000 });
  const [r1, r2] = await Promise.all([w1, w2]);
  tt.deepEqual(r1, r2);
  tt.is(r1.signal, 15);
  tt.is(r1.exitCode, 128 + 15);
  tt.false(running(pidOf(h)));
  tt.deepEqual(procsOf(h), []);
  await driver.destroyTask(cfg.id);
  tt.deepEqual(groupsOf(cfg.allocId), []);
});

t('stop with a timeout on a process that ignores SIGTERM: group kill after the timeout, nothing left', async (tt) => {
  const { driver, tmpFile, pidOf } = setup(tt);
  const ready = tmpFile('ready');
  const cfg = task({ command: 'sh', args: ['-c', `trap "" TERM INT; echo ok > ${ready}; while :; do sleep 0.05; done`] });
  const h = await driver.startTask(cfg);
  await waitFor(() => fs.existsSync(ready), { what: 'task ready' });
  const t0 = Date.now();
  await driver.stopTask(cfg.id, { timeoutMs: 400, signal: 'INT' });
  tt.true(Date.now() - t0 >= 390, 'waited for the timeout');
  const r = await driver.waitTask(cfg.id);
  tt.is(r.signal, 9);
  tt.false(running(pidOf(h)));
  tt.deepEqual(procsOf(h), []);
  await tt.throwsAsync(driver.stopTask(cfg.id, { signal: 'SIGFOO' }), { instanceOf: InvalidConfigError, message: /signal "SIGFOO"/ });
  await driver.destroyTask(cfg.id);
});

t('destroy kills everything: a setsid daemon, a double fork and a bounded fork loop', async (tt) => {
  const { knownPids, driver, groupsOf } = setup(tt);
  const marker = `corral-escape-${randomBytes(4).toString('hex')}`;
  const script = [
    `setsid bash -c 'exec -a ${marker}-daemon sleep 1000' &`,
    `( (exec -a ${marker}-double sleep 1000 &) & )`,
    `i=0; while [ $i -lt 20 ]; do (exec -a ${marker}-loop sleep 1000) & i=$((i+1)); done`,
    `exec -a ${marker}-main sleep 1000`,
  ].join('\n');
  const cfg = task({ command: 'bash', args: ['-c', script] });
  const h = await driver.startTask(cfg);
  await waitFor(() => pidsWithMarker(marker).length >= 23, { timeoutMs: 10000, what: '23 escapees' });
  const all = pidsWithMarker(marker);
  all.forEach((p) => knownPids.add(p));
  await tt.throwsAsync(driver.destroyTask(cfg.id), { instanceOf: TaskRunningError });
  await driver.destroyTask(cfg.id, { force: true });
  // pid_max is 32768 here: a number of ours may already belong to someone else, so a pid only counts
  // while it still runs our marker (pidsWithMarker checks that too, for the whole of /proc).
  tt.deepEqual(all.filter((p) => running(p) && hasMarker(p, marker)), [], 'no process of the task runs');
  tt.deepEqual(pidsWithMarker(marker), []);
  tt.deepEqual(groupsOf(cfg.allocId), [], 'no cgroup left');
  tt.false(fs.existsSync(driver.store.fileFor(h.taskId)));
});

t('stopTask after the main process exited still kills the daemons it left', async (tt) => {
  const { driver } = setup(tt);
  const marker = `corral-left-${randomBytes(4).toString('hex')}`;
  const cfg = task({ command: 'bash', args: ['-c', `setsid bash -c 'exec -a ${marker} sleep 1000' & exit 0`] });
  await driver.startTask(cfg);
  await driver.waitTask(cfg.id);
  await waitFor(() => pidsWithMarker(marker).length === 1, { what: 'daemon' });
  await driver.stopTask(cfg.id, { timeoutMs: 100 });
  tt.deepEqual(pidsWithMarker(marker), []);
  await driver.destroyTask(cfg.id);
});


t('execTask runs inside the task cgroup with the task env; a timeout kills it and its children', async (tt) => {
  const { driver, pidOf } = setup(tt);
  const cfg = task({ command: 'sleep', args: ['60'] }, { env: { ...ENV, HELLO: 'world' } });
  const h = await driver.startTask(cfg);
  const r = await driver.execTask(cfg.id, ['sh', '-c', 'cat /proc/self/cgroup; echo $HELLO; echo err >&2; exit 4']);
  tt.is(r.exitResult.exitCode, 4);
  tt.true(r.stdout.includes(`${cfg.allocId}-${cfg.name}`), r.stdout);
  tt.true(r.stdout.includes('world'));
  tt.is(r.stderr, 'err\n');
  const marker = `corral-exec-${randomBytes(4).toString('hex')}`;
  await tt.throwsAsync(
    driver.execTask(cfg.id, ['bash', '-c', `(exec -a ${marker} sleep 100) & (exec -a ${marker} sleep 100 &) ; exec -a ${marker} sleep 100`], { timeoutMs: 500 }),
    { instanceOf: ExecTimeoutError },
  );
  tt.deepEqual(pidsWithMarker(marker), [], 'exec and its children killed');
  tt.deepEqual(procsOf(h), [pidOf(h)], 'only the task remains in its group');
  await tt.throwsAsync(driver.execTask(cfg.id, []), { instanceOf: InvalidConfigError });
  await driver.destroyTask(cfg.id, { force: true });
});

ts('taskStats rise when the task burns CPU and allocates memory', async (tt) => {
  const { driver } = setup(tt);
  const cfg = task({ command: process.execPath, args: ['-e', 'const b = Buffer.alloc(150 * 1024 * 1024, 1); let x = 0; for (;;) { x += b[x % b.length]; }'] });
  await driver.startTask(cfg);
  const ac = new AbortController();
  let first: { cpu: number; mem: number } | undefined;
  let best = { percent: 0, mem: 0, user: 0, total: 0 };
  const deadline = Date.now() + 15000;
  for await (const s of driver.taskStats(cfg.id, { intervalMs: 250, signal: ac.signal })) {
    tt.is(s.source, 'cgroup');
    first ??= { cpu: s.cpu.totalNs, mem: s.memory.usageBytes };
    best = { percent: Math.max(best.percent, s.cpu.percent), mem: Math.max(best.mem, s.memory.usageBytes), user: s.cpu.userNs, total: s.cpu.totalNs };
    // The machine is shared (2 cores, other suites running): ask for a clear rise, not a full core.
    if ((best.percent > 20 && best.total - first.cpu > 300e6 && best.mem > 120 * 1024 * 1024) || Date.now() > deadline) ac.abort();
  }
  tt.true(best.percent > 20, `cpu percent ${best.percent}`);
  tt.true(best.total - first!.cpu > 300e6, `cpu time rose by ${(best.total - first!.cpu) / 1e6} ms`);
  tt.true(best.mem > 120 * 1024 * 1024, `memory ${best.mem}`);
  tt.true(best.user > 0);
  const one = driver.sampleStats(cfg.id);
  tt.true(one.memory.maxUsageBytes >= one.memory.usageBytes);
  await driver.destroyTask(cfg.id, { force: true });
});

ts('memory limit: the OOM killer ends the task and waitTask says oomKilled', async (tt) => {
  const { driver } = setup(tt);
  const cfg = task({ command: 'sh', args: ['-c', 'x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done'] }, { resources: { memoryBytes: 32 * 1024 * 1024 } });
  await driver.startTask(cfg);
  const r = await driver.waitTask(cfg.id);
  tt.is(r.signal, 9);
  tt.true(r.oomKilled);
  await driver.destroyTask(cfg.id);
});

ts('cpuset: reserved cores become the task Cpus_allowed_list; an unusable core is refused', async (tt) => {
  const { driver, pidOf } = setup(tt);
  const usable = driver.cgroupManager()!.usableCores();
  const core = usable[usable.length - 1]!;
  const cfg = task({ command: 'sleep', args: ['30'] }, { resources: { cores: [core], cpuShares: 512, pidsMax: 50 } });
  const h = await driver.startTask(cfg);
  tt.is(cpusAllowed(pidOf(h)), String(core));
  const bad = task({ command: 'sleep', args: ['1'] }, { resources: { cores: [4096] } });
  const e = await tt.throwsAsync(driver.startTask(bad), { instanceOf: InvalidConfigError });
  tt.is(e?.field, 'resources.cores');
  await driver.destroyTask(cfg.id, { force: true });
});

t('taskEvents: every consumer gets every event', async (tt) => {
  const { driver } = setup(tt);
  const ac = new AbortController();
  const cfg = task({ command: 'true' });
  const collect = async (it: AsyncIterable<TaskEvent>) => {
    const got: string[] = [];
    for await (const e of it) {
      if (e.taskId !== cfg.id) continue;
      got.push(e.type);
      if (e.type === 'destroyed') break;
    }
    return got;
  };
  const a = collect(driver.taskEvents({ signal: ac.signal }));
  const b = collect(driver.taskEvents({ signal: ac.signal }));
  await driver.startTask(cfg);
  await driver.waitTask(cfg.id);
  await driver.destroyTask(cfg.id);
  const [ea, eb] = await Promise.all([a, b]);
  ac.abort();
  tt.deepEqual(ea, ['started', 'exited', 'destroyed']);
  tt.deepEqual(eb, ea);
});

t('fingerprint: healthy, driver.raw_exec, unique.cgroups.version and mode; re-sent until aborted', async (tt) => {
  const { mkDriver, driver } = setup(tt);
  const ac = new AbortController();
  const got = [];
  for await (const f of driver.fingerprint({ signal: ac.signal, intervalMs: 50 })) {
    got.push(f);
    if (got.length === 2) ac.abort();
  }
  tt.is(got.length, 2);
  tt.is(got[0]!.health, 'healthy');
  tt.is(got[0]!.attributes['driver.raw_exec'], true);
  tt.is(got[0]!.attributes['unique.cgroups.version'], version);
  tt.truthy(got[0]!.attributes['cgroups.mode']);
  tt.deepEqual(driver.capabilities(), { sendSignals: true, exec: true, fsIsolation: 'none', exitStatusAfterRecovery: false, noCgroups: true });
  const off = mkDriver({ enabled: false });
  for await (const f of off.fingerprint()) {
    tt.is(f.health, 'undetected');
    break;
  }
});

ts('recovery from a second Node process (recoverAll): stale empty groups removed; the task is found, measured, signalled, stopped; exit code unknown, never 0', async (tt) => {
  const { PARENT, STATE, mkDriver, groupsOf, pidOf } = setup(tt);
  const allocId = newAllocId();
  const stateDir = fs.mkdtempSync(path.join(STATE, 'recover-'));
  const fixture = path.join(__dirname, 'fixtures', 'raw-exec', 'start-and-exit.ts');
  const stdout = await new Promise<string>((res, rej) =>
    execFile(process.execPath, ['--import', 'tsx', fixture, stateDir, PARENT, allocId, '0'], { timeout: 60000 }, (e, so, se) => (e ? rej(new Error(`${e.message}\n${se}`)) : res(so))));
  const { long, short } = JSON.parse(stdout.trim().split('\n').pop()!) as { long: TaskHandle; short: TaskHandle };
  pidOf(long);
  pidOf(short);
  const d = mkDriver({ stateDir });
  const { handles, problems } = d.store.list('raw_exec');
  tt.deepEqual(problems, []);
  tt.is(handles.length, 2);
  await waitFor(() => !running(pidOf(short)), { what: 'short task to end while no agent watches' });
  // What a crash leaves besides the tasks: an empty group of ours that no handle owns.
  const crashed = newAllocId();
  createCgroupManager({ version, parentName: PARENT }).create(crashed, 'left');
  tt.is(groupsOf(crashed).length > 0, true);
  const rec = await d.recoverAll();
  tt.deepEqual(rec.recovered.sort(), [long.taskId, short.taskId].sort());
  tt.deepEqual(rec.failed, []);
  tt.deepEqual(rec.staleRemoved, [`${crashed}-left`]);
  tt.deepEqual(groupsOf(crashed), []);
  tt.is(d.inspectTask(long.taskId).state, 'running');
  const shortRes = await d.waitTask(short.taskId);
  tt.is(shortRes.exitCode, null);
  tt.regex(shortRes.err ?? '', /unknown/);
  await d.signalTask(long.taskId, 'WINCH');
  tt.is(d.inspectTask(long.taskId).state, 'running');
  const s = d.sampleStats(long.taskId);
  tt.is(s.source, 'cgroup');
  tt.true(s.cpu.totalNs > 0);
  const r = d.execTask(long.taskId, ['true']);
  tt.is((await r).exitResult.exitCode, 0);
  await d.stopTask(long.taskId, { timeoutMs: 3000 });
  const res = await d.waitTask(long.taskId);
  tt.is(res.exitCode, null, 'a recovered task\'s exit code is not known');
  tt.regex(res.err ?? '', /unknown/);
  tt.false(running(pidOf(long)));
  await d.destroyTask(long.taskId);
  await d.destroyTask(short.taskId);
  tt.deepEqual(groupsOf(allocId), []);
  tt.deepEqual(d.store.list().handles, []);
});

ts('recovery refuses a reused pid (start time differs): the task is reported gone, not adopted', async (tt) => {
  const { STATE, mkDriver } = setup(tt);
  // A handle without a cgroup is only taken by a noCgroups driver (a driver with cgroups refuses it as a bad handle).
  const d = mkDriver({ stateDir: fs.mkdtempSync(path.join(STATE, 'reuse-')), noCgroups: true });
  const allocId = newAllocId();
  const handle: TaskHandle = {
    version: 1, driver: 'raw_exec', taskId: 'reused', allocId, taskName: 'reused', startedAt: new Date().toISOString(),
    config: { ...task({ command: 'true' }), id: 'reused', allocId, name: 'reused' },
    driverState: { pid: process.pid, startTime: 1, pgid: process.pid, cgroup: null, uid: 0, gid: 0, groups: [], file: '/bin/true', cwd: '/', env: {} },
  };
  await d.recoverTask(handle);
  const r = await d.waitTask('reused');
  tt.is(r.exitCode, null);
  tt.regex(r.err ?? '', /another process/);
  await d.destroyTask('reused');
  tt.true(running(process.pid));
});

ts('noCgroups: tracked by session/process group, killed by group, stats from /proc, fingerprint says off', async (tt) => {
  const { knownPids, mkDriver, pidOf } = setup(tt);
  const d = mkDriver({ noCgroups: true });
  for await (const f of d.fingerprint()) {
    tt.is(f.attributes['cgroups.mode'], 'off');
    tt.is(f.attributes['driver.raw_exec.cgroups'], 'off');
    break;
  }
  const bad = task({ command: 'true' }, { resources: { memoryBytes: 1 << 26 } });
  const e = await tt.throwsAsync(d.startTask(bad), { instanceOf: InvalidConfigError });
  tt.is(e?.field, 'resources.memoryBytes');
  const marker = `corral-nocg-${randomBytes(4).toString('hex')}`;
  // Bounded (300 s): with no cgroup, only this test's teardown can kill the task, and a worker killed
  // from outside (a CI timeout) never runs it; an unbounded busy loop would then spin on for good.
  const cfg = task({ command: 'bash', args: ['-c', `trap "" TERM; (exec -a ${marker} sleep 300) & (exec -a ${marker} sleep 300 &); while ((SECONDS < 300)); do :; done`] });
  const h = await d.startTask(cfg);
  await waitFor(() => pidsWithMarker(marker).length >= 3, { what: 'children (and the main bash, whose script names the marker)' });
  pidsWithMarker(marker).forEach((p) => knownPids.add(p));
  let s = d.sampleStats(cfg.id);
  tt.is(s.source, 'proc');
  await waitFor(() => { s = d.sampleStats(cfg.id); return s.cpu.totalNs > 0 && s.memory.rssBytes > 0; }, { what: 'proc stats' });
  tt.is(d.inspectTask(cfg.id).driverAttributes.cgroups, 'off');
  await d.stopTask(cfg.id, { timeoutMs: 200 });
  tt.false(running(pidOf(h)));
  tt.deepEqual(pidsWithMarker(marker), []);
  await d.destroyTask(cfg.id);
});

t('bad input in every field: a clear error naming field and value, and nothing left behind', async (tt) => {
  const { mkDriver, driver, groupsOf } = setup(tt);
  const marker = `corral-bad-${randomBytes(4).toString('hex')}`;
  const noAccess = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-noaccess-'));
  fs.chmodSync(noAccess, 0o700);
  const good = (): TaskConfig<any> => task({ command: 'bash', args: ['-c', `exec -a ${marker} sleep 100`] });
  const cases: [string, (c: TaskConfig<any>) => void, RegExp?][] = [
    ['id', (c) => { c.id = ''; }],
    ['allocId', (c) => { c.allocId = 'not-a-uuid'; }, /"not-a-uuid"/],
    ['name', (c) => { c.name = '../escape'; }, /"\.\.\/escape"/],
    ['driver', (c) => { (c as { driver: unknown }).driver = 'sh'; }],
    ['driver.command', (c) => { delete c.driver.command; }, /required/],
    ['driver.command', (c) => { c.driver.command = '/nonexistent/cmd'; }, /"\/nonexistent\/cmd"/],
    ['driver.command', (c) => { c.driver.command = '/etc/passwd'; }, /not executable/],
    ['driver.command', (c) => { c.driver.command = 'no-such-command-xyz'; }, /not found in PATH/],
    ['driver.args[0]', (c) => { c.driver.args = [1]; }],
    ['driver.workDir', (c) => { c.driver.workDir = 'relative/dir'; }, /absolute/],
    ['driver.workDir', (c) => { c.driver.workDir = '/nonexistent-dir'; }, /does not exist/],
    ['driver.oomScoreAdj', (c) => { c.driver.oomScoreAdj = -5; }, /-5/],
    ['driver.deniedEnvvars', (c) => { c.driver.deniedEnvvars = 'AWS_*'; }],
    ['driver.stdoutFd', (c) => { c.driver.stdoutFd = 9999; }],
    ['driver.bogus', (c) => { c.driver.bogus = true; }, /unknown raw_exec option/],
    ['env.A', (c) => { c.env = { A: 1 as unknown as string }; }],
    ['env.A=B', (c) => { c.env = { 'A=B': 'x' }; }],
    ['user', (c) => { c.user = 'no-such-user-xyz'; }, /"no-such-user-xyz"/],
    ['taskDir', (c) => { c.taskDir = '/nonexistent-taskdir'; }, /does not exist/],
    ['stdoutPath', (c) => { c.stdoutPath = 'relative.log'; }, /absolute/],
    ['stderrPath', (c) => { c.stderrPath = '/nonexistent-dir/x.log'; }, /does not exist/],
    ['resources.memoryBytes', (c) => { c.resources = { memoryBytes: -1 }; }],
    ['resources.cpuShares', (c) => { c.resources = { cpuShares: 1 }; }],
    ['resources.pidsMax', (c) => { c.resources = { pidsMax: 0 }; }],
    ['resources.cores', (c) => { c.resources = { cores: [-1] }; }],
    ['resources.cores', (c) => { c.resources = { cores: [9999] }; }, /not usable/],
  ];
  for (const [field, mutate, msg] of cases) {
    const c = good();
    mutate(c);
    const e = await tt.throwsAsync(driver.startTask(c), { instanceOf: InvalidConfigError }, field);
    tt.is(e?.field, field, `${field}: ${e?.message}`);
    if (msg) tt.regex(e?.message ?? '', msg);
    tt.deepEqual(groupsOf(c.allocId ?? ''), [], `${field}: no group`);
  }
  // Denied ids: the agent itself (root) when no user is set.
  const denied = mkDriver({ deniedHostUids: '0,10-15' });
  const e1 = await tt.throwsAsync(denied.startTask(good()), { instanceOf: InvalidConfigError });
  tt.is(e1?.field, 'user');
  tt.regex(e1?.message ?? '', /uid 0.*deniedHostUids/);
  const deniedG = mkDriver({ deniedHostGids: '65534' });
  const e2 = await tt.throwsAsync(deniedG.startTask({ ...good(), user: 'nobody' }), { instanceOf: InvalidConfigError });
  tt.regex(e2?.message ?? '', /gid 65534/);
  // Plugin config fields.
  for (const [field, opts] of [
    ['deniedHostUids', { deniedHostUids: '0,x' }], ['deniedHostGids', { deniedHostGids: '5-1' }], ['deniedEnvvars', { deniedEnvvars: 'X' }],
    ['stateDir', { stateDir: 'relative' }], ['cgroupParent', { cgroupParent: '../up' }], ['noCgroups', { noCgroups: 'yes' }],
  ] as const) {
    const e = tt.throws(() => new RawExecDriver(opts as never), { instanceOf: InvalidConfigError });
    tt.is(e?.field, field);
  }
  // A failure after the cgroup exists (the user cannot enter workDir): undone, no group, no process.
  const late = { ...good(), user: 'nobody', driver: { command: '/bin/bash', args: ['-c', `exec -a ${marker} sleep 100`], workDir: noAccess } };
  await tt.throwsAsync(driver.startTask(late));
  tt.deepEqual(groupsOf(late.allocId), [], 'failed start leaves no group');
  tt.throws(() => driver.inspectTask(late.id), { instanceOf: TaskNotFoundError });
  tt.false(fs.existsSync(driver.store.fileFor(late.id)));
  tt.deepEqual(pidsWithMarker(marker), [], 'no process');
  fs.rmSync(noAccess, { recursive: true, force: true });
});

ts('shutdown (or the constructor signal) ends every timer, watcher and stream; running tasks keep running', async (tt) => {
  const { PARENT, STATE, mkDriver, pidOf } = setup(tt);
  const stateDir = fs.mkdtempSync(path.join(STATE, 'shutdown-'));
  const count = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = count();
  const ac = new AbortController();
  const d = new RawExecDriver({ stateDir, cgroupParent: PARENT, signal: ac.signal });
  const cfg = task({ command: 'sleep', args: ['60'] });
  const h = await d.startTask(cfg);
  const fp = (async () => { let n = 0; for await (const _ of d.fingerprint({ intervalMs: 100000 })) n++; return n; })();
  const st = (async () => { let n = 0; for await (const _ of d.taskStats(cfg.id, { intervalMs: 100000 })) n++; return n; })();
  const ev = (async () => { let n = 0; for await (const _ of d.taskEvents()) n++; return n; })();
  const wait = d.waitTask(cfg.id);
  const stop = d.stopTask(cfg.id, { timeoutMs: 100000, signal: 'SIGWINCH' });
  await waitFor(() => count() > before, { what: 'timers running' });
  ac.abort();
  await tt.throwsAsync(wait, { instanceOf: AbortError });
  tt.true((await fp) >= 1);
  tt.true((await st) >= 1);
  tt.true((await ev) >= 0, 'the event stream ended');
  await tt.throwsAsync(stop, { instanceOf: AbortError });
  await waitFor(() => count() <= before, { what: 'no timer left' });
  tt.true(running(pidOf(h)), 'the task keeps running');
  await tt.throwsAsync(d.startTask(task({ command: 'true' })), { message: /shut down/ });
  // Clean up through a new driver that recovers it.
  const d2 = mkDriver({ stateDir });
  await d2.recoverTask(d2.store.get(cfg.id)!);
  await d2.destroyTask(cfg.id, { force: true });
  tt.false(running(pidOf(h)));
});

// On a hybrid host, the v2 manager also runs on the unified mount (no controllers there): placement by
// clone3, group kill, exec and stats still work, and limits that need a controller are refused clearly.
const hybrid = isRoot && hostLayout().mode === 'hybrid';

(hybrid ? test : test.skip)('v2 manager on the unified hierarchy of a hybrid host: escapees killed, exec in the .scope, limits refused', async (tt) => {
  const { sb, STATE, knownPids, mkDriver } = setup(tt);
  const V2_PARENT = sb.slice;
  const d = mkDriver({ cgroupParent: V2_PARENT, cgroupVersion: 'v2', stateDir: fs.mkdtempSync(path.join(STATE, 'v2-')) });
  const marker = `corral-v2-${randomBytes(4).toString('hex')}`;
  const cfg = task({ command: 'bash', args: ['-c', `setsid bash -c 'exec -a ${marker} sleep 1000' & ( (exec -a ${marker} sleep 1000 &) & ); exec -a ${marker} sleep 1000`] });
  const h = await d.startTask(cfg);
  tt.truthy((h.driverState as { cgroup: { paths: Record<string, string> } }).cgroup.paths.unified?.endsWith('.scope'));
  await waitFor(() => pidsWithMarker(marker).length >= 3, { what: 'escapees' });
  pidsWithMarker(marker).forEach((p) => knownPids.add(p));
  const e = await d.execTask(cfg.id, ['cat', '/proc/self/cgroup']);
  tt.regex(e.stdout, new RegExp(`0::/${V2_PARENT.replace('.', '\\.')}/share\\.slice/${cfg.allocId}-${cfg.name}\\.scope`));
  const err = await tt.throwsAsync(d.startTask(task({ command: 'true' }, { resources: { memoryBytes: 1 << 26 } })), { instanceOf: InvalidConfigError });
  tt.regex(err?.message ?? '', /memory controller is not available/);
  await d.stopTask(cfg.id, { timeoutMs: 100 });
  tt.deepEqual(pidsWithMarker(marker), []);
  await d.destroyTask(cfg.id);
  tt.false(fs.existsSync((h.driverState as { cgroup: { paths: Record<string, string> } }).cgroup.paths.unified!));
});

ts('noCgroups recovery from a second Node process: found by pid + start time, stopped by process group', async (tt) => {
  const { STATE, mkDriver, pidOf } = setup(tt);
  const allocId = newAllocId();
  const stateDir = fs.mkdtempSync(path.join(STATE, 'recover-nocg-'));
  const fixture = path.join(__dirname, 'fixtures', 'raw-exec', 'start-and-exit.ts');
  const stdout = await new Promise<string>((res, rej) =>
    execFile(process.execPath, ['--import', 'tsx', fixture, stateDir, '-', allocId, '1'], { timeout: 60000 }, (e, so, se) => (e ? rej(new Error(`${e.message}\n${se}`)) : res(so))));
  const { long, short } = JSON.parse(stdout.trim().split('\n').pop()!) as { long: TaskHandle; short: TaskHandle };
  pidOf(short);
  const d = mkDriver({ stateDir, noCgroups: true });
  for (const h of d.store.list('raw_exec').handles) await d.recoverTask(h);
  tt.is(d.inspectTask(long.taskId).state, 'running');
  tt.is(d.inspectTask(long.taskId).driverAttributes.cgroups, 'off');
  tt.is(d.sampleStats(long.taskId).source, 'proc');
  await d.stopTask(long.taskId, { timeoutMs: 3000 });
  const r = await d.waitTask(long.taskId);
  tt.is(r.exitCode, null);
  tt.regex(r.err ?? '', /unknown/);
  tt.false(running(pidOf(long)));
  await d.destroyTask(long.taskId);
  await d.stopTask(short.taskId, { timeoutMs: 0 });
  await d.destroyTask(short.taskId, { force: true });
  tt.deepEqual(d.store.list().handles, []);
});
