/**
 * The commands that manage what runs, end to end: stop/kill/stats on a task of ANOTHER corral run
 * (through the shared state dir), gc after a SIGKILLed corral run, ps columns, --version, an honest
 * fingerprint (unhealthy as a user who cannot create groups, real agent id, nothing written), and
 * flags that do not apply to the docker driver refused.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { groupDirsUnder, isRoot, waitFor } from './helpers/cgroups.js';
import { type Sandbox, bound, sandbox } from './helpers/sandbox.js';
import { CORRAL, corral, pidsWithMarker, runCorral, taskFiles } from './helpers/cli.js';
import { until } from './helpers/loop.js';
import { TaskStore } from '../src/store/task-store.js';

const t = isRoot ? test.serial : test.skip;

function nothingLeft(tt: { deepEqual: (a: unknown, b: unknown, m?: string) => void }, sb: Sandbox, marker?: string): void {
  tt.deepEqual(groupDirsUnder(sb.parent), [], 'no task cgroup left');
  tt.deepEqual(taskFiles(sb), [], 'no task record left');
  if (marker) tt.deepEqual(pidsWithMarker(marker), [], 'no process left');
}

const stateArgs = (sb: Sandbox) => ['--state-dir', sb.stateDir];

/** A `corral run` of a task that ignores SIGTERM and reports SIGUSR2, as the task other commands act on. */
async function worker(sb: Sandbox, marker: string) {
  const owner = corral(sb, ['run', ...sb.cliArgs, '--name', 'worker', 'bash', '-c',
    `trap 'echo got-usr2' USR2; trap '' TERM; (exec -a ${marker} sleep 1000) & echo ready; while :; do sleep 0.05; done`]);
  await owner.seen('ready');
  await recordedRunning(sb, 'worker');
  return owner;
}

/**
 * A task prints before its corral run has recorded it as running (the spawn returns first): the
 * other commands are meant to act on a running task, not on one still starting.
 */
function recordedRunning(sb: Sandbox, name: string): Promise<true> {
  return until(`the record of ${name} to say running`, () => new TaskStore(sb.stateDir).records().records.some((r) => r.handle.taskName === name && r.state === 'running'));
}

t('ps shows every column of a task of another corral run; kill signals it, and it stays its owner\'s', async (tt) => {
  const sb = sandbox(tt, 'cli-ps-kill');
  const marker = `corral-cli-ps-kill-${randomBytes(4).toString('hex')}`;
  const owner = await worker(sb, marker);
  // ps: every column, the command, and a short ID that the other commands accept.
  const [ps, psJson] = await Promise.all([runCorral(sb, ['ps', ...stateArgs(sb)]), runCorral(sb, ['ps', '--json', ...stateArgs(sb)])]);
  tt.is(ps.code, 0, ps.stderr);
  tt.regex(ps.stdout, /^ID\s+NAME\s+DRIVER\s+STATE\s+PID\s+CPU\s+MEMORY\s+AGE\s+COMMAND\n/);
  const row = ps.stdout.split('\n')[1]!;
  tt.regex(row, /worker\s+raw_exec\s+running\s+\d+\s+\d+\.\d%\s+\d[\d.]* \w*B\s+\S+\s+bash -c/);
  const shortId = row.split(/\s+/)[0]!;
  const json = JSON.parse(psJson.stdout) as { taskId: string; memoryBytes: number; state: string }[];
  tt.is(json.length, 1);
  tt.true(json[0]!.taskId.startsWith(shortId));
  tt.true(json[0]!.memoryBytes > 0);
  // kill: a signal to the task's main process.
  const k = await runCorral(sb, ['kill', '--signal', 'USR2', ...stateArgs(sb), shortId]);
  tt.is(k.code, 0, k.stderr);
  await owner.seen('got-usr2');
  // Attaching to act on it did not take the task from its owner: gc still sees a live owner.
  const gc = JSON.parse((await runCorral(sb, ['gc', '--dry-run', '--json', ...stateArgs(sb)])).stdout) as { wouldDestroy: string[]; skipped: string[] };
  tt.deepEqual(gc.wouldDestroy, []);
  tt.is(gc.skipped.length, 1);
  owner.child.kill('SIGINT');
  owner.child.kill('SIGINT'); // the task ignores SIGTERM: the second Ctrl-C kills it at once
  tt.is((await owner.done).code, 137);
  nothingLeft(tt, sb, marker);
});

t('stats and stop act on a task of another corral run; unknown ids are refused', async (tt) => {
  const sb = sandbox(tt, 'cli-stats-stop');
  const marker = `corral-cli-stats-stop-${randomBytes(4).toString('hex')}`;
  const owner = await worker(sb, marker);
  // stats: one sample as JSON, and the line form; the task by its name.
  const [s, line, none] = await Promise.all([
    runCorral(sb, ['stats', '--once', '--json', '--interval', '200ms', ...stateArgs(sb), 'worker']),
    runCorral(sb, ['stats', '--once', '--interval', '200ms', ...stateArgs(sb), 'worker']),
    runCorral(sb, ['stop', ...stateArgs(sb), 'no-such-task']),
  ]);
  tt.is(s.code, 0, s.stderr);
  const sample = JSON.parse(s.stdout.trim()) as { taskId: string; memory: { usageBytes: number }; cpu: { percent: number } };
  tt.regex(sample.taskId, /-worker$/);
  tt.true(sample.memory.usageBytes > 0);
  tt.is(line.code, 0, line.stderr);
  tt.regex(line.stdout, /CPU\s+\d+\.\d%\s+MEM\s+\S+ \w*B/, `stderr: ${line.stderr}`);
  tt.is(none.code, 125);
  tt.regex(none.stderr, /no task "no-such-task"/);
  // stop: the task ignores SIGTERM, so the group is killed after the timeout; its owner then cleans up.
  const st = await runCorral(sb, ['stop', '--timeout', '300ms', ...stateArgs(sb), sample.taskId.slice(0, 8)]);
  tt.is(st.code, 0, st.stderr);
  const r = await owner.done;
  tt.is(r.code, 137, r.stderr);
  nothingLeft(tt, sb, marker);
});

t('a SIGKILLed corral run leaves an orphaned task; corral gc destroys it and leaves nothing', async (tt) => {
  const sb = sandbox(tt, 'cli-gc');
  const marker = `corral-cli-gc-${randomBytes(4).toString('hex')}`;
  const owner = corral(sb, ['run', ...sb.cliArgs, '--name', 'orphan', 'bash', '-c', `(exec -a ${marker} sleep 1000) & echo ready; exec -a ${marker} sleep 1000`]);
  await owner.seen('ready');
  await recordedRunning(sb, 'orphan');
  // corral's own command line holds the marker too.
  await waitFor(() => pidsWithMarker(marker).filter((p) => p !== owner.child.pid).length === 2, { timeoutMs: bound(10_000), what: 'both task processes' });
  owner.child.kill('SIGKILL');
  await owner.exited;
  tt.is(pidsWithMarker(marker).length, 2, 'the task outlives its corral run');
  const ps = await runCorral(sb, ['ps', ...stateArgs(sb)]);
  tt.regex(ps.stdout, /orphan\s+raw_exec\s+running \(orphaned/);
  const dry = await runCorral(sb, ['gc', '--dry-run', ...stateArgs(sb)]);
  tt.is(dry.code, 0, dry.stderr);
  tt.regex(dry.stdout, /would destroy .*-orphan/);
  tt.is(pidsWithMarker(marker).length, 2, 'dry run touches nothing');
  const gc = await runCorral(sb, ['gc', ...stateArgs(sb)]);
  tt.is(gc.code, 0, gc.stderr);
  tt.regex(gc.stdout, /destroyed .*-orphan/);
  await owner.done; // the task held corral's stdout pipe until gc killed it
  nothingLeft(tt, sb, marker);
});

t('gc leaves alone a task whose corral run is alive', async (tt) => {
  const sb = sandbox(tt, 'cli-gc-live');
  const owner = corral(sb, ['run', ...sb.cliArgs, 'sh', '-c', 'echo ready; sleep 1000']);
  await owner.seen('ready');
  const gc = await runCorral(sb, ['gc', '--json', ...stateArgs(sb)]);
  tt.is(gc.code, 0, gc.stderr);
  const out = JSON.parse(gc.stdout) as { destroyed: unknown[]; skipped: string[] };
  tt.deepEqual(out.destroyed, []);
  tt.is(out.skipped.length, 1);
  tt.is(taskFiles(sb).length, 1);
  owner.child.kill('SIGTERM');
  tt.is((await owner.done).code, 143);
  nothingLeft(tt, sb);
});

t('fingerprint: unhealthy with the reason for a user who cannot create groups; healthy line not doubled', async (tt) => {
  const sb = sandbox(tt, 'cli-fp');
  const asNobody = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    try {
      const stdout = execFileSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', ...CORRAL, 'fingerprint', '--json', '--cgroup-parent', sb.parent],
        { encoding: 'utf8', timeout: bound(120_000), env: { ...process.env, HOME: os.tmpdir() } });
      resolve({ code: 0, stdout, stderr: '' });
    } catch (err) {
      const e = err as { status: number | null; stdout: string; stderr: string };
      resolve({ code: e.status, stdout: String(e.stdout), stderr: String(e.stderr) });
    }
  });
  tt.is(asNobody.code, 1, asNobody.stderr);
  const fp = JSON.parse(asNobody.stdout) as { health: string; healthDescription: string };
  tt.is(fp.health, 'unhealthy');
  tt.regex(fp.healthDescription, /uid 65534 cannot create cgroups under .*EACCES/);
  const root = await runCorral(sb, ['fingerprint', '--cgroup-parent', sb.parent]);
  tt.is(root.code, 0, root.stderr);
  tt.regex(root.stdout, /^driver: raw_exec\nhealth: healthy\n/);
});

t('fingerprint --driver docker: the state dir\'s real agent id, and no file written', async (tt) => {
  const sb = sandbox(tt, 'cli-fp-docker');
  const empty = path.join(sb.stateDir, 'not-yet');
  const none = await runCorral(sb, ['fingerprint', '--driver', 'docker', '--json', '--state-dir', empty]);
  tt.false(fs.existsSync(empty), 'nothing created');
  if (none.code !== 0) return tt.pass(`docker unavailable here: ${none.stderr}`); // health aside, the no-write check held
  tt.regex((JSON.parse(none.stdout) as { attributes: Record<string, string> }).attributes['driver.docker.agent_id']!, /none yet/);
  fs.writeFileSync(path.join(sb.stateDir, 'agent-id'), 'agent-under-test-1\n');
  const real = await runCorral(sb, ['fingerprint', '--driver', 'docker', '--json', '--state-dir', sb.stateDir]);
  tt.is((JSON.parse(real.stdout) as { attributes: Record<string, string> }).attributes['driver.docker.agent_id'], 'agent-under-test-1');
  tt.deepEqual(fs.readdirSync(sb.stateDir), ['agent-id', 'not-yet'].filter((f) => fs.existsSync(path.join(sb.stateDir, f))));
});

t('docker: flags that do not apply are refused, not ignored; --version', async (tt) => {
  const sb = sandbox(tt, 'cli-docker-flags');
  for (const flag of [['--cwd', '/tmp'], ['--inherit-env'], ['--no-cgroups'], ['--tty']]) {
    const r = await runCorral(sb, ['run', '--driver', 'docker', '--image', 'busybox', ...stateArgs(sb), ...flag, 'true']);
    tt.is(r.code, 125, r.stderr);
    tt.regex(r.stderr, new RegExp(`${flag[0]} does not apply to --driver docker`));
    if (flag[0] === '--tty') tt.regex(r.stderr, /gives a container no terminal/);
  }
  const v = await runCorral(sb, ['--version']);
  tt.is(v.code, 0);
  tt.regex(v.stdout, /^corral \d+\.\d+\.\d+/);
});
