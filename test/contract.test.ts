/**
 * The driver contract, once, against every driver: the same scenarios run on raw_exec and on docker
 * (exit codes, signals, stop escalation, exec, events, errors for unknown and exited tasks, recovery
 * by a second driver, shutdown). Where the drivers really differ, the driver says so through
 * capabilities() and the scenario reads it; nothing here branches on the driver's name.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { RawExecDriver } from '../src/drivers/raw_exec/index.js';
import { DockerDriver } from '../src/drivers/docker/index.js';
import { silentLogger } from '../src/util/logger.js';
import type { TaskConfig, TaskDriver, TaskEvent } from '../src/drivers/contract.js';
import {
  AbortError, DriverUnavailableError, ExecTimeoutError, InvalidConfigError, TaskExistsError, TaskNotFoundError, TaskNotRunningError,
  TaskRunningError,
} from '../src/errors.js';
import { isRoot, waitFor } from './helpers/cgroups.js';
import { TEST_IMAGE, ensureDockerUp, randomUUID } from './helpers/docker.js';
import { type Sandbox, bound, sandbox } from './helpers/sandbox.js';

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The contract plus what every driver built on the core offers (recoverAll, taskIds, its store). */
type Driver = RawExecDriver | DockerDriver;

interface Flavor {
  name: string;
  driver(sb: Sandbox, extra?: { signal?: AbortSignal }): Driver;
  /** A task running `sh -c script` in this driver's world. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the same scenario feeds either driver its own block
  task(sb: Sandbox, script: string): TaskConfig<any>;
}

const flavors: Flavor[] = [
  {
    name: 'raw_exec',
    driver: (sb, extra = {}) => new RawExecDriver({ stateDir: sb.stateDir, cgroupParent: sb.parent, ...extra }),
    task: (_sb, script) => ({
      id: `c-${randomUUID().slice(0, 8)}`, allocId: randomUUID(), name: 'contract', env: { PATH },
      driver: { command: 'sh', args: ['-c', script] },
    }),
  },
  {
    name: 'docker',
    driver: (sb, extra = {}) => new DockerDriver({
      stateDir: sb.stateDir, agentId: `agent-${sb.name}`, logger: silentLogger, callTimeoutMs: bound(60_000),
      gc: { image: false, danglingContainers: { enabled: false } }, ...extra,
    }),
    task: (sb, script) => ({
      id: `c-${randomUUID().slice(0, 8)}`, allocId: randomUUID(), name: 'contract', env: { PATH },
      driver: { image: TEST_IMAGE, command: 'sh', args: ['-c', script], networkMode: 'none', labels: sb.labels },
    }),
  },
];

test.before(async () => {
  await ensureDockerUp();
});

/** A driver for this test, shut down at teardown (before the sandbox removes what is left). */
function setup(t: ExecutionContext, f: Flavor, tag: string): { sb: Sandbox; d: Driver } {
  const sb = sandbox(t, `contract-${f.name}-${tag}`);
  const d = f.driver(sb);
  sb.defer(async () => {
    if (!d.closed) for (const id of d.taskIds()) await d.destroyTask(id, { force: true }).catch(() => {});
    await d.shutdown();
  });
  return { sb, d };
}

/**
 * A marker a task's script touches once its traps are set, and a wait for it seen through execTask
 * (the host's /tmp for raw_exec, the container's for docker): the stop signal then finds the trap in
 * place, however slow the machine, with no sleep.
 */
function marker(sb: Sandbox, what: string): string {
  const file = `/tmp/${sb.name}-${what}-ready`;
  sb.defer(() => fs.rmSync(file, { force: true }));
  return file;
}
async function ready(d: Driver, id: string, file: string): Promise<void> {
  await waitFor(async () => (await d.execTask(id, ['sh', '-c', `test -e ${file}`], { timeoutMs: bound(30_000) })).exitResult.exitCode === 0,
    { what: `${file} in task ${id}`, timeoutMs: 60_000, intervalMs: 100 });
}

function collect(d: TaskDriver): { events: TaskEvent[]; stop: () => Promise<void> } {
  const ac = new AbortController();
  const events: TaskEvent[] = [];
  const done = (async () => { for await (const e of d.taskEvents({ signal: ac.signal })) events.push(e); })();
  return { events, stop: async () => { ac.abort(); await done; } };
}

for (const f of flavors) {
  const run = f.name === 'raw_exec' && !isRoot ? test.skip : test;

  run(`${f.name} › exit codes, shared waits, inspect and the started/exited events`, async (t) => {
    const { sb, d } = setup(t, f, 'exit');
    const ev = collect(d);
    const ok = f.task(sb, 'exit 0');
    const bad = f.task(sb, 'sleep 0.5; exit 3');
    const h = await d.startTask(ok);
    t.is(h.driver, d.name);
    t.deepEqual(JSON.parse(JSON.stringify(h)), h, 'the handle is JSON-serialisable');
    await d.startTask(bad);
    await t.throwsAsync(d.startTask(bad), { instanceOf: TaskExistsError });
    t.deepEqual(await d.waitTask(ok.id), { exitCode: 0, signal: null, oomKilled: false });
    const ac = new AbortController();
    const aborted = d.waitTask(bad.id, { signal: ac.signal });
    ac.abort();
    await t.throwsAsync(aborted, { instanceOf: AbortError });
    const rs = await Promise.all([d.waitTask(bad.id), d.waitTask(bad.id)]);
    for (const r of rs) t.deepEqual(r, { exitCode: 3, signal: null, oomKilled: false });
    const st = d.inspectTask(bad.id);
    t.is(st.state, 'exited');
    t.truthy(st.completedAt);
    t.deepEqual(st.exitResult, rs[0]);
    await d.destroyTask(ok.id);
    await d.destroyTask(bad.id);
    t.throws(() => d.inspectTask(ok.id), { instanceOf: TaskNotFoundError });
    await ev.stop();
    for (const id of [ok.id, bad.id]) {
      const types = ev.events.filter((e) => e.taskId === id).map((e) => e.type);
      t.deepEqual(types.filter((x) => ['started', 'exited', 'destroyed'].includes(x)), ['started', 'exited', 'destroyed'], `${id}: ${types.join(',')}`);
    }
    const exited = ev.events.find((e) => e.taskId === bad.id && e.type === 'exited')!;
    t.like(exited.annotations, { exitCode: '3', signal: 'null', oomKilled: 'false' });
  });

  run(`${f.name} › signalTask reaches the task; bad names refused; an exited task refuses signal and exec alike`, async (t) => {
    const { sb, d } = setup(t, f, 'signal');
    const m = marker(sb, 'signal');
    const cfg = f.task(sb, `trap "exit 7" USR1; touch ${m}; while :; do sleep 0.05; done`);
    await d.startTask(cfg);
    await t.throwsAsync(d.signalTask(cfg.id, 'NOPE'), { instanceOf: InvalidConfigError, message: /signal "NOPE"/ });
    // One signal, once the trap is set (a SIGUSR1 before it would end the shell by the signal).
    await ready(d, cfg.id, m);
    await d.signalTask(cfg.id, 'sigusr1');
    const r = await d.waitTask(cfg.id);
    t.is(r.exitCode, 7);
    t.is(r.signal, null);
    const e1 = await t.throwsAsync(d.signalTask(cfg.id, 'TERM'), { instanceOf: TaskNotRunningError });
    t.is(e1?.code, 'ERR_TASK_NOT_RUNNING');
    await t.throwsAsync(d.execTask(cfg.id, ['true']), { instanceOf: TaskNotRunningError });
    await d.destroyTask(cfg.id);
  });

  run(`${f.name} › stopTask: a task ignoring the signal is killed after the timeout; one handling it exits by itself`, async (t) => {
    const { sb, d } = setup(t, f, 'stop');
    const ev = collect(d);
    const [m1, m2] = [marker(sb, 'stubborn'), marker(sb, 'polite')];
    const stubborn = f.task(sb, `trap "" TERM; touch ${m1}; while :; do sleep 0.05; done`);
    const polite = f.task(sb, `trap "exit 0" TERM; touch ${m2}; while :; do sleep 0.05; done`);
    await d.startTask(stubborn);
    await d.startTask(polite);
    await t.throwsAsync(d.stopTask(stubborn.id, { signal: 'SIGFOO' }), { instanceOf: InvalidConfigError });
    await t.throwsAsync(d.stopTask(stubborn.id, { timeoutMs: -1 }), { instanceOf: InvalidConfigError });
    // The shells' traps are set before the stop signal arrives.
    await ready(d, stubborn.id, m1);
    await ready(d, polite.id, m2);
    const t0 = Date.now();
    await d.stopTask(stubborn.id, { timeoutMs: 500 });
    t.true(Date.now() - t0 >= 450, 'waited for the timeout');
    t.like(await d.waitTask(stubborn.id), { exitCode: 137, signal: 9 });
    await d.stopTask(polite.id, { timeoutMs: bound(20_000) });
    t.like(await d.waitTask(polite.id), { exitCode: 0, signal: null });
    await d.stopTask(polite.id, { timeoutMs: 100 }); // a stop after the exit is a no-op
    await ev.stop();
    const kinds = (id: string) => ev.events.filter((e) => e.taskId === id).map((e) => e.type).filter((x) => x !== 'started').sort();
    t.deepEqual(kinds(stubborn.id), ['exited', 'killed', 'killing']);
    t.deepEqual(kinds(polite.id), ['exited', 'killing']);
    await t.throwsAsync(d.destroyTask('nope'), { instanceOf: TaskNotFoundError });
    await d.destroyTask(stubborn.id);
    await d.destroyTask(polite.id);
  });

  run(`${f.name} › destroy: running without force → TaskRunningError; unknown ids → TaskNotFoundError everywhere`, async (t) => {
    const { sb, d } = setup(t, f, 'destroy');
    const cfg = f.task(sb, 'sleep 300');
    await d.startTask(cfg);
    await t.throwsAsync(d.destroyTask(cfg.id), { instanceOf: TaskRunningError });
    await d.destroyTask(cfg.id, { force: true });
    t.throws(() => d.inspectTask(cfg.id), { instanceOf: TaskNotFoundError });
    await t.throwsAsync(d.waitTask('nope'), { instanceOf: TaskNotFoundError });
    await t.throwsAsync(d.stopTask('nope'), { instanceOf: TaskNotFoundError });
    await t.throwsAsync(d.signalTask('nope', 'TERM'), { instanceOf: TaskNotFoundError });
    await t.throwsAsync(d.execTask('nope', ['true']), { instanceOf: TaskNotFoundError });
    t.throws(() => d.taskStats('nope', { intervalMs: 100 }), { instanceOf: TaskNotFoundError });
  });

  run(`${f.name} › execTask: output and exit code; a timeout kills it (ExecTimeoutError); bad commands refused`, async (t) => {
    const { sb, d } = setup(t, f, 'exec');
    const cfg = f.task(sb, 'sleep 300');
    await d.startTask(cfg);
    const r = await d.execTask(cfg.id, ['sh', '-c', 'echo out; echo err >&2; exit 4']);
    t.is(r.stdout, 'out\n');
    t.is(r.stderr, 'err\n');
    t.is(r.exitResult.exitCode, 4);
    await t.throwsAsync(d.execTask(cfg.id, ['sleep', '100'], { timeoutMs: 500 }), { instanceOf: ExecTimeoutError });
    await t.throwsAsync(d.execTask(cfg.id, []), { instanceOf: InvalidConfigError, message: /cmd/ });
    await t.throwsAsync(d.execTask(cfg.id, ['true'], { timeoutMs: 0 }), { instanceOf: InvalidConfigError, message: /timeoutMs/ });
    await d.destroyTask(cfg.id, { force: true });
  });

  run(`${f.name} › taskStats: samples while the task runs, ends on abort`, async (t) => {
    const { sb, d } = setup(t, f, 'stats');
    const cfg = f.task(sb, 'while :; do :; done');
    await d.startTask(cfg);
    t.throws(() => d.taskStats(cfg.id, { intervalMs: 0 }), { instanceOf: InvalidConfigError });
    const ac = new AbortController();
    let n = 0;
    for await (const s of d.taskStats(cfg.id, { intervalMs: 200, signal: ac.signal })) {
      t.is(s.taskId, cfg.id);
      t.true(s.cpu.totalNs >= 0 && s.memory.usageBytes >= 0);
      if (++n >= 2) ac.abort();
    }
    t.is(n, 2);
    await d.destroyTask(cfg.id, { force: true });
  });

  run(`${f.name} › recovery: a second driver on the state dir finds the task, stops it and reports how it ended (as its capabilities say)`, async (t) => {
    const { sb, d } = setup(t, f, 'recover');
    const m = marker(sb, 'recover');
    const cfg = f.task(sb, `trap "exit 5" TERM; touch ${m}; while :; do sleep 0.05; done`);
    await d.startTask(cfg);
    await ready(d, cfg.id, m);
    await d.shutdown();
    const d2 = f.driver(sb);
    sb.defer(() => d2.shutdown());
    const res = await d2.recoverAll();
    t.deepEqual(res.recovered, [cfg.id]);
    t.deepEqual(res.failed, []);
    t.is(d2.inspectTask(cfg.id).state, 'running');
    await d2.recoverTask(d2.store.get(cfg.id)!); // a task already held: nothing happens
    t.is(d2.inspectTask(cfg.id).state, 'running');
    await d2.stopTask(cfg.id, { timeoutMs: bound(20_000) });
    const r = await d2.waitTask(cfg.id);
    if (d2.capabilities().exitStatusAfterRecovery) {
      t.like(r, { exitCode: 5, signal: null });
    } else {
      t.is(r.exitCode, null, 'never a made-up exit code');
      t.truthy(r.err);
    }
    await d2.destroyTask(cfg.id);
  });

  run(`${f.name} › shutdown ends every loop, stream and timer; running tasks keep running`, async (t) => {
    const { sb, d } = setup(t, f, 'shutdown');
    const cfg = f.task(sb, 'sleep 300');
    await d.startTask(cfg);
    let fingerprints = 0;
    const fp = (async () => { for await (const _ of d.fingerprint({ intervalMs: 100_000 })) fingerprints++; return fingerprints; })();
    const st = (async () => { let n = 0; for await (const _ of d.taskStats(cfg.id, { intervalMs: 100_000 })) n++; return n; })();
    const ev = (async () => { let n = 0; for await (const _ of d.taskEvents()) n++; return n; })();
    const wait = d.waitTask(cfg.id);
    const m = marker(sb, 'exec');
    const exec = d.execTask(cfg.id, ['sh', '-c', `touch ${m}; sleep 100`]);
    // Shut down with all of them in flight: the first fingerprint sent, the exec running.
    await waitFor(() => fingerprints >= 1, { what: 'the first fingerprint', timeoutMs: 30_000 });
    await ready(d, cfg.id, m);
    await d.shutdown();
    await t.throwsAsync(wait, { instanceOf: AbortError });
    await t.throwsAsync(exec, { instanceOf: AbortError });
    t.true((await fp) >= 1);
    t.true((await st) >= 0);
    t.true((await ev) >= 0);
    await t.throwsAsync(d.startTask(f.task(sb, 'true')), { instanceOf: DriverUnavailableError });
    t.throws(() => d.inspectTask(cfg.id), { instanceOf: DriverUnavailableError });
    // The task runs on: a new driver finds it running, then removes it.
    const d2 = f.driver(sb);
    sb.defer(() => d2.shutdown());
    await d2.recoverAll();
    t.is(d2.inspectTask(cfg.id).state, 'running');
    await d2.destroyTask(cfg.id, { force: true });
    // The constructor signal is the same as shutdown().
    const ac = new AbortController();
    const d3 = f.driver(sb, { signal: ac.signal });
    ac.abort();
    await waitFor(() => d3.closed, { what: 'the driver shut down by its signal' });
    await t.throwsAsync(d3.startTask(f.task(sb, 'true')), { instanceOf: DriverUnavailableError });
  });
}
