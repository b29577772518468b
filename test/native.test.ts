// Kernel tests of the C++ addon (native/): batched cgroup file I/O, signalling, pidfds, spawn, watchExit
// (env teardown with watches open: native-teardown.test.ts).
// Runs as root on the real kernel: hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified) or
// v2-only (cgroup2 at /sys/fs/cgroup). v1-only tests skip, with the reason logged, where there is no v1
// hierarchy. Every cgroup lives under corral-test-native-<random>.
import test, { type ExecutionContext } from 'ava';
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  CGROUP2_SUPER_MAGIC,
  CGROUP_SUPER_MAGIC,
  TMPFS_MAGIC,
  native,
  spawnProcess,
  type ExitInfo,
  type FsOp,
  type ProcessHandle,
  type NativeError,
  type NativeErrorInfo,
  type SpawnOptions,
} from '../src/native.js';
import { hostLayout } from './helpers/cgroups.js';
import { sleepMs, until } from './helpers/loop.js';
import { sandbox } from './helpers/sandbox.js';

const n = native();
const layout = hostLayout();
/** The cgroup2 mount: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a v2 one. */
const V2 = layout.unifiedMount ?? '/sys/fs/cgroup/unified';
/** v1 controller mounts (none on a v2-only host). */
const FREEZER = layout.v1Mounts.freezer;
const CPU = layout.v1Mounts.cpu;
/** Why a test needing these v1 controllers cannot run here, or undefined. */
function noV1(...controllers: string[]): string | undefined {
  const missing = controllers.filter((c) => !layout.v1Mounts[c]);
  return missing.length ? `no v1 ${missing.join(', ')} hierarchy on this host (mode ${layout.mode})` : undefined;
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-native-'));

// ---------- helpers ----------

/**
 * Groups for one test under a sandbox parent of its own (`PARENT`, in every hierarchy), removed at
 * the test's teardown (processes killed first) even when the test fails.
 */
function cgroups(t: Pick<ExecutionContext, 'teardown'>): { PARENT: string; mkgroup: (root: string, name: string) => string } {
  const PARENT = sandbox(t, 'native').parent;
  return {
    PARENT,
    mkgroup(root, name) {
      fs.mkdirSync(path.join(root, PARENT), { recursive: true });
      const dir = path.join(root, PARENT, name);
      fs.mkdirSync(dir);
      return dir;
    },
  };
}

test.after.always(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Zombie (or live) children of this process, from /proc (this kernel has no task children files). */
function childrenOfUs(): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try { stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8'); } catch { continue; }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[1]) === process.pid) out.push({ pid: Number(e), state: rest[0]! });
  }
  return out;
}

interface Spawned { pid: number; placement: string; process: ProcessHandle; exit: Promise<ExitInfo> }

const live = new Set<number>();
test.after.always(() => {
  for (const pid of live) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

/** native spawn + watch(reap) so that nothing is left as a zombie; killed at the test's teardown if still alive. */
async function spawnWatched(t: Pick<ExecutionContext, 'teardown'>, opts: Partial<SpawnOptions> & { file: string; argv: string[] }): Promise<Spawned> {
  const r = await spawnProcess({ envp: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], stdio: [-1, -1, -1], timeoutMs: 30_000, ...opts });
  live.add(r.pid);
  t.teardown(() => { if (live.has(r.pid)) { try { process.kill(r.pid, 'SIGKILL'); } catch { /* gone */ } } });
  const exit = new Promise<ExitInfo>((resolve) => {
    r.process.watch(true, (info) => {
      live.delete(r.pid);
      resolve(info);
    });
  });
  return { ...r, exit };
}

/** The addon's own callback form, as a promise of the raw result or the raw native error. */
function rawSpawn(opts: SpawnOptions): Promise<{ pid: number; placement: string; process: ProcessHandle }> {
  return new Promise((resolve, reject) => n.spawn(opts, (err, r) => (err ? reject(err) : resolve(r!))));
}

function outFile(name: string): { file: string; fd: number } {
  const file = path.join(tmp, name);
  const fd = fs.openSync(file, 'w');
  return { file, fd };
}

function statusField(pid: number, field: string): string {
  const m = new RegExp(`^${field}:[ \\t]*(.*)$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? m[1]!.trim() : '';
}

function assertErrorShape(t: import('ava').ExecutionContext, e: NativeErrorInfo, code: string, syscall: string, p?: string) {
  t.is(e.code, code);
  t.is(e.syscall, syscall);
  t.true(e.errno < 0, 'errno is negative as in libuv');
  if (p !== undefined) {
    t.is(e.path, p);
    t.is(e.message.startsWith(`${code}: `), true, e.message);
    t.true(e.message.endsWith(`, ${syscall} '${p}'`), e.message);
  }
}

// ---------- cgroupfs ----------

test('writeFiles: one result per item, errors per item, never throws for one bad item', (t) => {
  const { mkgroup } = cgroups(t);
  const a = path.join(tmp, 'w-a');
  const b = path.join(tmp, 'w-b');
  fs.writeFileSync(a, '');
  fs.writeFileSync(b, '');
  const big = 'x'.repeat(10_000);
  const g = mkgroup(V2, 'w.scope');
  const res = n.writeFiles(
    [a, path.join(tmp, 'missing', 'x'), tmp, b, path.join(g, 'cgroup.freeze'), path.join(g, 'cgroup.freeze')],
    ['hello', 'x', 'y', big, 'not-a-number', '0'],
  );
  t.is(res.length, 6);
  t.is(res[0], null);
  assertErrorShape(t, res[1]!, 'ENOENT', 'open', path.join(tmp, 'missing', 'x'));
  assertErrorShape(t, res[2]!, 'EISDIR', 'open', tmp);
  t.is(res[3], null);
  assertErrorShape(t, res[4]!, 'EINVAL', 'write', path.join(g, 'cgroup.freeze'));
  t.is(res[5], null);
  t.is(fs.readFileSync(a, 'utf8'), 'hello');
  t.is(fs.readFileSync(b, 'utf8'), big);
  t.deepEqual(n.writeFiles([], []), []);
  t.throws(() => n.writeFiles([a], []), { instanceOf: TypeError });
});

test('writeFiles does not create files', (t) => {
  const p = path.join(tmp, 'never-created');
  const [r] = n.writeFiles([p], ['x']);
  t.is(r?.code, 'ENOENT');
  t.false(fs.existsSync(p));
});

test('readFiles: text or error per item', (t) => {
  const a = path.join(tmp, 'r-a');
  fs.writeFileSync(a, 'abc\n');
  const res = n.readFiles([a, path.join(tmp, 'nope'), '/proc/self/status']);
  t.is(res[0], 'abc\n');
  assertErrorShape(t, res[1] as NativeErrorInfo, 'ENOENT', 'open', path.join(tmp, 'nope'));
  t.regex(res[2] as string, /^Name:/);
});

test('readProcs: pids of a group, empty group, missing group throws ENOENT', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'procs.scope');
  t.deepEqual(Array.from(n.readProcs(path.join(g, 'cgroup.procs'))), []);
  const a = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'], cgroupDir: g });
  const b = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'], cgroupDir: g });
  const pids = n.readProcs(path.join(g, 'cgroup.procs'));
  t.true(pids instanceof Int32Array);
  t.deepEqual(Array.from(pids).sort(), [a.pid, b.pid].sort());
  t.deepEqual(n.signalGroup(path.join(g, 'cgroup.procs'), 9), { signalled: 2, gone: 0 });
  t.is((await a.exit).signal, 9);
  t.is((await b.exit).signal, 9);
  const missing = path.join(V2, PARENT, 'missing', 'cgroup.procs');
  const err = t.throws(() => n.readProcs(missing)) as NativeError;
  assertErrorShape(t, err, 'ENOENT', 'open', missing);
  t.true(err instanceof Error);
});

test('statfsType tells cgroup2, cgroup v1 and tmpfs apart', (t) => {
  t.is(n.statfsType(V2), CGROUP2_SUPER_MAGIC);
  if (FREEZER) t.is(n.statfsType(FREEZER), CGROUP_SUPER_MAGIC);
  else t.log(`v1 part skipped: ${noV1('freezer')}`);
  t.is(n.statfsType('/dev/shm'), TMPFS_MAGIC);
  const err = t.throws(() => n.statfsType('/nonexistent-corral')) as NativeError;
  assertErrorShape(t, err, 'ENOENT', 'statfs', '/nonexistent-corral');
});

// ---------- signals and pidfds ----------

test('openProcess: a ProcessHandle signals through its pidfd; ESRCH once gone; strict pid', async (t) => {
  const a = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'] });
  const h = n.openProcess(a.pid);
  t.teardown(() => h.close());
  t.is(h.pid, a.pid);
  t.false(h.closed);
  h.signal(0);
  h.signal(9);
  t.is((await a.exit).signal, 9);
  const err = t.throws(() => h.signal(0)) as NativeError;
  assertErrorShape(t, err, 'ESRCH', 'pidfd_send_signal');
  h.close();
  h.close();
  t.true(h.closed);
  t.is((t.throws(() => h.signal(0)) as NativeError).code, 'ESRCH', 'closed: nothing to signal');
  const e2 = t.throws(() => n.openProcess(a.pid)) as NativeError;
  assertErrorShape(t, e2, 'ESRCH', 'pidfd_open');
  for (const bad of [NaN, Infinity, -Infinity, 0, -1, 1.5, 2 ** 31, '1' as unknown as number]) {
    t.throws(() => n.openProcess(bad), { instanceOf: TypeError }, String(bad));
  }
  for (const bad of [NaN, Infinity, -1, 65, 2.5]) t.throws(() => a.process.signal(bad), { instanceOf: TypeError }, String(bad));
});

test('signalGroup: each member confirmed through a pidfd; strict arguments', async (t) => {
  const { mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'sig.scope');
  const procs = path.join(g, 'cgroup.procs');
  const a = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'], cgroupDir: g });
  const dead = await spawnWatched(t, { file: '/bin/true', argv: ['true'], cgroupDir: g });
  await dead.exit;
  t.deepEqual(n.signalGroup(procs, 15), { signalled: 1, gone: 0 });
  t.is((await a.exit).signal, 15);
  t.deepEqual(n.signalGroup(procs, 15), { signalled: 0, gone: 0 });
  for (const bad of [NaN, Infinity, -1, 65]) t.throws(() => n.signalGroup(procs, bad), { instanceOf: TypeError }, String(bad));
});

test('control steps (a group kill\'s write, read, confirmed signal) off the loop; errors name the path; strict arguments', async (t) => {
  const { mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'control.scope');
  const procs = path.join(g, 'cgroup.procs');
  const call = <T>(f: (cb: (err: any, r?: T) => void) => void) => new Promise<T | undefined>((res, rej) => f((e, r) => (e ? rej(e) : res(r))));
  const a = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'], cgroupDir: g });
  t.is((await call<string>((cb) => n.controlRead(procs, cb)))!.trim(), String(a.pid));
  await call((cb) => n.controlWrite(path.join(g, 'cgroup.freeze'), '1', cb));
  await until('the group to freeze', () => /^frozen 1$/m.test(fs.readFileSync(path.join(g, 'cgroup.events'), 'utf8')) || undefined);
  await call((cb) => n.controlWrite(path.join(g, 'cgroup.freeze'), '0', cb));
  t.deepEqual(await call((cb) => n.controlSignalGroup(procs, 15, cb)), { signalled: 1, gone: 0 });
  t.is((await a.exit).signal, 15);
  const missing = path.join(g, 'no-such-file');
  assertErrorShape(t, (await t.throwsAsync(call((cb) => n.controlRead(missing, cb)))) as any, 'ENOENT', 'open');
  assertErrorShape(t, (await t.throwsAsync(call((cb) => n.controlWrite(missing, '1', cb)))) as any, 'ENOENT', 'open');
  for (const bad of [NaN, Infinity, -1, 65]) t.throws(() => n.controlSignalGroup(procs, bad, () => {}), { instanceOf: TypeError }, String(bad));
  t.throws(() => n.controlRead(procs, undefined as never), { instanceOf: TypeError });
  t.throws(() => n.controlWrite(procs, 1 as never, () => {}), { instanceOf: TypeError });
});

// ---------- spawn ----------

test('spawn into a v2 group with clone3: in the group before its first instruction', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'clone3.scope');
  const out = outFile('clone3-cgroup');
  const s = await spawnWatched(t, { file: '/bin/cat', argv: ['cat', '/proc/self/cgroup'], stdio: [-1, out.fd, out.fd], cgroupDir: g });
  fs.closeSync(out.fd);
  t.is(s.placement, 'clone3');
  t.is((await s.exit).exitCode, 0);
  // cat reads its own cgroup file: it never moved, so this is where it started.
  t.regex(fs.readFileSync(out.file, 'utf8'), new RegExp(`^0::/${PARENT}/clone3\\.scope$`, 'm'));
});

test('spawn into v1 groups by joining cgroup.procs before execve', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const why = noV1('freezer', 'cpu');
  if (why) { t.log(`skipped: ${why}`); t.pass(); return; }
  const fz = mkgroup(FREEZER!, 'join');
  const cpu = mkgroup(CPU!, 'join');
  const out = outFile('join-cgroup');
  const s = await spawnWatched(t, {
    file: '/bin/cat',
    argv: ['cat', '/proc/self/cgroup'],
    stdio: [-1, out.fd, out.fd],
    joinProcs: [path.join(fz, 'cgroup.procs'), path.join(cpu, 'cgroup.procs')],
  });
  fs.closeSync(out.fd);
  t.is(s.placement, 'join');
  t.is((await s.exit).exitCode, 0);
  const text = fs.readFileSync(out.file, 'utf8');
  t.regex(text, new RegExp(`^\\d+:freezer:/${PARENT}/join$`, 'm'));
  t.regex(text, new RegExp(`^\\d+:cpu:/${PARENT}/join$`, 'm'));
});

test('spawn into a v2 group by joining its cgroup.procs (the path taken where clone3 is missing)', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const g = mkgroup(V2, 'joinv2.scope');
  const out = outFile('joinv2-cgroup');
  const s = await spawnWatched(t, { file: '/bin/cat', argv: ['cat', '/proc/self/cgroup'], stdio: [-1, out.fd, out.fd], joinProcs: [path.join(g, 'cgroup.procs')] });
  fs.closeSync(out.fd);
  t.is(s.placement, 'join');
  t.is((await s.exit).exitCode, 0);
  t.regex(fs.readFileSync(out.file, 'utf8'), new RegExp(`^0::/${PARENT}/joinv2\\.scope$`, 'm'));
});

test('spawn with v2 cgroupDir and v1 joinProcs together (hybrid)', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const why = noV1('freezer');
  if (why) { t.log(`skipped: ${why}`); t.pass(); return; }
  const g = mkgroup(V2, 'both.scope');
  const fz = mkgroup(FREEZER!, 'both');
  const out = outFile('both-cgroup');
  const s = await spawnWatched(t, {
    file: '/bin/cat', argv: ['cat', '/proc/self/cgroup'], stdio: [-1, out.fd, out.fd],
    cgroupDir: g, joinProcs: [path.join(fz, 'cgroup.procs')],
  });
  fs.closeSync(out.fd);
  t.is(s.placement, 'clone3');
  t.is((await s.exit).exitCode, 0);
  const text = fs.readFileSync(out.file, 'utf8');
  t.regex(text, new RegExp(`^0::/${PARENT}/both\\.scope$`, 'm'));
  t.regex(text, new RegExp(`^\\d+:freezer:/${PARENT}/both$`, 'm'));
});

test('spawn: exact argv, envp and cwd', async (t) => {
  const out = outFile('argv-env');
  const s = await spawnWatched(t, {
    file: '/bin/sh',
    argv: ['my-sh', '-c', 'printf "%s|%s|%s|%s\\n" "$0" "$1" "$(pwd)" "$FOO"; /usr/bin/env', 'zero', 'one two'],
    envp: ['FOO=bar baz', 'ONLY=this'],
    cwd: tmp,
    stdio: [-1, out.fd, out.fd],
  });
  fs.closeSync(out.fd);
  t.is((await s.exit).exitCode, 0);
  const lines = fs.readFileSync(out.file, 'utf8').trim().split('\n');
  t.is(lines[0], `zero|one two|${tmp}|bar baz`);
  // The environment is exactly envp (sh adds PWD, maybe SHLVL/_; nothing from our process).
  const envNames = lines.slice(1).map((l) => l.split('=')[0]);
  t.true(envNames.includes('FOO') && envNames.includes('ONLY'));
  t.false(envNames.includes('HOME') || envNames.includes('PATH') || envNames.some((e) => e?.startsWith('AVA')));
});

test('spawn: uid, gid, supplementary groups, setsid, oom_score_adj, clean signal state, only fds 0..2', async (t) => {
  const s = await spawnWatched(t, {
    file: '/bin/sleep', argv: ['sleep', '100'],
    uid: 65534, gid: 65533, groups: [1234, 5678], setsid: true, oomScoreAdj: 500,
  });
  t.teardown(() => { try { process.kill(s.pid, 9); } catch { /* gone */ } });
  await until('exec of sleep', () => fs.readFileSync(`/proc/${s.pid}/comm`, 'utf8').trim() === 'sleep');
  t.is(statusField(s.pid, 'Uid'), '65534\t65534\t65534\t65534');
  t.is(statusField(s.pid, 'Gid'), '65533\t65533\t65533\t65533');
  t.is(statusField(s.pid, 'Groups'), '1234 5678');
  t.is(statusField(s.pid, 'SigIgn'), '0000000000000000', 'Node ignores SIGPIPE; the child must not');
  t.is(statusField(s.pid, 'SigBlk'), '0000000000000000');
  t.is(fs.readFileSync(`/proc/${s.pid}/oom_score_adj`, 'utf8').trim(), '500');
  const stat = fs.readFileSync(`/proc/${s.pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  t.is(Number(f[2]), s.pid, 'process group leader');
  t.is(Number(f[3]), s.pid, 'session leader');
  t.deepEqual(fs.readdirSync(`/proc/${s.pid}/fd`).sort(), ['0', '1', '2']);
  t.is(fs.readlinkSync(`/proc/${s.pid}/fd/0`), '/dev/null');
  s.process.signal(9);
  t.is((await s.exit).signal, 9);
});

test('spawn: uid without groups clears supplementary groups; no setsid keeps our session', async (t) => {
  const s = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'], uid: 65534, gid: 65534 });
  await until('exec of sleep', () => fs.readFileSync(`/proc/${s.pid}/comm`, 'utf8').trim() === 'sleep');
  t.is(statusField(s.pid, 'Groups'), '');
  const stat = fs.readFileSync(`/proc/${s.pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  t.not(Number(f[3]), s.pid);
  s.process.signal(9);
  await s.exit;
});

test('spawn: stdio fds that overlap 0..2 are permuted correctly', async (t) => {
  // Our own 0, 1, 2 rotated: the child's 0 is our 2, its 1 our 0, its 2 our 1.
  const s = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'], stdio: [2, 0, 1] });
  await until('exec of sleep', () => fs.readFileSync(`/proc/${s.pid}/comm`, 'utf8').trim() === 'sleep');
  const ours = [0, 1, 2].map((i) => fs.readlinkSync(`/proc/self/fd/${i}`));
  t.is(fs.readlinkSync(`/proc/${s.pid}/fd/0`), ours[2]);
  t.is(fs.readlinkSync(`/proc/${s.pid}/fd/1`), ours[0]);
  t.is(fs.readlinkSync(`/proc/${s.pid}/fd/2`), ours[1]);
  s.process.signal(9);
  await s.exit;

  // Same file on 1 and 2, a high fd; stdin from a file.
  const input = path.join(tmp, 'stdin');
  fs.writeFileSync(input, 'from stdin\n');
  const inFd = fs.openSync(input, 'r');
  const out = outFile('stdio-mixed');
  const s2 = await spawnWatched(t, { file: '/bin/sh', argv: ['sh', '-c', 'cat; echo err >&2'], stdio: [inFd, out.fd, out.fd] });
  fs.closeSync(inFd);
  fs.closeSync(out.fd);
  t.is((await s2.exit).exitCode, 0);
  t.is(fs.readFileSync(out.file, 'utf8'), 'from stdin\nerr\n');
});

async function assertNoChildLeft(t: import('ava').ExecutionContext, before: Set<number>) {
  // (serial: concurrent tests' children would count.) The spawn thread reaps a failed child before
  // the error is delivered. So no new child of ours (live or zombie) may exist now.
  const extra = childrenOfUs().filter((c) => !before.has(c.pid) && !live.has(c.pid));
  t.deepEqual(extra, []);
}

test.serial('spawn: exec failures throw Node-style errors and leave no process or zombie', async (t) => {
  const { PARENT, mkgroup } = cgroups(t);
  const before = new Set(childrenOfUs().map((c) => c.pid));
  // A missing group to join: a v1 freezer group on a hybrid host, a v2 group's cgroup.procs on a v2-only one.
  const missingJoin = FREEZER ? path.join(FREEZER, PARENT, 'missing', 'cgroup.procs') : path.join(V2, PARENT, 'missing-join', 'cgroup.procs');
  const notExec = path.join(tmp, 'not-executable');
  fs.writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o644 });
  const cases: [Partial<SpawnOptions> & { file: string }, string, string, string | undefined][] = [
    [{ file: '/nonexistent/prog' }, 'ENOENT', 'execve', '/nonexistent/prog'],
    [{ file: notExec }, 'EACCES', 'execve', notExec],
    [{ file: '/bin/true', cwd: '/nonexistent-cwd' }, 'ENOENT', 'chdir', '/nonexistent-cwd'],
    [{ file: '/bin/true', stdio: [-1, 987, -1] }, 'EBADF', 'dup2', undefined],
    [{ file: '/bin/true', cgroupDir: path.join(V2, PARENT, 'missing.scope') }, 'ENOENT', 'open', path.join(V2, PARENT, 'missing.scope')],
    [{ file: '/bin/true', joinProcs: [missingJoin] }, 'ENOENT', 'open', missingJoin],
  ];
  mkgroup(V2, 'exists.scope'); // make sure PARENT exists so only the leaf is missing
  for (const [opts, code, syscall, p] of cases) {
    const err = (await t.throwsAsync(rawSpawn({ argv: ['x'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000, ...opts }), undefined, JSON.stringify(opts))) as NativeError;
    t.true(err instanceof Error);
    assertErrorShape(t, err, code, syscall, p);
  }
  await assertNoChildLeft(t, before);
});

test('spawn: bad options are TypeErrors thrown before anything starts (NaN, ±Infinity, out of range, huge lengths)', (t) => {
  const ok: SpawnOptions = { file: '/bin/true', argv: ['true'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000 };
  const hugeArgv: string[] = [];
  hugeArgv.length = 2 ** 32 - 1; // a forged length: must not allocate or abort
  const hugeGroups: number[] = [];
  hugeGroups.length = 2 ** 31;
  const bad: [string, Partial<Record<keyof SpawnOptions, unknown>>][] = [
    ['empty file', { file: '' }],
    ['NUL in argv', { argv: ['a\0b'] }],
    ['stdio of 2', { stdio: [-1, -1] }],
    ['uid NaN (would be root)', { uid: NaN }],
    ['uid Infinity', { uid: Infinity }],
    ['uid -Infinity', { uid: -Infinity }],
    ['uid -1', { uid: -1 }],
    ['uid 2^32', { uid: 2 ** 32 }],
    ['uid fraction', { uid: 0.5 }],
    ['gid NaN', { gid: NaN }],
    ['groups [NaN]', { groups: [NaN] }],
    ['groups huge length', { groups: hugeGroups }],
    ['oomScoreAdj Infinity', { oomScoreAdj: Infinity }],
    ['oomScoreAdj 1001', { oomScoreAdj: 1001 }],
    ['stdio NaN', { stdio: [NaN, -1, -1] }],
    ['stdio -2', { stdio: [-2, -1, -1] }],
    ['argv huge length', { argv: hugeArgv }],
    ['timeoutMs NaN', { timeoutMs: NaN }],
    ['timeoutMs missing', { timeoutMs: undefined }],
    ['timeoutMs 0', { timeoutMs: 0 }],
    ['record not an object', { record: 'x' }],
    ['record.file empty', { record: { file: '', text: 'x' } }],
    ['record.text missing', { record: { file: '/tmp/x' } }],
    ['record.text empty', { record: { file: '/tmp/x', text: '' } }],
  ];
  let called = 0;
  for (const [what, o] of bad) {
    t.throws(() => n.spawn({ ...ok, ...o } as SpawnOptions, () => { called++; }), { instanceOf: TypeError }, what);
  }
  t.is(called, 0, 'no callback for a rejected call');
});

test('applyAsync: absent fails with EEXIST naming the path and stops there; steps after a passed check run', async (t) => {
  const dir = path.join(tmp, `apply-${process.pid}`);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const apply = (ops: FsOp[]) => new Promise<(NativeError & { index: number }) | null>((res) => n.applyAsync(ops, res));
  t.is(await apply([['absent', dir], ['mkdir', dir]]), null);
  t.true(fs.statSync(dir).isDirectory());
  const e = await apply([['absent', path.join(dir, 'missing')], ['absent', dir], ['rmdir', dir]]);
  t.like(e, { code: 'EEXIST', syscall: 'stat', path: dir, index: 1 });
  t.true(fs.existsSync(dir), 'no step after the failed check ran');
  t.throws(() => n.applyAsync([['nope' as never, dir]], () => {}), { instanceOf: TypeError });
  // create: exclusive, whole, no temp file left either way; the steps after it run only if it did.
  const file = path.join(dir, 'rec.json');
  const tmpFile = `${file}.1.tmp`;
  t.is(await apply([['create', file, 'one\n', tmpFile], ['mkdir', path.join(dir, 'after')]]), null);
  t.is(fs.readFileSync(file, 'utf8'), 'one\n');
  t.true(fs.existsSync(path.join(dir, 'after')));
  const again = await apply([['create', file, 'two\n', tmpFile], ['mkdir', path.join(dir, 'after2')]]);
  t.like(again, { code: 'EEXIST', syscall: 'link', path: file, index: 0 });
  t.is(fs.readFileSync(file, 'utf8'), 'one\n');
  t.false(fs.existsSync(path.join(dir, 'after2')));
  t.deepEqual(fs.readdirSync(dir).sort(), ['after', 'rec.json']);
  t.throws(() => n.applyAsync([['create', file, 'x'] as never], () => {}), { instanceOf: TypeError }, 'create without a temp path');
  // unlink: a file already gone counts as removed; a failure (a directory) stops the batch.
  t.is(await apply([['unlink', file], ['unlink', file]]), null);
  t.false(fs.existsSync(file));
  t.like(await apply([['unlink', path.join(dir, 'after')], ['rmdir', path.join(dir, 'after')]]), { code: 'EISDIR', syscall: 'unlink', index: 0 });
  t.true(fs.existsSync(path.join(dir, 'after')));
});

test('spawn record: the spawn thread appends the line with pid and start time filled in; a failed append is reported, the process runs', async (t) => {
  const file = path.join(tmp, `record-${process.pid}`);
  fs.writeFileSync(file, 'first\n');
  t.teardown(() => fs.rmSync(file, { force: true }));
  const r = await spawnProcess({ file: '/bin/true', argv: ['true'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000,
    record: { file, text: '{"pid":\x01P,"pgid":\x01P,"startTime":\x01T,"s":"\\u0001P"}\n' } });
  const exit = new Promise<ExitInfo>((res) => r.process.watch(true, res));
  // Read before the reap (the watch reaps on a later turn): the stat is the child's.
  const st = fs.readFileSync(`/proc/${r.pid}/stat`, 'utf8');
  const starttime = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[19]);
  await exit;
  t.is(r.recordError, undefined);
  t.is(r.startTime, starttime);
  t.is(fs.readFileSync(file, 'utf8'), `first\n{"pid":${r.pid},"pgid":${r.pid},"startTime":${starttime},"s":"\\u0001P"}\n`);
  // A record that is gone: the process still runs and is delivered; the error names the file.
  const gone = path.join(tmp, `no-such-dir-${process.pid}`, 'record');
  const r2 = await spawnProcess({ file: '/bin/true', argv: ['true'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000, record: { file: gone, text: 'x\n' } });
  await new Promise<ExitInfo>((res) => r2.process.watch(true, res));
  t.like(r2.recordError, { code: 'ENOENT', syscall: 'open', path: gone });
  t.true(r2.pid > 0);
});

// ---------- ProcessHandle.watch ----------

test('watch: exit code, signal and rusage of a reaped child', async (t) => {
  const a = await spawnWatched(t, { file: '/bin/sh', argv: ['sh', '-c', 'i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exit 7'] });
  const info = await a.exit;
  t.is(info.exitCode, 7);
  t.is(info.signal, null);
  t.true(info.reaped);
  t.truthy(info.rusage);
  t.true(info.rusage!.userUs + info.rusage!.systemUs > 0);
  t.true(info.rusage!.maxRssKb > 0);
  t.false(fs.existsSync(`/proc/${a.pid}`), 'reaped: no zombie left');

  const b = await spawnWatched(t, { file: '/bin/sleep', argv: ['sleep', '100'] });
  b.process.signal(15);
  const ib = await b.exit;
  t.deepEqual([ib.exitCode, ib.signal, ib.reaped], [null, 15, true]);
});

test('watch: close() stops the callback; reap=false reports without reaping', async (t) => {
  const r = await rawSpawn({ file: '/bin/sleep', argv: ['sleep', '100'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000 });
  t.teardown(() => { try { process.kill(r.pid, 'SIGKILL'); } catch { /* gone */ } });
  let called = 0;
  const w = r.process;
  w.watch(true, () => { called++; });
  t.throws(() => w.watch(true, () => {}), { instanceOf: TypeError }, 'one watch per handle');
  w.close();
  w.close();
  process.kill(r.pid, 'SIGKILL');
  await until('zombie', () => statusField(r.pid, 'State').startsWith('Z'));
  // A second watcher without reaping sees it end but leaves it as it is.
  const info2 = await new Promise<ExitInfo>((resolve) => n.openProcess(r.pid).watch(false, resolve));
  t.deepEqual(info2, { exitCode: null, signal: null, reaped: false });
  t.true(statusField(r.pid, 'State').startsWith('Z'));
  // And a third reaps it.
  const info3 = await new Promise<ExitInfo>((resolve) => n.openProcess(r.pid).watch(true, resolve));
  t.is(info3.signal, 9);
  t.true(info3.reaped);
  await sleepMs(20); // give a wrongly-late first callback the chance to show up
  t.is(called, 0);
});

test('watch alongside child_process: both see their exits', async (t) => {
  const natives = [0, 1, 2].map((i) => spawnWatched(t, { file: '/bin/sh', argv: ['sh', '-c', `sleep 0.0${i + 1}; exit ${i + 10}`] }));
  const cps = [0, 1, 2].map(
    (i) =>
      new Promise<number | null>((resolve, reject) => {
        const c = cp.spawn('/bin/sh', ['-c', `sleep 0.0${3 - i}; exit ${i + 20}`], { stdio: 'ignore' });
        c.on('error', reject);
        c.on('exit', (code) => resolve(code));
      }),
  );
  t.deepEqual((await Promise.all((await Promise.all(natives)).map((s) => s.exit))).map((i) => i.exitCode), [10, 11, 12]);
  t.deepEqual(await Promise.all(cps), [20, 21, 22]);
  const out = cp.execFileSync('/bin/echo', ['still works'], { encoding: 'utf8' });
  t.is(out, 'still works\n');
});

test('watch: ref/unref exist and do not break delivery', async (t) => {
  const s = await rawSpawn({ file: '/bin/true', argv: ['true'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000 });
  const info = await new Promise<ExitInfo>((resolve) => {
    s.process.watch(true, resolve);
    s.process.unref();
    s.process.ref();
  });
  t.is(info.exitCode, 0);
});
