/**
 * The docker driver keeps the same ownership rules as raw_exec (DriverCore's recovery loop): a
 * record whose owner is a live process is skipped by recoverAll (`owned`) and refused by
 * recoverTask (ERR_TASK_OWNED naming the owner) before any Docker call, unless forced.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { DockerDriver } from '../src/drivers/docker/index.js';
import { silentLogger } from '../src/util/logger.js';
import { TaskStore } from '../src/store/task-store.js';
import { processStartTime } from '../src/store/owner.js';
import type { TaskHandle } from '../src/drivers/contract.js';
import { waitFor } from './helpers/cgroups.js';
import { sandbox } from './helpers/sandbox.js';

test('a docker task whose owner is alive is skipped by recoverAll and refused by recoverTask, with no Docker call', async (t) => {
  const sb = sandbox(t, 'dockerowned');
  const owner = spawn('sleep', ['1000'], { stdio: 'ignore' });
  sb.defer(() => { owner.kill('SIGKILL'); });
  await waitFor(() => processStartTime(owner.pid!) !== undefined, { what: 'the owner to start' });
  const h: TaskHandle = {
    version: 1, driver: 'docker', taskId: 'owned-web', allocId: '6c1f7f0e-5d2b-4a53-9d59-2f0c3b7a1e11', taskName: 'web', startedAt: new Date().toISOString(),
    config: { id: 'owned-web', allocId: '6c1f7f0e-5d2b-4a53-9d59-2f0c3b7a1e11', name: 'web', driver: { image: 'busybox' } },
    driverState: { containerId: 'a'.repeat(64), containerName: 'web-6c1f7f0e-5d2b-4a53-9d59-2f0c3b7a1e11', image: 'busybox' },
  };
  new TaskStore(sb.stateDir, { owner: { pid: owner.pid!, startTime: processStartTime(owner.pid!)! } }).create(h, 'running');
  // An endpoint nobody listens on: any Docker call would fail the test.
  const d = new DockerDriver({ stateDir: sb.stateDir, endpoint: 'tcp://127.0.0.1:1', callTimeoutMs: 2000, logger: silentLogger, gc: { image: false, danglingContainers: { enabled: false } } });
  sb.defer(() => d.shutdown());
  const r = await d.recoverAll();
  t.deepEqual(r.owned, [{ taskId: 'owned-web', ownerPid: owner.pid!, ownerStartTime: processStartTime(owner.pid!)! }]);
  t.deepEqual(r.recovered, []);
  t.deepEqual(r.failed, []);
  const err = await t.throwsAsync(d.recoverTask(h));
  t.is((err as { code?: string }).code, 'ERR_TASK_OWNED');
  t.is((err as unknown as { ownerPid: number }).ownerPid, owner.pid!);
  t.is(new TaskStore(sb.stateDir).getRecord('owned-web')!.owner!.pid, owner.pid!, 'the record still names its owner');
});
