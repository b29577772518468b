/**
 * Fault: dockerd stops answering (SIGSTOP: a hung daemon) while tasks run.
 * → calls fail within their bound, the driver turns unhealthy, the reconciler skips its passes,
 * a new agent's recovery fails cleanly and keeps the handles; after dockerd is back (SIGCONT), the
 * driver is healthy again, the running task is recovered, the one that exited meanwhile is reported
 * with its exit code, and the reconciler works again.
 *
 * dockerd is shared with other tests: the pause is kept to a few seconds, a detached watchdog
 * resumes it after 20 s whatever happens to this process, and after.always resumes it too. An
 * exclusive file (`*.exclusive.test.ts`): scripts/test.sh runs it alone after the parallel host run,
 * since a docker test running meanwhile would see its calls time out.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { DockerDriver } from '../src/drivers/docker/index.js';
import { silentLogger } from '../src/util/logger.js';
import { DanglingContainerReconciler, LABEL_AGENT_ID, LABEL_ALLOC_ID, type ReconcilerDockerClient } from '../src/drivers/docker/reconcile_dangling.js';
import type { TaskConfig } from '../src/drivers/contract.js';
import { FILE_LABEL, TEST_IMAGE, createRawContainer, docker, ensureDockerUp, eventually, exists, fileId, randomUUID, removeContainersOf } from './helpers/docker.js';

const FID = fileId('fault');
const AGENT = `agent-fault-${randomUUID()}`;
let dockerdPid = 0;
let watchdogPid = 0;
const drivers: DockerDriver[] = [];
const dirs: string[] = [];

function dockerdPidNow(): number {
  for (const f of ['/var/run/docker.pid', '/run/docker.pid']) {
    try {
      const n = Number(fs.readFileSync(f, 'utf8').trim());
      if (n > 0) return n;
    } catch { /* next */ }
  }
  throw new Error('cannot find the dockerd pid');
}

function resume(): void {
  if (dockerdPid) {
    try { process.kill(dockerdPid, 'SIGCONT'); } catch { /* gone */ }
  }
  if (watchdogPid) {
    try { process.kill(-watchdogPid, 'SIGKILL'); } catch { /* done already */ }
    watchdogPid = 0;
  }
}

test.before(async () => { await ensureDockerUp(); });

test.after.always(async () => {
  resume();
  for (const d of drivers) await d.shutdown();
  await removeContainersOf(FID);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function task(name: string, cmd: string[]): TaskConfig<any> {
  return {
    id: `${name}-${randomUUID().slice(0, 8)}`, allocId: randomUUID(), name,
    driver: { image: TEST_IMAGE, command: cmd[0], args: cmd.slice(1), networkMode: 'none', labels: { [FILE_LABEL]: FID } },
  };
}

test.serial('dockerd stopped while tasks run: unhealthy, reconciler skips, tasks recovered or reported after it is back', async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-fault-'));
  dirs.push(stateDir);
  const opts = { stateDir, agentId: AGENT, logger: silentLogger, fingerprintIntervalMs: 200 };
  const noGc = { image: false, danglingContainers: { enabled: false } };
  // The previous agent starts the tasks (normal bounds: the machine may be busy)...
  const d0 = new DockerDriver({ ...opts, gc: noGc });
  drivers.push(d0);
  const longRunning = task('long', ['sleep', '300']);
  const exitsDuring = task('brief', ['sh', '-c', 'sleep 3; exit 3']);
  await d0.startTask(longRunning);
  await d0.startTask(exitsDuring);
  await d0.shutdown();
  // ...and this one, with short bounds so that a hung dockerd shows quickly, takes them over.
  const d = new DockerDriver({ ...opts, callTimeoutMs: 2500, gc: { image: false, danglingContainers: { enabled: true, periodMs: 60_000 } } });
  drivers.push(d);
  await eventually(async () => (await d.recoverAll()).failed.length === 0, 20_000, 200);
  await eventually(async () => (await d.checkHealth()).health === 'healthy', 10_000, 100);
  const briefWait = d.waitTask(exitsDuring.id);

  // A reconciler that follows the driver's health, scoped to this file's containers, counting lists.
  let lists = 0;
  const scoped: ReconcilerDockerClient = {
    listContainers: (o) => { lists++; return docker.listContainers({ ...o, filters: { label: [`${FILE_LABEL}=${FID}`] } }); },
    getContainer: (id) => docker.getContainer(id),
  };
  const rac = new AbortController();
  const rec = new DanglingContainerReconciler({
    docker: scoped, agentId: AGENT, periodMs: 100, creationGraceMs: 0, callTimeoutFloorMs: 2500, logger: silentLogger,
    trackedContainers: () => d.trackedContainers(), isDriverHealthy: () => d.health.health === 'healthy', signal: rac.signal,
  });
  rec.start();
  await eventually(() => lists >= 1, 5000, 20);
  const d2 = new DockerDriver({ ...opts, callTimeoutMs: 2500, gc: noGc });
  drivers.push(d2);

  // Stop dockerd, with a watchdog that resumes it whatever happens here.
  dockerdPid = dockerdPidNow();
  const wd = spawn('sh', ['-c', `sleep 20; kill -CONT ${dockerdPid}`], { detached: true, stdio: 'ignore' });
  watchdogPid = wd.pid ?? 0;
  wd.unref();
  process.kill(dockerdPid, 'SIGSTOP');
  const pausedAt = Date.now();
  try {
    await Promise.all([
      (async () => {
        // Calls are bounded.
        const t0 = Date.now();
        await t.throwsAsync(d.execTask(longRunning.id, ['true']), { code: 'ERR_DOCKER_TIMEOUT' });
        t.true(Date.now() - t0 < 5000, `exec failed after ${Date.now() - t0} ms`);
      })(),
      (async () => {
        // The driver turns unhealthy; the reconciler keeps its schedule but makes no Docker call.
        await eventually(() => d.health.health === 'unhealthy', 6000, 50);
        const listsAtPause = lists;
        const passesAtPause = rec.passCount;
        await eventually(() => rec.passCount >= passesAtPause + 3, 5000, 20);
        t.is(lists, listsAtPause, 'no list call while the driver is unhealthy');
        t.regex(d.health.healthDescription, /did not answer within 2500 ms/);
      })(),
      (async () => {
        // A new agent cannot recover now: a bounded failure, the handle is kept.
        const err = await t.throwsAsync(d2.recoverTask(d2.store.get(longRunning.id)!));
        t.is((err as { code?: string })?.code, 'ERR_DOCKER_TIMEOUT');
        t.truthy(d2.store.get(longRunning.id));
      })(),
    ]);
    t.is(d.inspectTask(longRunning.id).state, 'running');
    // Give the brief task time to exit while dockerd is stopped.
    const left = 3500 - (Date.now() - pausedAt);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
  } finally {
    resume();
  }

  // dockerd is back.
  await eventually(async () => (await d.checkHealth()).health === 'healthy', 15_000, 200);
  t.deepEqual(await briefWait, { exitCode: 3, signal: null, oomKilled: false });
  const d3 = new DockerDriver({ ...opts, gc: noGc });
  drivers.push(d3);
  const rec3 = await d3.recoverAll();
  t.deepEqual(rec3.recovered.sort(), [exitsDuring.id, longRunning.id].sort());
  t.is(d3.inspectTask(longRunning.id).state, 'running');
  t.is(d3.inspectTask(exitsDuring.id).state, 'exited');
  t.is(d3.inspectTask(exitsDuring.id).exitResult?.exitCode, 3);
  t.is((await d3.execTask(longRunning.id, ['echo', 'ok'])).stdout, 'ok\n');

  // The reconciler lists again and removes a dangling container of ours.
  const dangling = await createRawContainer({ fileId: FID, labels: { [LABEL_ALLOC_ID]: randomUUID(), [LABEL_AGENT_ID]: AGENT } });
  await eventually(async () => !(await exists(dangling.id)), 10_000, 100);
  t.true(await exists((d3.inspectTask(longRunning.id).driverAttributes.containerId)!), 'tracked tasks are kept');
  rac.abort();

  await d3.destroyTask(longRunning.id, { force: true });
  await d3.destroyTask(exitsDuring.id);
});
