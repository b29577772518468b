/**
 * DanglingContainerReconciler against the real dockerd: Nomad's reconcile_dangling scenarios.
 * Every pass lists through a client that asks Docker for this file's containers only
 * (label filter), so that a pass with a small grace never touches another test's containers.
 */
import test, { type ExecutionContext } from 'ava';
import type Docker from 'dockerode';
import {
  DanglingContainerReconciler, LABEL_AGENT_ID, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME,
  type ReconcilerClock, type ReconcilerDockerClient,
} from '../src/drivers/docker/reconcile_dangling.js';
import type { Logger } from '../src/util/logger.js';
import {
  FILE_LABEL, createRawContainer, docker, ensureDockerUp, eventually, exists, fileId, randomUUID, removeContainersOf,
} from './helpers/docker.js';
import { bound, sandbox } from './helpers/sandbox.js';

/**
 * The label value of the running test's containers: each serial test (rtest) gets its own sandbox,
 * whose teardown removes them even when the test fails, so one test's leftovers never show up in
 * another test's passes.
 */
let FID = fileId('reconciler');
const AGENT = `agent-reconciler-${randomUUID()}`;
const OTHER_AGENT = `agent-other-${randomUUID()}`;

test.before(async () => {
  await ensureDockerUp();
});

test.after.always(async () => {
  await removeContainersOf(FID);
});

function rtest(title: string, fn: (t: ExecutionContext) => Promise<void>): void {
  test.serial(title, async (t) => {
    FID = sandbox(t, 'reconciler').name;
    await fn(t);
  });
}

/** The real client, scoped to this file's containers; counts calls. */
function scopedClient(): ReconcilerDockerClient & { calls: { list: number; remove: number } } {
  const calls = { list: 0, remove: 0 };
  return {
    calls,
    listContainers(opts) {
      calls.list++;
      return docker.listContainers({ ...opts, filters: { label: [...(opts.filters?.label ?? []), `${FILE_LABEL}=${FID}`] } });
    },
    getContainer(id) {
      const c = docker.getContainer(id);
      return {
        remove(opts) {
          calls.remove++;
          return c.remove(opts);
        },
      };
    },
  };
}

interface LogLine { level: string; msg: string; fields?: Record<string, unknown> }
function memLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => { lines.push({ level, msg, fields }); };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

function ourLabels(extra: Record<string, string> = {}): Record<string, string> {
  return { [LABEL_ALLOC_ID]: randomUUID(), [LABEL_TASK_NAME]: 'web', [LABEL_TASK_ID]: `t-${randomUUID()}`, [LABEL_AGENT_ID]: AGENT, ...extra };
}

function reconciler(o: Partial<ConstructorParameters<typeof DanglingContainerReconciler>[0]> = {}) {
  const client = scopedClient();
  const logger = memLogger();
  const r = new DanglingContainerReconciler({
    docker: client, agentId: AGENT, creationGraceMs: 0, periodMs: 1000, trackedContainers: () => [], logger, ...o,
  });
  return { r, client, logger };
}

rtest('untracked container of ours older than the grace is removed; tracked one is kept', async (t) => {
  const dangling = await createRawContainer({ fileId: FID, labels: ourLabels() });
  const tracked = await createRawContainer({ fileId: FID, labels: ourLabels() });
  const { r, client } = reconciler({ trackedContainers: () => [tracked.id] });
  const res = await r.runOnce();
  t.true(res.ran);
  t.deepEqual(res.removed.map((d) => d.id), [dangling.id]);
  t.is(res.removed[0]!.matchedBy, 'label');
  t.false(await exists(dangling.id));
  t.true(await exists(tracked.id));
  // One list call plus one call per removal.
  t.deepEqual(client.calls, { list: 1, remove: 1 });
  await tracked.remove({ force: true });
});

rtest('several dangling containers: removed concurrently, still one list call plus one call per removal', async (t) => {
  const cs = await Promise.all(Array.from({ length: 5 }, () => createRawContainer({ fileId: FID, labels: ourLabels() })));
  const { r, client } = reconciler({ removeConcurrency: 3 });
  const res = await r.runOnce();
  t.deepEqual(res.removed.map((d) => d.id).sort(), cs.map((c) => c.id).sort());
  t.deepEqual(res.failed, []);
  t.deepEqual(client.calls, { list: 1, remove: 5 });
  for (const c of cs) t.false(await exists(c.id));
  t.throws(() => reconciler({ removeConcurrency: 0 }), { code: 'ERR_INVALID_CONFIG', message: /removeConcurrency/ });
});

rtest('containers that are not ours are kept: other agent id, no corral label', async (t) => {
  const other = await createRawContainer({ fileId: FID, labels: ourLabels({ [LABEL_AGENT_ID]: OTHER_AGENT }) });
  const plain = await createRawContainer({ fileId: FID, name: `plain-${randomUUID()}` });
  // Mounts of a corral task but no uuid name suffix: not ours either.
  const halfHeuristic = await createRawContainer({ fileId: FID, name: `web-notauuid`, volumes: ['/alloc', '/local', '/secrets'] });
  const { r, client } = reconciler();
  const res = await r.runOnce();
  t.true(res.ran);
  t.is(res.listed, 3);
  t.deepEqual(res.dangling, []);
  t.true(await exists(other.id));
  t.true(await exists(plain.id));
  t.true(await exists(halfHeuristic.id));
  t.deepEqual(client.calls, { list: 1, remove: 0 });
  // The other agent's own reconciler would take it: agent ids decide (Nomad issue 7792).
  const { r: r2 } = reconciler({ agentId: OTHER_AGENT, dryRun: true });
  const res2 = await r2.runOnce();
  t.deepEqual(res2.dangling.map((d) => d.id), [other.id]);
  for (const c of [other, plain, halfHeuristic]) await c.remove({ force: true, v: true });
});

rtest('beside the reconciler: a Nomad-shaped container and an alloc-id-only container are kept by default and reported as opt-in matches', async (t) => {
  // Exactly what a Nomad client sharing the dockerd makes: no corral label, /alloc, /local, /secrets, <task>-<alloc uuid>.
  const nomadName = `web-${randomUUID()}`;
  const nomad = await createRawContainer({ fileId: FID, name: nomadName, volumes: ['/alloc', '/local', '/secrets'] });
  const labels = ourLabels();
  delete labels[LABEL_AGENT_ID];
  const allocOnly = await createRawContainer({ fileId: FID, labels });
  const mine = await createRawContainer({ fileId: FID, labels: ourLabels() });
  t.teardown(async () => { for (const c of [nomad, allocOnly]) await c.remove({ force: true, v: true }).catch(() => {}); });
  const { r, client, logger } = reconciler();
  t.false(r.unsafeMatchAllocIdOnly);
  t.false(r.unsafeMatchNomadShaped);
  const res = await r.runOnce();
  t.deepEqual(res.removed.map((d) => d.id), [mine.id], 'only the container with this agent id is removed');
  t.deepEqual(res.removed[0]!.matchedBy, 'label');
  t.deepEqual(res.optInMatches.map((d) => [d.id, d.matchedBy]).sort(), [[nomad.id, 'heuristic'], [allocOnly.id, 'alloc-id-only']].sort());
  t.true(await exists(nomad.id));
  t.true(await exists(allocOnly.id));
  t.is(client.calls.remove, 1);
  t.true(logger.lines.some((l) => l.level === 'debug' && /opt-in ownership rule/.test(l.msg)));
  // Dry run with the rules on: reports which rule would match each, removes nothing.
  const { r: dry, client: dc, logger: dl } = reconciler({ dryRun: true, unsafeMatchAllocIdOnly: true, unsafeMatchNomadShaped: true });
  const dres = await dry.runOnce();
  t.deepEqual(dres.dangling.map((d) => [d.id, d.matchedBy]).sort(), [[nomad.id, 'heuristic'], [allocOnly.id, 'alloc-id-only']].sort());
  t.deepEqual(dres.optInMatches, []);
  t.is(dc.calls.remove, 0);
  t.true(dl.lines.some((l) => l.level === 'info' && /dry run/.test(l.msg)));
  // Dry run with the rules off: the opt-in matches are logged at info for the operator.
  const { r: dry2, logger: dl2 } = reconciler({ dryRun: true });
  t.is((await dry2.runOnce()).optInMatches.length, 2);
  t.true(dl2.lines.some((l) => l.level === 'info' && /opt-in ownership rule/.test(l.msg)));
  // Each rule, when turned on, takes exactly its own match.
  const { r: a1 } = reconciler({ unsafeMatchAllocIdOnly: true });
  const r1 = await a1.runOnce();
  t.deepEqual(r1.removed.map((d) => [d.id, d.matchedBy]), [[allocOnly.id, 'alloc-id-only']]);
  t.is(r1.removed[0]!.agentId, undefined);
  t.false(await exists(allocOnly.id));
  const { r: a2 } = reconciler({ unsafeMatchNomadShaped: true });
  const r2 = await a2.runOnce();
  t.deepEqual(r2.removed.map((d) => [d.id, d.matchedBy, d.name]), [[nomad.id, 'heuristic', nomadName]]);
  t.false(await exists(nomad.id));
  t.throws(() => reconciler({ unsafeMatchNomadShaped: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_CONFIG', message: /unsafeMatchNomadShaped/ });
});

rtest('a container younger than the grace is kept', async (t) => {
  const young = await createRawContainer({ fileId: FID, labels: ourLabels() });
  const { r } = reconciler({ creationGraceMs: 60 * 60_000 });
  const res = await r.runOnce();
  t.true(res.ran);
  t.deepEqual(res.dangling, []);
  t.true(await exists(young.id));
  // Same container, grace 0 ("now"): it is taken.
  const { r: r0 } = reconciler({ creationGraceMs: 0 });
  t.deepEqual((await r0.runOnce()).removed.map((d) => d.id), [young.id]);
});

rtest('dry run removes nothing and reports what it would remove', async (t) => {
  const c = await createRawContainer({ fileId: FID, labels: ourLabels() });
  const { r, client, logger } = reconciler({ dryRun: true });
  const res = await r.runOnce();
  t.true(res.dryRun);
  t.deepEqual(res.dangling.map((d) => d.id), [c.id]);
  t.deepEqual(res.removed, []);
  t.true(await exists(c.id));
  t.is(client.calls.remove, 0);
  t.true(logger.lines.some((l) => l.level === 'info' && /dry run/.test(l.msg)));
  await c.remove({ force: true });
});

rtest('heuristic (opt-in): only all three mounts and a -<uuid> name match', async (t) => {
  const name = `web-${randomUUID()}`;
  const old = await createRawContainer({ fileId: FID, name, volumes: ['/alloc', '/local', '/secrets'] });
  // Same mounts but only two of the three: no rule matches.
  const partial = await createRawContainer({ fileId: FID, name: `db-${randomUUID()}`, volumes: ['/alloc', '/local'] });
  // All three mounts and a uuid name, but another agent's id: never ours.
  const other = await createRawContainer({ fileId: FID, name: `api-${randomUUID()}`, volumes: ['/alloc', '/local', '/secrets'], labels: { [LABEL_AGENT_ID]: OTHER_AGENT } });
  t.teardown(async () => { for (const c of [old, partial, other]) await c.remove({ force: true, v: true }).catch(() => {}); });
  const { r } = reconciler({ unsafeMatchNomadShaped: true });
  const res = await r.runOnce();
  t.deepEqual(res.removed.map((d) => [d.id, d.matchedBy, d.name]), [[old.id, 'heuristic', name]]);
  t.false(await exists(old.id));
  t.true(await exists(partial.id));
  t.true(await exists(other.id));
});

rtest('stopped containers are not listed (only running ones are reconciled)', async (t) => {
  const stopped = await createRawContainer({ fileId: FID, labels: ourLabels(), start: false });
  const { r } = reconciler();
  const res = await r.runOnce();
  t.deepEqual(res.dangling, []);
  t.true(await exists(stopped.id));
  await stopped.remove({ force: true });
});

rtest('unhealthy driver: no pass, no Docker call', async (t) => {
  const c = await createRawContainer({ fileId: FID, labels: ourLabels() });
  const { r, client } = reconciler({ isDriverHealthy: () => false });
  const res = await r.runOnce();
  t.false(res.ran);
  t.regex(res.skippedReason ?? '', /not healthy/);
  t.deepEqual(client.calls, { list: 0, remove: 0 });
  t.true(await exists(c.id));
  // The loop skips as well.
  const ac = new AbortController();
  const { r: loop, client: lc } = reconciler({ isDriverHealthy: async () => false, periodMs: 20, signal: ac.signal });
  loop.start();
  await eventually(() => loop.passCount >= 3, 5000, 10);
  ac.abort();
  t.is(lc.calls.list, 0);
  t.true(await exists(c.id));
  await c.remove({ force: true });
});

rtest('the loop: first pass after max(period, grace), then every period; start() is idempotent', async (t) => {
  const delays: number[] = [];
  const pending = new Map<number, () => void>();
  let seq = 0;
  let now = 1_000_000_000_000;
  const clock: ReconcilerClock = {
    now: () => now,
    setTimeout: (fn, ms) => { delays.push(ms); const id = ++seq; pending.set(id, fn); return id; },
    clearTimeout: (h) => { pending.delete(h as number); },
  };
  const ac = new AbortController();
  let healthChecks = 0;
  const { r } = reconciler({ clock, periodMs: 1000, creationGraceMs: 5000, signal: ac.signal, isDriverHealthy: () => { healthChecks++; return false; } });
  r.start();
  r.start();
  t.deepEqual(delays, [5000]);
  t.is(pending.size, 1);
  const fire = async () => { const [id, fn] = [...pending][0]!; pending.delete(id); fn(); await eventually(() => pending.size === 1 || !r.running, 2000, 1); };
  await fire();
  t.is(healthChecks, 1);
  t.deepEqual(delays, [5000, 1000]);
  const { r: r2 } = reconciler({ clock, periodMs: 7000, creationGraceMs: 0, signal: ac.signal });
  r2.start();
  t.is(delays.at(-1), 7000);
  ac.abort();
  t.is(pending.size, 0, 'abort clears every timer');
  t.false(r.running);
  now += 1;
});

rtest('the loop removes a dangling container on its own, and abort leaves no timer', async (t) => {
  const c = await createRawContainer({ fileId: FID, labels: ourLabels() });
  const before = process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length;
  const ac = new AbortController();
  const { r } = reconciler({ periodMs: 50, creationGraceMs: 0, signal: ac.signal });
  r.start();
  t.true(r.running);
  await eventually(async () => !(await exists(c.id)), 10_000, 50);
  ac.abort();
  t.false(r.running);
  const after = process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length;
  t.true(after <= before, `timers before ${before}, after ${after}`);
  // start() after abort does nothing.
  r.start();
  t.false(r.running);
});

rtest('a failing list is retried next period and logged once until a pass succeeds', async (t) => {
  const real = scopedClient();
  let failing = true;
  const faulty: ReconcilerDockerClient & { lists: number } = {
    lists: 0,
    listContainers(opts) {
      faulty.lists++;
      if (failing) return Promise.reject(Object.assign(new Error('injected: list failed'), { statusCode: 500 }));
      return real.listContainers(opts);
    },
    getContainer: (id) => real.getContainer(id),
  };
  const logger = memLogger();
  const ac = new AbortController();
  const r = new DanglingContainerReconciler({
    docker: faulty, agentId: AGENT, periodMs: 30, creationGraceMs: 0, trackedContainers: () => [], logger, signal: ac.signal,
  });
  const c = await createRawContainer({ fileId: FID, labels: ourLabels() });
  r.start();
  await eventually(() => faulty.lists >= 4, 10_000, 10);
  const warns = () => logger.lines.filter((l) => l.level === 'warn' && /failed to remove dangling/.test(l.msg)).length;
  t.is(warns(), 1, 'logged once while failing');
  t.true(await exists(c.id));
  failing = false;
  await eventually(async () => !(await exists(c.id)), 10_000, 20);
  const okLists = faulty.lists;
  failing = true;
  await eventually(() => faulty.lists >= okLists + 3, 10_000, 10);
  t.is(warns(), 2, 'logged again after a success');
  ac.abort();
});

rtest('a hung list is bounded by max(floor, period) and the pass fails', async (t) => {
  const hung: ReconcilerDockerClient = {
    listContainers: (opts) => new Promise((_resolve, reject) => {
      opts.abortSignal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
    }),
    getContainer: () => { throw new Error('unexpected'); },
  };
  const r = new DanglingContainerReconciler({
    docker: hung, agentId: AGENT, periodMs: 10, creationGraceMs: 0, trackedContainers: () => [], callTimeoutFloorMs: 200, logger: memLogger(),
  });
  t.is(r.callTimeoutMs, 200);
  const t0 = Date.now();
  const err = await t.throwsAsync(r.runOnce());
  t.is((err as { code?: string }).code, 'ERR_DOCKER_TIMEOUT');
  t.true(Date.now() - t0 < bound(2000));
  t.is(new DanglingContainerReconciler({ docker: hung, agentId: AGENT, periodMs: 60_000, trackedContainers: () => [] }).callTimeoutMs, 60_000);
  t.is(new DanglingContainerReconciler({ docker: hung, agentId: AGENT, periodMs: 1000, trackedContainers: () => [] }).callTimeoutMs, 30_000);
});

test('invalid options are refused', (t) => {
  const base = { docker: scopedClient(), agentId: AGENT, trackedContainers: () => [] };
  t.throws(() => new DanglingContainerReconciler({ ...base, creationGraceMs: -1 }), { code: 'ERR_INVALID_CONFIG', message: /creationGraceMs/ });
  t.throws(() => new DanglingContainerReconciler({ ...base, periodMs: 0 }), { code: 'ERR_INVALID_CONFIG', message: /periodMs/ });
  t.throws(() => new DanglingContainerReconciler({ ...base, agentId: '' }), { code: 'ERR_INVALID_CONFIG', message: /agentId/ });
  const disabled = new DanglingContainerReconciler({ ...base, enabled: false });
  disabled.start();
  t.false(disabled.running);
});

// Silence "unused" for the type import used only in annotations above.
export type _Unused = Docker.ContainerInfo;
