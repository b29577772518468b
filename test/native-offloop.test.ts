// The event loop never waits on the kernel (issue: off-loop spawn, event-driven group waits, one owner
// per fd). Kernel tests as root: a spawn into a frozen group fails at once with CgroupFrozenError; a
// spawn whose child freezes while joining is bounded (CgroupTimeoutError) while a 10 ms heartbeat keeps
// ticking, and its thread cleans up once the group thaws; every error path leaves our fd count as it
// was; group waits complete while every libuv pool thread is blocked. Each test has its own sandbox
// (corral-test-<run>-offloop-...-<pid>-<n>): its teardown thaws, kills and removes what the test made.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, spawnProcess, type ExitInfo, type SpawnOptions } from '../src/native.js';
import { CgroupIO } from '../src/cgroups/io.js';
import { CgroupFrozenError, CgroupTimeoutError } from '../src/errors.js';
import { hostLayout } from './helpers/cgroups.js';
import { fdList, heartbeat, noNewFds, settle, sleepMs, until } from './helpers/loop.js';
import { type Sandbox, sandbox } from './helpers/sandbox.js';

const n = native();
const layout = hostLayout();
const V2 = layout.unifiedMount ?? '/sys/fs/cgroup/unified';
const FREEZER = layout.v1Mounts.freezer;
const SLOW = Math.max(1, Number(process.env.CORRAL_TEST_SLOWDOWN ?? 1) || 1);

const fdCount = () => fs.readdirSync('/proc/self/fd').length;

/** `<root>/<the sandbox's parent>/<name>` (parents made as needed); the sandbox's teardown removes it. */
function mkgroup(sb: Sandbox, root: string, name: string): string {
  const dir = path.join(root, sb.parent, name);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

const base = (o: Partial<SpawnOptions>): SpawnOptions => ({ file: '/bin/sleep', argv: ['sleep', '100'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000, ...o });

test.serial('spawn into a frozen group: CgroupFrozenError at once naming the group, nothing started, loop free, fds as before', async (t) => {
  const sb = sandbox(t, 'offloop-frozen');
  const cases: [string, string, Partial<SpawnOptions>][] = [];
  const u = mkgroup(sb, V2, 'frozen.scope');
  fs.writeFileSync(path.join(u, 'cgroup.freeze'), '1');
  cases.push(['v2 cgroupDir (clone3)', u, { cgroupDir: u }]);
  cases.push(['v2 joined cgroup.procs', u, { joinProcs: [path.join(u, 'cgroup.procs')] }]);
  if (FREEZER) {
    const f = mkgroup(sb, FREEZER, 'frozen');
    fs.writeFileSync(path.join(f, 'freezer.state'), 'FROZEN');
    const child = mkgroup(sb, FREEZER, 'frozen/child'); // frozen through its parent
    cases.push(['v1 freezer', f, { joinProcs: [path.join(f, 'cgroup.procs')] }]);
    cases.push(['v1 freezer, frozen parent', child, { joinProcs: [path.join(child, 'cgroup.procs')] }]);
  } else {
    t.log(`v1 cases skipped: no v1 freezer (mode ${layout.mode})`);
  }
  await settle();
  const fds = fdList();
  const hb = heartbeat();
  for (const [what, dir, o] of cases) {
    const t0 = performance.now();
    const e = await t.throwsAsync(spawnProcess(base(o)), { instanceOf: CgroupFrozenError }, what);
    t.is(e!.code, 'ERR_CGROUP_FROZEN');
    t.is(e!.path, dir, what);
    t.log(`${what}: refused in ${(performance.now() - t0).toFixed(1)} ms`);
    t.is(fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8'), '', `${what}: nothing joined`);
  }
  t.log(`heartbeat max gap ${hb.stop().toFixed(1)} ms`);
  await settle();
  noNewFds(t, fds, 'no fd left by the refused spawns');
});

for (const kind of ['v2', 'v1'] as const) {
  test.serial(`spawn whose child freezes while joining (${kind}): CgroupTimeoutError within the bound, loop ticking; cleaned up after thaw`, async (t) => {
    const sb = sandbox(t, `offloop-freezes-${kind}`);
    if (kind === 'v1' && !FREEZER) { t.log(`skipped: no v1 freezer (mode ${layout.mode})`); t.pass(); return; }
    const dir = kind === 'v2' ? mkgroup(sb, V2, 'freezes.scope') : mkgroup(sb, FREEZER!, 'freezes');
    const ctl = kind === 'v2' ? ['cgroup.freeze', '1', '0'] : ['freezer.state', 'FROZEN', 'THAWED'];
    t.teardown(() => { try { fs.writeFileSync(path.join(dir, ctl[0]!), ctl[2]!); } catch { /* gone */ } });
    fs.writeFileSync(path.join(dir, ctl[0]!), ctl[1]!);
    // A path the cheap freeze check does not recognise as a group (a symlink elsewhere to its
    // cgroup.procs): the child joins the frozen group and freezes before execve, as it would if
    // the group froze between the check and the join.
    const link = path.join(sb.stateDir, `procs-${kind}`);
    fs.symlinkSync(path.join(dir, 'cgroup.procs'), link);
    await settle();
    const fds = fdCount();
    const before = fdList();
    const hb = heartbeat();
    const t0 = performance.now();
    const e = await t.throwsAsync(spawnProcess(base({ joinProcs: [link], timeoutMs: 300 })), { instanceOf: CgroupTimeoutError });
    const took = performance.now() - t0;
    const gap = hb.stop();
    t.log(`timed out after ${took.toFixed(0)} ms (bound 300), heartbeat max gap ${gap.toFixed(1)} ms`);
    t.is(e!.timeoutMs, 300);
    t.regex(e!.message, /did not start a process within 300 ms/);
    t.true(took < 300 + 2000 * SLOW, `rejected ${took.toFixed(0)} ms after the call`);
    // The child (frozen in the group) was SIGKILLed; v2 lets it die at once, v1 once thawed.
    fs.writeFileSync(path.join(dir, ctl[0]!), ctl[2]!);
    await until('the frozen child to be gone', () => fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8') === '');
    // The spawn thread reaps it and closes its pidfd.
    const extra = () => fdList().filter((f) => !before.includes(f));
    const ok = await until(`our fds back to what they were`, () => fdCount() <= fds && extra().length === 0).catch(() => false);
    t.true(ok, `new fds: ${extra().join(' ')}; ${fdCount()} now, ${fds} before`);
  });
}

test('fd accounting: every spawn error path and every delivered handle leave our fd count as it was', async (t) => {
  const sb = sandbox(t, 'offloop-fds');
  const live = new Set<number>();
  sb.defer(() => { for (const pid of live) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } } });
  const missing = path.join(V2, sb.parent, 'no-such.scope');
  await settle();
  const fds = fdList();
  const errors: [string, Partial<SpawnOptions>][] = [
    ['execve ENOENT', { file: '/nonexistent/prog' }],
    ['chdir ENOENT', { file: '/bin/true', cwd: '/nonexistent-cwd' }],
    ['dup2 EBADF', { file: '/bin/true', stdio: [-1, 987, -1] }],
    ['cgroupDir ENOENT', { file: '/bin/true', cgroupDir: missing }],
    ['join ENOENT', { file: '/bin/true', joinProcs: [path.join(missing, 'cgroup.procs')] }],
    // The child's write of its pid fails (ENOSPC): the join step's write error, in the child.
    ['join write ENOSPC', { file: '/bin/true', joinProcs: ['/dev/full'] }],
    // Strict arguments: a TypeError before anything is opened.
    ['uid NaN', { file: '/bin/true', uid: NaN }],
    ['stdio out of range', { file: '/bin/true', stdio: [-1, 2 ** 31, -1] }],
  ];
  for (const [what, o] of errors) await t.throwsAsync(spawnProcess(base(o)), undefined, what);
  // The synchronous factories' failures: pidfd_open of a pid that does not exist, a missing
  // cgroup.events, a watch() of a handle already watched.
  t.throws(() => n.openProcess(0x3ffffffe), { code: 'ESRCH' } as never, 'openProcess ESRCH');
  t.throws(() => n.watchEvents(path.join(missing, 'cgroup.events'), () => {}), { code: 'ENOENT' } as never, 'watchEvents ENOENT');
  const twice = await spawnProcess(base({ file: '/bin/true', argv: ['true'] }));
  const twiceExit = new Promise<ExitInfo>((res) => twice.process.watch(true, res));
  t.throws(() => twice.process.watch(true, () => {}), { instanceOf: TypeError }, 'watch twice');
  await twiceExit;
  await settle();
  noNewFds(t, fds, 'after the failed spawns');
  // Successful spawns, concurrently: each ProcessHandle closes its pidfd once the exit is delivered.
  const rs = await Promise.all(Array.from({ length: 30 }, () => spawnProcess(base({ file: '/bin/true', argv: ['true'] }))));
  t.is(fdList().filter((f) => !fds.includes(f) && f.endsWith('anon_inode:[pidfd]')).length, 30, 'one pidfd per live handle');
  await Promise.all(rs.map((r) => new Promise<ExitInfo>((res) => r.process.watch(true, res))));
  await settle();
  noNewFds(t, fds, 'after the exits');
  // close() without a watch, and openProcess on our own pid.
  const r = await spawnProcess(base({}));
  live.add(r.pid);
  r.process.signal(9);
  r.process.close();
  const h = n.openProcess(r.pid);
  await new Promise<ExitInfo>((res) => h.watch(true, res));
  live.delete(r.pid);
  await settle();
  noNewFds(t, fds, 'after close() and openProcess');
});

test.serial('group waits and kills hold no pool thread: they finish while every libuv pool thread is blocked', async (t) => {
  const sb = sandbox(t, 'offloop-nopool');
  // Block the whole pool: reads of FIFOs with no writer wait in the pool until a writer comes.
  const size = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const fifos = Array.from({ length: size }, (_, i) => path.join(sb.stateDir, `fifo-${i}`));
  const { execFileSync } = await import('node:child_process');
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const blocked = fifos.map((f) => fs.promises.readFile(f));
  let unblocked = false;
  const unblock = () => {
    if (unblocked) return;
    unblocked = true;
    for (const f of fifos) { const fd = fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK); fs.closeSync(fd); }
  };
  t.teardown(unblock);
  await sleepMs(50);
  const io = new CgroupIO();
  const g = mkgroup(sb, V2, 'nopool.scope');
  // spawn runs on a thread of its own: also fine with the pool blocked.
  const r = await spawnProcess(base({ cgroupDir: g }));
  const exit = new Promise<ExitInfo>((res) => r.process.watch(true, res));
  const hb = heartbeat();
  fs.writeFileSync(path.join(g, 'cgroup.freeze'), '1');
  await io.waitFrozen(g, 2, true, 5000 * SLOW);
  fs.writeFileSync(path.join(g, 'cgroup.freeze'), '0');
  await io.waitFrozen(g, 2, false, 5000 * SLOW);
  const k = await io.groupKill('cgroup.kill', path.join(g, 'cgroup.procs'), g, 5000 * SLOW);
  t.is((await exit).signal, 9);
  await io.waitEmpty(path.join(g, 'cgroup.procs'), 1000);
  t.log(`with ${size} pool threads blocked: freeze, thaw, kill (${(k.elapsedNs / 1e6).toFixed(2)} ms); heartbeat max gap ${hb.stop().toFixed(1)} ms`);
  unblock();
  await Promise.all(blocked);
  t.pass();
});
