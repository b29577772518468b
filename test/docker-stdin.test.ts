/**
 * driver.stdin of the docker driver (real dockerd): a stream copied into the container, its end the
 * task's EOF; not persisted; anything else refused before a container exists.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { DockerDriver } from '../src/drivers/docker/index.js';
import { InvalidConfigError } from '../src/errors.js';
import { silentLogger } from '../src/util/logger.js';
import { TEST_IMAGE, docker, ensureDockerUp, randomUUID } from './helpers/docker.js';
import { isRoot } from './helpers/cgroups.js';
import { bound, sandbox } from './helpers/sandbox.js';

const t = isRoot ? test.serial : test.skip;

test.before(async () => { if (isRoot) await ensureDockerUp(); });

function setup(tt: ExecutionContext, tag: string) {
  const sb = sandbox(tt, tag);
  const driver = new DockerDriver({
    stateDir: sb.stateDir, agentId: `agent-${sb.name}`, logger: silentLogger, callTimeoutMs: bound(60_000),
    gc: { image: false, danglingContainers: { enabled: false } },
  });
  sb.defer(() => driver.shutdown());
  const out = path.join(sb.stateDir, 'out.txt');
  const cfg = (stdin: unknown, cmd: string) => ({
    id: `stdin-${randomUUID().slice(0, 8)}`, allocId: randomUUID(), name: 'stdin', stdoutPath: out,
    driver: { image: TEST_IMAGE, networkMode: 'none', labels: sb.labels, command: 'sh', args: ['-c', cmd], stdin },
  });
  return { sb, driver, out, cfg };
}

t('a stream is copied into the container; its end is the task\'s EOF; the stored handle has no stream', async (tt) => {
  const { driver, out, cfg } = setup(tt, 'docker-stdin');
  const input = new PassThrough();
  const c = cfg(input, 'read x; echo "got [$x]"; wc -c');
  await driver.startTask(c as never);
  tt.false('stdin' in (driver.store.get(c.id)!.config.driver as object));
  input.write('first\n');
  input.end('abc');
  const r = await driver.waitTask(c.id); // only ends once EOF reached wc
  tt.is(r.exitCode, 0);
  await driver.destroyTask(c.id);
  tt.is(fs.readFileSync(out, 'utf8').replace(/ {2,}|^ +/gm, ''), 'got [first]\n3\n');
});

t('a task that exits without reading: the stream is left paused, not destroyed', async (tt) => {
  const { driver, cfg } = setup(tt, 'docker-stdin-unread');
  const input = new PassThrough();
  const c = cfg(input, 'exit 3');
  await driver.startTask(c as never);
  const r = await driver.waitTask(c.id);
  tt.is(r.exitCode, 3);
  await driver.destroyTask(c.id);
  tt.false(input.destroyed);
  tt.is(input.listenerCount('data'), 0);
});

t('driver.stdin that is not a stream → InvalidConfigError naming it, nothing created', async (tt) => {
  const { sb, driver, cfg } = setup(tt, 'docker-stdin-bad');
  const c = cfg('hello', 'true');
  const err = await tt.throwsAsync(driver.startTask(c as never), { instanceOf: InvalidConfigError });
  tt.regex(err!.message, /driver\.stdin/);
  tt.deepEqual(driver.taskIds(), []);
  tt.is(driver.store.get(c.id), undefined);
  tt.deepEqual(await docker.listContainers({ all: true, filters: { label: [`corral-test.file=${sb.name}`] } }), []);
});
