/**
 * run(): output, input, exit code, limits applied, timeout and abort kill the whole group, clear
 * rejections when the task cannot start, and nothing left behind (no cgroup, no process, no state dir).
 * Serial: each test points TMPDIR (where run() makes its private state dir) at a directory of its own
 * and checks it is empty afterwards.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RawExecDriver } from '../src/drivers/raw_exec/driver.js';
import { AbortError, CorralError, InvalidConfigError } from '../src/errors.js';
import { run, type RunOptions } from '../src/run.js';
import { groupDirsUnder, pidAlive, waitFor } from './helpers/cgroups.js';
import { pidsWithMarker } from './helpers/cli.js';
import { type Sandbox, bound, sandbox, within } from './helpers/sandbox.js';

interface Ctx { sb: Sandbox; tmp: string; opts: RunOptions }

/** The test's sandbox (own cgroup parent) and its own TMPDIR; teardown registered before anything else. */
function setup(t: ExecutionContext, tag: string): Ctx {
  const sb = sandbox(t, tag);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${sb.name}-tmp-`));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  sb.defer(() => {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  return { sb, tmp, opts: { cgroupParent: sb.parent } };
}

/** No task group under the sandbox's parent (v1 name or v2 slice) and no state dir left by run(). */
function assertNothingLeft(t: ExecutionContext, c: Ctx): void {
  t.deepEqual([...groupDirsUnder(c.sb.parent), ...groupDirsUnder(c.sb.slice)], [], 'no task cgroup left');
  t.deepEqual(fs.readdirSync(c.tmp), [], 'run() removed its private state dir');
}

test.serial('output, input and exit code; nothing left behind', async (t) => {
  const c = setup(t, 'run-io');
  const r = await run('sh', ['-c', 'echo out; echo err >&2; cat; exit 7'], { ...c.opts, input: 'from stdin\n', env: { A: 'b' } });
  t.like(r, { exitCode: 7, signal: null, timedOut: false, aborted: false, oomKilled: false, stdout: 'out\nfrom stdin\n', stderr: 'err\n' });
  t.false(r.stdoutTruncated);
  t.true(r.durationMs > 0);
  assertNothingLeft(t, c);
  const env = await run('sh', ['-c', 'echo "$A|$HOME"'], { ...c.opts, env: { A: 'b' }, extendEnv: false, cwd: '/' });
  t.is(env.stdout, 'b|\n', 'extendEnv: false gives exactly env');
  const inherited = await run('sh', ['-c', 'echo "$A|$PWD"'], { ...c.opts, env: { A: 'b' }, cwd: '/tmp' });
  t.is(inherited.stdout, 'b|/tmp\n');
  const noInput = await run('cat', [], c.opts);
  t.like(noInput, { exitCode: 0, stdout: '' }, 'stdin is /dev/null without input');
  assertNothingLeft(t, c);
});

test.serial('maxBuffer keeps that much and drains the rest; the task is not blocked', async (t) => {
  const c = setup(t, 'run-maxbuf');
  const r = await run('sh', ['-c', 'head -c 3000000 /dev/zero | tr "\\0" a; echo done >&2'], { ...c.opts, maxBuffer: 100 });
  t.like(r, { exitCode: 0, stdout: 'a'.repeat(100), stdoutTruncated: true, stderr: 'done\n', stderrTruncated: false });
  assertNothingLeft(t, c);
});

test.serial('limits are applied to the task cgroup, peaks reported; over the memory limit is oomKilled', async (t) => {
  const c = setup(t, 'run-limits');
  // The task reads its own limits from its cgroup (v1 controller dirs or the v2 group).
  const script = [
    'for h in memory pids; do p=$(grep -E "^[0-9]+:([^:]*,)?$h(,[^:]*)?:" /proc/self/cgroup | cut -d: -f3);',
    '  [ -n "$p" ] && [ -f /sys/fs/cgroup/$h$p/$h.limit_in_bytes ] && cat /sys/fs/cgroup/$h$p/$h.limit_in_bytes;',
    '  [ -n "$p" ] && [ -f /sys/fs/cgroup/$h$p/$h.max ] && cat /sys/fs/cgroup/$h$p/$h.max; done;',
    'p=$(grep "^0::" /proc/self/cgroup | cut -d: -f3); for f in memory.max pids.max; do [ -f /sys/fs/cgroup$p/$f ] && cat /sys/fs/cgroup$p/$f; done; true',
  ].join('\n');
  const r = await run('sh', ['-c', script], { ...c.opts, resources: { memoryBytes: 64 << 20, pidsMax: 50 } });
  t.is(r.exitCode, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  t.true(lines.includes(String(64 << 20)), `memory limit seen by the task: ${r.stdout}`);
  t.true(lines.includes('50'), `pids limit seen by the task: ${r.stdout}`);
  t.true(r.peak.memoryBytes > 0, 'peak memory measured');
  const oom = await run('dd', ['if=/dev/zero', 'of=/dev/null', 'bs=256M', 'count=1'], { ...c.opts, resources: { memoryBytes: 32 << 20 } });
  t.like(oom, { oomKilled: true, signal: 'SIGKILL' }, JSON.stringify(oom));
  assertNothingLeft(t, c);
});

/** A task that starts a background sleeper, writes its pid to a file (output is only seen at the end) and waits. */
function sleeperScript(pidFile: string): string[] {
  return ['-c', `sleep 1000 & echo $! > ${pidFile}; wait`];
}

test.serial('timeoutMs stops the task and kills its whole group', async (t) => {
  const c = setup(t, 'run-timeout');
  const pidFile = path.join(c.sb.stateDir, 'bg.pid');
  // The timeout must fire after the task has started its sleeper (on a loaded machine a shell may
  // take a few hundred ms to get there): generous, stretched by CORRAL_TEST_SLOWDOWN, and checked below.
  const r = await run('sh', sleeperScript(pidFile), { ...c.opts, timeoutMs: bound(1500), forceKillAfterMs: 200 });
  t.like(r, { timedOut: true, aborted: false, signal: 'SIGTERM' });
  t.true(fs.existsSync(pidFile), 'the task started its sleeper before the timeout fired');
  const bg = Number(fs.readFileSync(pidFile, 'utf8'));
  t.true(bg > 0);
  t.false(pidAlive(bg), 'the background process of the task was killed too');
  assertNothingLeft(t, c);
});

test.serial('an AbortSignal stops the task and kills its whole group; aborted before the start rejects', async (t) => {
  const c = setup(t, 'run-abort');
  const pidFile = path.join(c.sb.stateDir, 'bg.pid');
  const ac = new AbortController();
  const p = run('sh', sleeperScript(pidFile), { ...c.opts, signal: ac.signal, killSignal: 'SIGKILL', forceKillAfterMs: 0 });
  await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').endsWith('\n'), { timeoutMs: 10_000, what: 'the task to start its sleeper' });
  ac.abort();
  const r = await p;
  t.like(r, { aborted: true, timedOut: false, signal: 'SIGKILL', exitCode: 137 });
  t.false(pidAlive(Number(fs.readFileSync(pidFile, 'utf8'))), 'the background process was killed too');
  await t.throwsAsync(run('true', [], { ...c.opts, signal: AbortSignal.abort() }), { instanceOf: AbortError });
  assertNothingLeft(t, c);
});

test.serial('an abort that lands while the task is still starting stops it too (no wait for an exit that never comes)', async (t) => {
  const c = setup(t, 'run-abort-early');
  // The task's process runs before startTask resolves: abort the moment its pid file appears
  // (polled every loop turn), a few times, so the abort falls inside that window. The abort can
  // land between the shell's creating the pid file and its writing the pid, so the sleeper is found
  // by a marker in its command line (a sleep length no other process has), not through the file.
  for (let i = 0; i < 5; i++) {
    const pidFile = path.join(c.sb.stateDir, `bg-${i}.pid`);
    const marker = `1000.${process.pid}${i}${Date.now() % 100000}`;
    const ac = new AbortController();
    const p = run('sh', ['-c', `sleep ${marker} & echo $! > ${pidFile}; wait`], { ...c.opts, signal: ac.signal, killSignal: 'SIGKILL', forceKillAfterMs: 0 });
    await within(new Promise<void>((resolve) => {
      const poll = () => (fs.existsSync(pidFile) ? resolve() : setImmediate(poll));
      poll();
    }), 10_000, 'the task to start its sleeper');
    ac.abort();
    const r = await within(p, 20_000, `run() to end after the abort (try ${i})`);
    t.like(r, { aborted: true, signal: 'SIGKILL' }, `try ${i}`);
    t.deepEqual(pidsWithMarker(marker), [], `the shell and its background sleeper were killed too (try ${i})`);
  }
  assertNothingLeft(t, c);
});

test.serial('a stop that fails falls back to a plain SIGKILL of the group; if that fails too, run() rejects with its error', async (t) => {
  const c = setup(t, 'run-stopfail');
  const proto = RawExecDriver.prototype;
  const { stopTask, forceKill } = proto;
  t.teardown(() => { proto.stopTask = stopTask; proto.forceKill = forceKill; });
  proto.stopTask = () => Promise.reject(new CorralError('ERR_INJECTED', 'injected stop failure'));
  const pidFile = path.join(c.sb.stateDir, 'bg.pid');
  const ac = new AbortController();
  const p = run('sh', sleeperScript(pidFile), { ...c.opts, signal: ac.signal });
  await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').endsWith('\n'), { timeoutMs: 10_000, what: 'the task to start its sleeper' });
  ac.abort();
  const r = await within(p, 30_000, 'run() to end through the fallback kill');
  t.like(r, { aborted: true, signal: 'SIGKILL', exitCode: 137 });
  t.false(pidAlive(Number(fs.readFileSync(pidFile, 'utf8'))), 'the fallback killed the background process too');
  assertNothingLeft(t, c);

  proto.forceKill = () => Promise.reject(new CorralError('ERR_INJECTED_FALLBACK', 'injected fallback failure'));
  const pidFile2 = path.join(c.sb.stateDir, 'bg2.pid');
  const ac2 = new AbortController();
  const p2 = run('sh', sleeperScript(pidFile2), { ...c.opts, signal: ac2.signal });
  await waitFor(() => fs.existsSync(pidFile2) && fs.readFileSync(pidFile2, 'utf8').endsWith('\n'), { timeoutMs: 10_000, what: 'the second task to start its sleeper' });
  ac2.abort();
  const err = await t.throwsAsync(within(p2, 30_000, 'run() to reject'), { code: 'ERR_INJECTED_FALLBACK' });
  t.is((err?.cause as CorralError | undefined)?.code, 'ERR_INJECTED', 'the stop\'s own failure is the cause');
  // run()'s clean-up (destroyTask) still removed the task with everything in it.
  t.false(pidAlive(Number(fs.readFileSync(pidFile2, 'utf8'))));
  assertNothingLeft(t, c);
});

test.serial('rejects with a clear error when the task cannot start, and leaves nothing', async (t) => {
  const c = setup(t, 'run-reject');
  const bad: [string, () => Promise<unknown>][] = [
    ['driver.command', () => run('corral-no-such-command', [], c.opts)],
    ['user', () => run('true', [], { ...c.opts, user: 'corral-no-such-user' })],
    ['timeoutMs', () => run('true', [], { ...c.opts, timeoutMs: -1 })],
    ['maxBuffer', () => run('true', [], { ...c.opts, maxBuffer: 1.5 })],
    ['killSignal', () => run('true', [], { ...c.opts, killSignal: 'SIGNOPE' })],
    ['resources.memoryBytes', () => run('true', [], { ...c.opts, resources: { memoryBytes: -5 } })],
    ['cwd', () => run('true', [], { ...c.opts, cwd: 'relative' })],
    ['args', () => run('true', [1 as unknown as string], c.opts)],
  ];
  for (const [field, f] of bad) {
    const err = await t.throwsAsync(f(), { instanceOf: InvalidConfigError }, field);
    t.is((err as InvalidConfigError | undefined)?.field, field);
  }
  assertNothingLeft(t, c);
  const before = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length;
  await run('true', [], c.opts);
  await waitFor(() => process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').length <= before, { timeoutMs: 2000, what: 'no handle left by run()' });
  t.pass();
});
