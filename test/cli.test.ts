/**
 * The `corral` CLI end to end (from the TypeScript sources through tsx), as root on the real kernel.
 * Each test runs its `corral` processes under a sandbox of its own (cgroup parent and state dir via
 * --cgroup-parent/--state-dir), torn down (children and groups killed) even when the test fails.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { main } from '../src/cli/main.js';
import { groupDirsUnder, hostLayout, isRoot, waitFor } from './helpers/cgroups.js';
import { type Sandbox, sandbox } from './helpers/sandbox.js';
import { pidsWithMarker } from './helpers/cli.js';

const ENTRY = path.join(__dirname, '..', 'src', 'cli', 'main-entry.ts');
const version = isRoot ? hostLayout().version : 'v1';
// Serial: the signal tests time what a corral process does; the machine has two cores.
const t = isRoot ? test.serial : test.skip;

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** A `corral` process (SIGKILLed at the sandbox's teardown if still running). */
function corral(sb: Sandbox, args: string[], opts: { onStdout?: (s: string, child: ChildProcess) => void; onStderr?: (s: string, child: ChildProcess) => void } = {}): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  sb.defer(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d; opts.onStdout?.(stdout, child); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d; opts.onStderr?.(stderr, child); });
  const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

/** The test's sandbox and what its tests use: `corral` runs, `run` arguments under its parent and state dir. */
interface Cli {
  sb: Sandbox;
  run(args: string[]): Promise<Run>;
  corral(args: string[], opts?: Parameters<typeof corral>[2]): ReturnType<typeof corral>;
  runArgs(...extra: string[]): string[];
  taskFiles(): string[];
  /** A string to put in a task's process names: unique, and one of the suite's names (check-leftovers sees it). */
  marker(what: string): string;
}

function cli(tt: ExecutionContext): Cli {
  const sb = sandbox(tt, 'cli');
  return {
    sb,
    run: (args) => corral(sb, args).done,
    corral: (args, opts) => corral(sb, args, opts),
    runArgs: (...extra) => ['run', ...sb.cliArgs, ...extra],
    taskFiles() {
      try {
        return fs.readdirSync(path.join(sb.stateDir, 'tasks'));
      } catch {
        return [];
      }
    },
    marker: (what) => `${sb.name}-${what}-${randomBytes(3).toString('hex')}`,
  };
}

function nothingLeft(tt: { deepEqual: (a: unknown, b: unknown, m?: string) => void }, c: Cli, marker?: string): void {
  tt.deepEqual(groupDirsUnder(c.sb.parent), [], 'no task cgroup left');
  tt.deepEqual(c.taskFiles(), [], 'no state file left');
  if (marker) tt.deepEqual(pidsWithMarker(marker), [], 'no process left');
}

t('run: output on the terminal, exit code passed through, nothing left', async (tt) => {
  const c = cli(tt);
  const r = await c.run(c.runArgs('--memory', '64M', '--pids-max', '20', '--cpu-shares', '512', '--env', 'GREETING=hi', '--', 'sh', '-c', 'echo $GREETING; echo warn >&2; exit 3'));
  tt.is(r.code, 3, r.stderr);
  tt.is(r.stdout, 'hi\n');
  tt.is(r.stderr, 'warn\n');
  nothingLeft(tt, c);
});

t('run: a task ended by signal n exits 128+n; --json prints the ExitResult and peak usage alone on stdout', async (tt) => {
  const c = cli(tt);
  const r = await c.run(c.runArgs('--json', '--', 'sh', '-c', 'echo to-stderr; kill -USR1 $$'));
  tt.is(r.code, 128 + 10, r.stderr);
  const j = JSON.parse(r.stdout) as { exitResult: { exitCode: number; signal: number; oomKilled: boolean }; peak: { memoryBytes: number; cpuTotalNs: number } };
  tt.is(j.exitResult.signal, 10);
  tt.is(j.exitResult.oomKilled, false);
  tt.is(typeof j.peak.memoryBytes, 'number');
  tt.true(r.stderr.includes('to-stderr'));
  nothingLeft(tt, c);
});

t('run: --cores pins the task, --cwd and --user apply', async (tt) => {
  const c = cli(tt);
  const r = await c.run(c.runArgs('--cores', '0', '--cwd', '/tmp', '--user', 'nobody', '--', 'sh', '-c', 'grep Cpus_allowed_list /proc/self/status; pwd; id -u'));
  tt.is(r.code, 0, r.stderr);
  tt.regex(r.stdout, /Cpus_allowed_list:\s+0\n\/tmp\n65534\n/);
  nothingLeft(tt, c);
});

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void { this.text += chunk; cb(); }
}

t('usage errors: one line on stderr and exit 125 (127 for a missing command); --help everywhere exits 0', async (tt) => {
  const c = cli(tt);
  const cases: string[][] = [
    c.runArgs('--memory', '12X', '--', 'true'),
    c.runArgs('--kill-timeout', 'soon', '--', 'true'),
    c.runArgs('--kill-signal', 'SIGNOPE', '--', 'true'),
    c.runArgs('--alloc-id', 'abc', '--', 'true'),
    c.runArgs('--name', 'a/b', '--', 'true'),
    c.runArgs('--env', 'NOEQUALS', '--', 'true'),
    c.runArgs('--pids-max', 'many', '--', 'true'),
    c.runArgs('--driver', 'lxc', '--', 'true'),
    c.runArgs('--bogus'),
    c.runArgs(),
    c.runArgs('--', '/nonexistent/cmd'),
    c.runArgs('--cwd', 'relative', '--', 'true'),
    c.runArgs('--user', 'no-such-user-xyz', '--', 'true'),
    c.runArgs('--cores', '99999', '--', 'true'),
    ['nope'],
    ['ps', '--bogus'],
    ['fingerprint', '--driver', 'nope'],
  ];
  for (const argv of cases) {
    const io = { stdout: new Sink(), stderr: new Sink(), inProcess: true };
    const code = await main(argv, io);
    tt.is(code, argv.includes('/nonexistent/cmd') ? 127 : 125, `${argv.join(' ')}: ${io.stderr.text}`);
    tt.is(io.stderr.text.trim().split('\n').length, 1, io.stderr.text);
    tt.regex(io.stderr.text, /^corral: /);
    if (argv.includes('12X')) tt.regex(io.stderr.text, /--memory.*"12X"/);
    if (argv.includes('/nonexistent/cmd')) tt.regex(io.stderr.text, /"\/nonexistent\/cmd"/);
  }
  for (const args of [['--help'], ['run', '--help'], ['ps', '--help'], ['fingerprint', '--help'], ['help', 'run']]) {
    const io = { stdout: new Sink(), stderr: new Sink(), inProcess: true };
    tt.is(await main(args, io), 0);
    tt.regex(io.stdout.text, /Usage: corral/);
  }
  // reconcile is routed to the docker side's command.
  const rec = await c.run(['reconcile', '--help']);
  tt.is(rec.code, 0, rec.stderr);
  tt.regex(rec.stdout, /Usage: corral reconcile/);
  // And through a real process: the exit status is 125 and stderr one line.
  const r = await c.run(c.runArgs('--memory', 'lots', '--', 'true'));
  tt.is(r.code, 125);
  tt.is(r.stderr.trim().split('\n').length, 1);
  nothingLeft(tt, c);
});

t('Ctrl-C: SIGINT to corral run sends the kill signal to the task, corral exits with the task result, nothing remains', async (tt) => {
  const c = cli(tt);
  const marker = c.marker('int');
  let sent = false;
  const { done } = c.corral(c.runArgs('--kill-signal', 'USR2', '--kill-timeout', '10s', '--',
    'bash', '-c', `trap 'echo got-usr2; exit 42' USR2; (exec -a ${marker} sleep 1000) & echo ready; while :; do sleep 0.05; done`), {
    onStdout: (s, child) => { if (!sent && s.includes('ready')) { sent = true; child.kill('SIGINT'); } },
  });
  const r = await done;
  tt.true(sent);
  tt.is(r.code, 42, r.stderr);
  tt.true(r.stdout.includes('got-usr2'));
  nothingLeft(tt, c, marker);
});

t('SIGTERM to corral run with a task ignoring the kill signal: group kill after --kill-timeout, exit 137, no setsid daemon left', async (tt) => {
  const c = cli(tt);
  const marker = c.marker('term');
  let sent = 0;
  const { done } = c.corral(c.runArgs('--kill-timeout', '300ms', '--',
    'bash', '-c', `trap '' TERM INT; setsid bash -c 'exec -a ${marker} sleep 1000' & echo ready; while :; do sleep 0.05; done`), {
    onStdout: (s, child) => { if (!sent && s.includes('ready')) { sent = Date.now(); child.kill('SIGTERM'); } },
  });
  const r = await done;
  tt.true(sent > 0);
  tt.true(Date.now() - sent >= 300);
  tt.is(r.code, 137, r.stderr);
  nothingLeft(tt, c, marker);
});

t('a second Ctrl-C kills at once instead of waiting for the whole --kill-timeout', async (tt) => {
  const c = cli(tt);
  const marker = c.marker('twice');
  let first = 0;
  let second = false;
  const { done } = c.corral(c.runArgs('--kill-timeout', '60s', '--', 'bash', '-c', `trap '' TERM INT; (exec -a ${marker} sleep 1000) & echo ready; while :; do sleep 0.05; done`), {
    onStdout: (s, child) => { if (!first && s.includes('ready')) { first = Date.now(); child.kill('SIGINT'); } },
    onStderr: (s, child) => { if (!second && s.includes('stopping the task')) { second = true; child.kill('SIGINT'); } },
  });
  const r = await done;
  tt.true(second);
  tt.is(r.code, 137, r.stderr);
  tt.true(Date.now() - first < 30000, 'did not wait for the 60 s timeout');
  tt.regex(r.stderr, /killing the task now/);
  nothingLeft(tt, c, marker);
});

t('ps lists a running task and its state; after corral run returns it is gone', async (tt) => {
  const c = cli(tt);
  const marker = c.marker('ps');
  let ready = false;
  const { child, done } = c.corral(c.runArgs('--name', 'pstask', '--', 'bash', '-c', `echo ready; exec -a ${marker} sleep 1000`), { onStdout: (s) => { ready ||= s.includes('ready'); } });
  await waitFor(() => ready, { timeoutMs: 15000, what: 'task started' });
  const ps = await c.run(['ps', '--json', '--state-dir', c.sb.stateDir]);
  tt.is(ps.code, 0, ps.stderr);
  const rows = JSON.parse(ps.stdout) as { name: string; state: string; driver: string }[];
  tt.true(rows.some((r) => r.name === 'pstask' && r.state === 'running' && r.driver === 'raw_exec'), ps.stdout);
  const table = await c.run(['ps', '--state-dir', c.sb.stateDir]);
  tt.regex(table.stdout, /ID\s+NAME\s+DRIVER\s+STATE[\s\S]*pstask\s+raw_exec\s+running/);
  child.kill('SIGTERM');
  const r = await done;
  tt.is(r.code, 128 + 15);
  const after = await c.run(['ps', '--json', '--state-dir', c.sb.stateDir]);
  tt.deepEqual((JSON.parse(after.stdout) as { name: string }[]).filter((x) => x.name === 'pstask'), []);
  nothingLeft(tt, c, marker);
});

t('fingerprint --json and --no-cgroups; run --no-cgroups', async (tt) => {
  const c = cli(tt);
  const f = await c.run(['fingerprint', '--json']);
  tt.is(f.code, 0, f.stderr);
  const j = JSON.parse(f.stdout) as { health: string; attributes: Record<string, unknown> };
  tt.is(j.health, 'healthy');
  tt.is(j.attributes['driver.raw_exec'], true);
  tt.is(j.attributes['unique.cgroups.version'], version);
  const off = JSON.parse((await c.run(['fingerprint', '--json', '--no-cgroups'])).stdout) as { attributes: Record<string, unknown> };
  tt.is(off.attributes['cgroups.mode'], 'off');
  const r = await c.run(c.runArgs('--no-cgroups', '--', 'sh', '-c', 'echo nocg; exit 4'));
  tt.is(r.code, 4, r.stderr);
  tt.is(r.stdout, 'nocg\n');
  const bad = await c.run(c.runArgs('--no-cgroups', '--memory', '64M', '--', 'true'));
  tt.is(bad.code, 125);
  tt.regex(bad.stderr, /--memory "64M".*noCgroups/);
  nothingLeft(tt, c);
});

// The docker seam: `corral run --driver docker --image ...` when a Docker daemon and the local test image are there.
const IMAGE = process.env.CORRAL_TEST_IMAGE ?? 'corral-test/busybox:latest';
function dockerReady(): boolean {
  try {
    execFileSync('docker', ['image', 'inspect', IMAGE], { stdio: 'ignore', timeout: 20000 });
    return true;
  } catch {
    return false;
  }
}
(isRoot && dockerReady() ? test.serial : test.skip)('run --driver docker: output streamed, exit code passed through, container removed', async (tt) => {
  const c = cli(tt);
  const allocId = randomUUID();
  const r = await c.run(['run', '--driver', 'docker', '--image', IMAGE, '--state-dir', c.sb.stateDir, '--alloc-id', allocId, '--', 'sh', '-c', 'echo from-docker; exit 5']);
  tt.is(r.code, 5, r.stderr);
  tt.is(r.stdout, 'from-docker\n');
  tt.deepEqual(c.taskFiles(), []);
  const left = execFileSync('docker', ['ps', '-aq', '--filter', `label=io.corral.alloc_id=${allocId}`], { encoding: 'utf8', timeout: 20000 }).trim();
  tt.is(left, '', 'no container left');
});
