/**
 * DockerDriver against the real dockerd and the local busybox test image.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DockerDriver, validateTaskConfig } from '../src/drivers/docker/index.js';
import { silentLogger } from '../src/util/logger.js';
import type { TaskConfig, TaskEvent } from '../src/drivers/contract.js';
import type { CgroupManager } from '../src/cgroups/types.js';
import { TaskStore } from '../src/store/task-store.js';
import { startRegistry } from './helpers/docker-registry.js';
import { bound, uniqueName } from './helpers/names.js';
import { cleanupParent } from './helpers/cgroups.js';
import {
  FILE_LABEL, TEST_IMAGE, containersOf, docker, ensureDockerUp, eventually, exists, fileId, randomUUID, removeContainersOf,
} from './helpers/docker.js';

const execFileP = promisify(execFile);
const FID = fileId('driver');
const AGENT = `agent-driver-${randomUUID()}`;
const ROOT = path.resolve(__dirname, '..');
const stateDirs: string[] = [];
const drivers: DockerDriver[] = [];
const extraImages: string[] = [];
/** The file's own cgroup parent: a task with cores reserves them in this partition, never the default's. */
const PARENT = uniqueName('dockerdrv');

function tmpState(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-docker-'));
  stateDirs.push(d);
  return d;
}

function newDriver(o: ConstructorParameters<typeof DockerDriver>[0] = {}): DockerDriver {
  const d = new DockerDriver({
    stateDir: tmpState(), agentId: AGENT, logger: silentLogger, callTimeoutMs: bound(60_000), cgroupParent: PARENT,
    ...o,
    gc: { image: false, danglingContainers: { enabled: false }, ...(o.gc ?? {}) },
  });
  drivers.push(d);
  return d;
}

function task(name: string, drv: Record<string, unknown>, extra: Partial<TaskConfig> = {}): TaskConfig<any> {
  return {
    id: `${name}-${randomUUID().slice(0, 8)}`,
    allocId: randomUUID(),
    name,
    ...extra,
    driver: { image: TEST_IMAGE, networkMode: 'none', labels: { [FILE_LABEL]: FID }, ...drv },
  };
}

let driver: DockerDriver;

test.before(async () => {
  await ensureDockerUp();
  driver = newDriver();
});

test.after.always(async () => {
  for (const d of drivers) await d.shutdown();
  await removeContainersOf(FID);
  for (const img of extraImages) { try { await docker.getImage(img).remove(); } catch { /* gone */ } }
  for (const d of stateDirs) fs.rmSync(d, { recursive: true, force: true });
  for (const p of [PARENT, `${PARENT}.slice`]) await cleanupParent(p);
});

test('start, wait, exit code 0; labels, name and handle persisted', async (t) => {
  const cfg = task('ok', { command: 'sh', args: ['-c', 'exit 0'], labels: { [FILE_LABEL]: FID, team: 'blue' } });
  const h = await driver.startTask(cfg);
  t.is(h.driver, 'docker');
  const ds = h.driverState as { containerId: string; containerName: string; agentId: string };
  t.is(ds.containerName, `ok-${cfg.allocId}`);
  t.deepEqual(driver.store.get(cfg.id)?.driverState, h.driverState);
  const r = await driver.waitTask(cfg.id);
  t.deepEqual(r, { exitCode: 0, signal: null, oomKilled: false });
  const st = driver.inspectTask(cfg.id);
  t.is(st.state, 'exited');
  t.truthy(st.completedAt);
  const info = await docker.getContainer(ds.containerId).inspect();
  t.is(info.Name, `/ok-${cfg.allocId}`);
  t.like(info.Config.Labels, {
    'io.corral.alloc_id': cfg.allocId, 'io.corral.task_name': 'ok', 'io.corral.task_id': cfg.id, 'io.corral.agent_id': AGENT, team: 'blue',
  });
  await driver.destroyTask(cfg.id);
  t.false(await exists(ds.containerId));
  t.is(driver.store.get(cfg.id), undefined);
  t.throws(() => driver.inspectTask(cfg.id), { code: 'ERR_TASK_NOT_FOUND' });
});

test('non-zero exit; several waiters share one result; an aborted wait leaves nothing', async (t) => {
  const cfg = task('fail', { command: 'sh', args: ['-c', 'sleep 1; exit 3'] });
  await driver.startTask(cfg);
  const ac = new AbortController();
  const aborted = driver.waitTask(cfg.id, { signal: ac.signal });
  ac.abort();
  await t.throwsAsync(aborted, { code: 'ABORT_ERR' });
  const rs = await Promise.all([driver.waitTask(cfg.id), driver.waitTask(cfg.id), driver.waitTask(cfg.id, { signal: new AbortController().signal })]);
  for (const r of rs) t.deepEqual(r, { exitCode: 3, signal: null, oomKilled: false });
  t.deepEqual(await driver.waitTask(cfg.id), rs[0]);
  await driver.destroyTask(cfg.id);
});

test('env, workDir, entrypoint and volumes reach the container', async (t) => {
  const host = tmpState();
  fs.writeFileSync(path.join(host, 'in.txt'), 'from-host');
  const cfg = task('cfg', {
    entrypoint: ['/bin/sh', '-c'], args: ['echo "$A $B $(pwd) $(cat /data/in.txt)" > /out/result; touch /data/ro-test 2>/dev/null && exit 9; exit 0'],
    env: { B: 'b-driver' }, workDir: '/tmp', volumes: [`${host}:/data:ro`, `${host}:/out`],
  }, { env: { A: 'a-task', B: 'b-task' } });
  await driver.startTask(cfg);
  t.is((await driver.waitTask(cfg.id)).exitCode, 0);
  t.is(fs.readFileSync(path.join(host, 'result'), 'utf8').trim(), 'a-task b-driver /tmp from-host');
  await driver.destroyTask(cfg.id);
});


test('destroy: running without force → TaskRunningError; with force → container removed', async (t) => {
  const cfg = task('destroy', { command: 'sleep', args: ['300'] });
  const h = await driver.startTask(cfg);
  const id = (h.driverState as { containerId: string }).containerId;
  await t.throwsAsync(driver.destroyTask(cfg.id), { code: 'ERR_TASK_RUNNING' });
  t.true(await exists(id));
  const waiting = driver.waitTask(cfg.id);
  await driver.destroyTask(cfg.id, { force: true });
  t.false(await exists(id));
  t.is((await waiting).exitCode !== 0, true);
  await t.throwsAsync(driver.destroyTask(cfg.id), { code: 'ERR_TASK_NOT_FOUND' });
  await t.throwsAsync(driver.waitTask(cfg.id), { code: 'ERR_TASK_NOT_FOUND' });
});


test('execTask: stdout/stderr demuxed, exit code, timeout kills the command', async (t) => {
  const cfg = task('exec', { command: 'sleep', args: ['300'] });
  await driver.startTask(cfg);
  const r = await driver.execTask(cfg.id, ['sh', '-c', 'echo out; echo err >&2; exit 4']);
  t.deepEqual(r, { stdout: 'out\n', stderr: 'err\n', exitResult: { exitCode: 4, signal: null, oomKilled: false } });
  const big = await driver.execTask(cfg.id, ['sh', '-c', 'seq 1 20000']);
  t.is(big.stdout.split('\n').length, 20001);
  const t0 = Date.now();
  await t.throwsAsync(driver.execTask(cfg.id, ['sleep', '77'], { timeoutMs: 300 }), { code: 'ERR_EXEC_TIMEOUT' });
  t.true(Date.now() - t0 < 5000);
  await eventually(async () => !(await driver.execTask(cfg.id, ['ps'])).stdout.includes('sleep 77'), 5000, 100);
  await t.throwsAsync(driver.execTask(cfg.id, []), { code: 'ERR_INVALID_CONFIG', message: /cmd/ });
  await driver.destroyTask(cfg.id, { force: true });
});

test('taskStats: Docker stats mapped to TaskResourceUsage, ends on abort', async (t) => {
  const cfg = task('stats', { command: 'sh', args: ['-c', 'while :; do :; done'] });
  await driver.startTask(cfg);
  const ac = new AbortController();
  const samples = [];
  for await (const s of driver.taskStats(cfg.id, { intervalMs: 1000, signal: ac.signal })) {
    samples.push(s);
    if (samples.length === 3) ac.abort();
  }
  t.is(samples.length, 3);
  const last = samples[2]!;
  t.is(last.source, 'docker');
  t.is(last.taskId, cfg.id);
  t.true(last.cpu.totalNs > samples[0]!.cpu.totalNs);
  t.true(last.cpu.percent > 1, `percent ${last.cpu.percent}`);
  t.true(last.memory.usageBytes > 0);
  t.true(samples[1]!.timestamp - samples[0]!.timestamp >= 900);
  await t.throwsAsync(async () => { for await (const _ of driver.taskStats(cfg.id, { intervalMs: 0 })) { /* */ } }, { code: 'ERR_INVALID_CONFIG' });
  // A stats stream ends by itself when the task exits.
  let sampled = 0;
  const ended = (async () => { for await (const _ of driver.taskStats(cfg.id, { intervalMs: 200 })) sampled++; return sampled; })();
  await eventually(() => sampled >= 1, 30_000, 50);
  await driver.stopTask(cfg.id, { timeoutMs: 100 });
  t.true((await ended) >= 1);
  await driver.destroyTask(cfg.id);
});

test('oomKilled from inspect with a small memory limit', async (t) => {
  const cfg = task('oom', { command: 'sh', args: ['-c', 'x=aaaaaaaaaaaaaaaa; while :; do x="$x$x"; done'] }, { resources: { memoryBytes: 8 * 1024 * 1024 } });
  const h = await driver.startTask(cfg);
  const info = await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect();
  t.is(info.HostConfig.Memory, 8 * 1024 * 1024);
  const r = await driver.waitTask(cfg.id);
  if (!r.oomKilled) t.log(JSON.stringify(r), JSON.stringify((await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect()).State));
  t.true(r.oomKilled);
  t.is(r.exitCode, 137);
  t.is(r.signal, 9);
  await driver.destroyTask(cfg.id);
});

test('resources map to Memory, CpuShares, CpusetCpus, PidsLimit', async (t) => {
  const cfg = task('res', { command: 'sleep', args: ['300'] }, { resources: { memoryBytes: 64 * 1024 * 1024, cpuShares: 512, cores: [0], pidsMax: 50 } });
  const h = await driver.startTask(cfg);
  const info = await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect();
  t.like(info.HostConfig, { Memory: 64 * 1024 * 1024, MemorySwap: 64 * 1024 * 1024, CpuShares: 512, CpusetCpus: '0', PidsLimit: 50, Privileged: false });
  await driver.destroyTask(cfg.id, { force: true });
});

const BAD: Array<[string, (c: TaskConfig<any>) => void]> = [
  ['driver.image', (c) => { delete (c.driver as Record<string, unknown>).image; }],
  ['driver.image', (c) => { c.driver.image = ''; }],
  ['driver.image', (c) => { c.driver.image = 'Not/An Image'; }],
  ['driver.command', (c) => { c.driver.command = 5; }],
  ['driver.args', (c) => { c.driver.args = 'ls -l'; }],
  ['driver.args[1]', (c) => { c.driver.args = ['a', 2]; }],
  ['driver.entrypoint', (c) => { c.driver.entrypoint = []; }],
  ['driver.labels.io.corral.alloc_id', (c) => { c.driver.labels = { 'io.corral.alloc_id': 'x' }; }],
  ['driver.labels.team', (c) => { c.driver.labels = { team: 1 }; }],
  ['driver.env.A', (c) => { c.driver.env = { A: 1 }; }],
  ['driver.env.A=B', (c) => { c.driver.env = { 'A=B': 'x' }; }],
  ['env', (c) => { c.env = 'A=1' as unknown as Record<string, string>; }],
  ['driver.workDir', (c) => { c.driver.workDir = 'relative/dir'; }],
  ['driver.networkMode', (c) => { c.driver.networkMode = 'bad mode!'; }],
  ['driver.volumes', (c) => { c.driver.volumes = '/a:/b'; }],
  ['driver.volumes[0]', (c) => { c.driver.volumes = ['nocolon']; }],
  ['driver.volumes[0]', (c) => { c.driver.volumes = ['/host:relative']; }],
  ['driver.volumes[0]', (c) => { c.driver.volumes = ['/host:/c:xx']; }],
  ['driver.volumes[0]', (c) => { c.driver.volumes = ['/host:/']; }],
  ['driver.volumes[1]', (c) => { c.driver.volumes = ['/a:/c', '/b:/c/']; }],
  ['driver.privileged', (c) => { c.driver.privileged = true; }],
  ['driver.privileged', (c) => { c.driver.privileged = 'yes'; }],
  ['driver.forcePull', (c) => { c.driver.forcePull = 1; }],
  ['driver.imagee', (c) => { c.driver.imagee = 'typo'; }],
  ['resources.memoryBytes', (c) => { c.resources = { memoryBytes: 1024 }; }],
  ['resources.cpuShares', (c) => { c.resources = { cpuShares: 1 }; }],
  ['resources.cores', (c) => { c.resources = { cores: [os.cpus().length + 5] }; }],
  ['resources.cores', (c) => { c.resources = { cores: [0, 0] }; }],
  ['resources.pidsMax', (c) => { c.resources = { pidsMax: 0 }; }],
  ['allocId', (c) => { c.allocId = 'not-a-uuid'; }],
  ['name', (c) => { c.name = '../escape'; }],
  ['user', (c) => { c.user = 'a\0b'; }],
  ['stdoutPath', (c) => { c.stdoutPath = 'rel.log'; }],
];

test('bad input in every field → InvalidConfigError naming it, and no container is left', async (t) => {
  const ids = new Set<string>();
  for (const [field, mutate] of BAD) {
    const cfg = task('bad', { command: 'sleep', args: ['300'] });
    ids.add(cfg.id);
    mutate(cfg);
    const err = await t.throwsAsync(driver.startTask(cfg), { code: 'ERR_INVALID_CONFIG' }, field);
    t.is((err as { field?: string })?.field, field, `${field}: ${err?.message}`);
    t.is(driver.store.get(cfg.id), undefined);
  }
  // Other tests of this file run at the same time: look for these tasks' containers only.
  t.deepEqual((await containersOf(FID)).filter((c) => ids.has(c.Labels['io.corral.task_id'] ?? '')), []);
});

test('one rule set for TaskConfig: a name any driver accepts becomes a safe container name; alloc ids in any case', (t) => {
  const cfg = task('web server', { command: 'true' });
  cfg.allocId = cfg.allocId.toUpperCase();
  const spec = validateTaskConfig(cfg, { allowPrivileged: false, agentId: AGENT });
  t.regex(spec.containerName, /^web_server-[0-9a-f]{8}-[0-9A-F-]{36}$/);
  t.is(spec.createOptions.Labels['io.corral.task_name'], 'web server');
  t.not(validateTaskConfig({ ...cfg, name: 'web_server' }, { allowPrivileged: false, agentId: AGENT }).containerName, spec.containerName);
  const e = t.throws(() => validateTaskConfig({ ...cfg, resources: { cores: [0, 99999] } }, { allowPrivileged: false, agentId: AGENT, usableCores: [0, 1] }));
  t.is((e as { field?: string }).field, 'resources.cores');
});

test('privileged only when the plugin allows it', async (t) => {
  const d = newDriver({ allowPrivileged: true });
  const cfg = task('priv', { command: 'sleep', args: ['300'], privileged: true });
  const spec = validateTaskConfig(cfg, { allowPrivileged: true, agentId: AGENT });
  t.true(spec.createOptions.HostConfig.Privileged);
  try {
    const h = await d.startTask(cfg);
    const info = await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect();
    t.true(info.HostConfig.Privileged);
    await d.destroyTask(cfg.id, { force: true });
  } catch (err) {
    // Some VMs refuse the full capability set to runc ("unable to apply caps"): then the start
    // failure must still leave no container behind.
    t.regex((err as Error).message, /caps|capabilit|permitted/i);
    t.log(`privileged containers cannot start here: ${(err as Error).message}`);
    t.deepEqual((await containersOf(FID)).filter((c) => c.Labels['io.corral.task_id'] === cfg.id), []);
  }
});

test('a failure after create removes the container (start fails: no such entrypoint)', async (t) => {
  const cfg = task('nostart', { entrypoint: ['/does/not/exist'] });
  const err = await t.throwsAsync(driver.startTask(cfg));
  t.is(err?.name, 'DockerError');
  t.deepEqual((await containersOf(FID)).filter((c) => c.Labels['io.corral.task_id'] === cfg.id), []);
  t.is(driver.store.get(cfg.id), undefined);
  t.throws(() => driver.inspectTask(cfg.id), { code: 'ERR_TASK_NOT_FOUND' });
  // The same task id can start afterwards.
  const again = { ...cfg, driver: { ...cfg.driver, entrypoint: undefined, command: 'true' } };
  delete (again.driver as Record<string, unknown>).entrypoint;
  await driver.startTask(again);
  t.is((await driver.waitTask(cfg.id)).exitCode, 0);
  await driver.destroyTask(cfg.id);
});

test('a missing image is pulled, bounded by pullTimeoutMs; failure leaves nothing', async (t) => {
  const d = newDriver({ pullTimeoutMs: 3000 });
  const events: TaskEvent[] = [];
  const ac = new AbortController();
  const sub = (async () => { for await (const e of d.taskEvents({ signal: ac.signal })) events.push(e); })();
  const cfg = task('pull', { image: `corral-test/not-here-${randomUUID().slice(0, 8)}:1`, command: 'true' });
  const t0 = Date.now();
  const err = await t.throwsAsync(d.startTask(cfg));
  t.true(Date.now() - t0 < 10_000);
  t.regex(err?.message ?? '', /pull image/);
  t.deepEqual((await containersOf(FID)).filter((c) => c.Labels['io.corral.task_id'] === cfg.id), []);
  // forcePull pulls even a local image (no registry is reachable here: it fails, bounded, cleanly).
  const forced = task('forced', { command: 'true', forcePull: true });
  await t.throwsAsync(d.startTask(forced), { message: /pull image/ });
  t.deepEqual((await containersOf(FID)).filter((c) => c.Labels['io.corral.task_id'] === forced.id), []);
  ac.abort();
  await sub;
  t.log(`events: ${events.map((e) => `${e.type}: ${e.message}`).join('; ') || 'none'}`);
});

test('stdout/stderr of the container go to stdoutPath/stderrPath', async (t) => {
  const dir = tmpState();
  const cfg = task('logs', { command: 'sh', args: ['-c', 'echo to-out; echo to-err >&2'] }, { stdoutPath: path.join(dir, 'out.log'), stderrPath: path.join(dir, 'err.log') });
  await driver.startTask(cfg);
  await driver.waitTask(cfg.id);
  await eventually(() => fs.existsSync(path.join(dir, 'err.log')) && fs.readFileSync(path.join(dir, 'err.log'), 'utf8').includes('to-err'), 5000);
  await driver.destroyTask(cfg.id);
  t.is(fs.readFileSync(path.join(dir, 'out.log'), 'utf8'), 'to-out\n');
  t.is(fs.readFileSync(path.join(dir, 'err.log'), 'utf8'), 'to-err\n');
});

test('fingerprint: healthy with attributes, re-sent until aborted; unreachable endpoint → undetected', async (t) => {
  const ac = new AbortController();
  const fps = [];
  for await (const fp of driver.fingerprint({ signal: ac.signal, intervalMs: 30 })) {
    fps.push(fp);
    if (fps.length === 3) ac.abort();
  }
  t.is(fps.length, 3);
  t.is(fps[0]!.health, 'healthy');
  t.is(fps[0]!.attributes['driver.docker'], true);
  t.regex(String(fps[0]!.attributes['driver.docker.version']), /^\d+\.\d+/);
  const dead = newDriver({ endpoint: `unix://${path.join(tmpState(), 'no.sock')}` });
  const ac2 = new AbortController();
  for await (const fp of dead.fingerprint({ signal: ac2.signal })) {
    t.is(fp.health, 'undetected');
    t.regex(fp.healthDescription, /ENOENT|not reachable/);
    ac2.abort();
  }
  await t.throwsAsync(dead.startTask(task('dead', { command: 'true' })), { code: 'ERR_DRIVER_UNAVAILABLE' });
  await dead.shutdown();
});

test('agent id: generated once, persisted in the state dir, reused by the next driver', async (t) => {
  const dir = tmpState();
  const a = new DockerDriver({ stateDir: dir, logger: silentLogger, gc: { danglingContainers: { enabled: false } } });
  const b = new DockerDriver({ stateDir: dir, logger: silentLogger, gc: { danglingContainers: { enabled: false } } });
  t.regex(a.agentId, /^[0-9a-f-]{36}$/);
  t.is(b.agentId, a.agentId);
  t.is(fs.readFileSync(path.join(dir, 'agent-id'), 'utf8').trim(), a.agentId);
  await a.shutdown();
  await b.shutdown();
  t.throws(() => new DockerDriver({ stateDir: dir, agentId: 'bad id!' }), { code: 'ERR_INVALID_CONFIG', message: /agentId/ });
  t.throws(() => new DockerDriver({ stateDir: dir, agentId: 'x', endpoint: 'ftp://nope' }), { code: 'ERR_INVALID_CONFIG', message: /endpoint/ });
});

test.serial('recovery from a second Node process via the TaskStore', async (t) => {
  const dir = tmpState();
  const child = path.join(ROOT, 'test', 'helpers', 'docker-child.ts');
  const start = async (taskId: string, ...cmd: string[]) => {
    const { stdout } = await execFileP(process.execPath, ['--import', 'tsx', child, dir, TEST_IMAGE, randomUUID(), FID, taskId, 'svc', ...cmd], { cwd: ROOT, timeout: 60_000 });
    return JSON.parse(stdout.trim().split('\n').pop()!);
  };
  const running = await start('svc-running', 'sleep', '300');
  const exiting = await start('svc-exiting', 'sh', '-c', 'exit 5');
  t.is(running.driver, 'docker');
  await eventually(async () => !(await docker.getContainer(exiting.driverState.containerId).inspect()).State.Running, 10_000);
  // A new agent on the same state dir: same agent id, both tasks recovered.
  const d = new DockerDriver({ stateDir: dir, logger: silentLogger, gc: { image: false, danglingContainers: { enabled: false } } });
  drivers.push(d);
  t.is(d.agentId, fs.readFileSync(path.join(dir, 'agent-id'), 'utf8').trim());
  t.deepEqual([...d.trackedContainers()].sort(), [running.driverState.containerId, exiting.driverState.containerId].sort());
  const res = await d.recoverAll();
  t.deepEqual(res.recovered.sort(), ['svc-exiting', 'svc-running']);
  t.deepEqual(res.failed, []);
  t.is(d.inspectTask('svc-running').state, 'running');
  t.is(d.inspectTask('svc-exiting').state, 'exited');
  t.is(d.inspectTask('svc-exiting').exitResult?.exitCode, 5);
  await d.recoverTask(new TaskStore(dir).get('svc-running')!); // idempotent
  const r = await d.execTask('svc-running', ['echo', 'still here']);
  t.is(r.stdout, 'still here\n');
  await d.stopTask('svc-running', { timeoutMs: 200 });
  t.is((await d.waitTask('svc-running')).exitCode, 137);
  await d.destroyTask('svc-running');
  await d.destroyTask('svc-exiting');
  t.deepEqual(new TaskStore(dir).list().handles, []);
  // A handle whose container is gone is reported and forgotten.
  const gone = await start('svc-gone', 'sleep', '300');
  await docker.getContainer(gone.driverState.containerId).remove({ force: true });
  const err = await t.throwsAsync(d.recoverTask(gone));
  t.regex(err?.message ?? '', /no longer exists/);
  t.is(new TaskStore(dir).get('svc-gone'), undefined);
});

test.serial('image GC: unused image removed after the delay; references rebuilt from the TaskStore (Nomad 26452)', async (t) => {
  const tag = `corral-test/gc-${randomUUID().slice(0, 8)}:v1`;
  const [repo, ver] = tag.split(':') as [string, string];
  await docker.getImage(TEST_IMAGE).tag({ repo, tag: ver });
  extraImages.push(tag);
  const dir = tmpState();
  const gc = { image: true, imageDelayMs: 300, danglingContainers: { enabled: false } };
  const a = newDriver({ stateDir: dir, gc });
  const keep = task('gckeep', { image: tag, command: 'sleep', args: ['300'] });
  await a.startTask(keep);
  await a.shutdown(); // agent "restarts"; the container keeps running
  const b = newDriver({ stateDir: dir, gc });
  const usage = [...b.imageUsage().values()];
  t.deepEqual(usage.map((u) => u.tasks), [[keep.id]], 'stored task counts before its recovery');
  const other = task('gcother', { image: tag, command: 'true' });
  await b.startTask(other);
  await b.waitTask(other.id);
  await b.destroyTask(other.id);
  await new Promise((r) => setTimeout(r, 900));
  t.true(await imageExists(tag), 'image a recovered task uses is kept');
  await b.recoverTask(b.store.get(keep.id)!);
  await b.destroyTask(keep.id, { force: true });
  await eventually(async () => !(await imageExists(tag)), 5000, 100);
  t.true(await imageExists(TEST_IMAGE), 'only the tag the tasks used is removed');
});

async function imageExists(ref: string): Promise<boolean> {
  try { await docker.getImage(ref).inspect(); return true; } catch { return false; }
}

test.serial('shutdown ends every loop, stream and timer; containers keep running', async (t) => {
  const d = newDriver({ gc: { danglingContainers: { enabled: true, periodMs: 60_000 } }, fingerprintIntervalMs: 50 });
  const cfg = task('life', { command: 'sleep', args: ['300'] });
  const h = await d.startTask(cfg);
  const seen = { fp: 0, st: 0 };
  const fp = (async () => { for await (const _ of d.fingerprint({ intervalMs: 20 })) seen.fp++; return seen.fp; })();
  const st = (async () => { for await (const _ of d.taskStats(cfg.id, { intervalMs: 100 })) seen.st++; return seen.st; })();
  const ev = (async () => { let n = 0; for await (const _ of d.taskEvents()) n++; return n; })();
  const wait = d.waitTask(cfg.id);
  // Shut down with every loop running: two fingerprints and a stats sample seen.
  await eventually(() => seen.fp >= 2 && seen.st >= 1, 30_000, 20);
  t.true(d.reconciler.running);
  await d.shutdown();
  t.true((await fp) >= 2);
  t.true((await st) >= 1);
  t.is(await ev, 0);
  await t.throwsAsync(wait, { code: 'ABORT_ERR' });
  t.false(d.reconciler.running);
  await t.throwsAsync(d.startTask(task('after', { command: 'true' })), { code: 'ERR_DRIVER_UNAVAILABLE' });
  const containerId = (h.driverState as { containerId: string }).containerId;
  t.true((await docker.getContainer(containerId).inspect()).State.Running);
  // Timers cleared by the shutdown are gone once the loop has turned.
  await eventually(() => process.getActiveResourcesInfo().every((r) => r !== 'Timeout'), 2000, 10).catch(() => undefined);
  const res = process.getActiveResourcesInfo();
  t.is(res.filter((r) => r === 'Timeout').length, 0, res.join(','));
  // Constructor signal: the same.
  const ac = new AbortController();
  const d2 = newDriver({ signal: ac.signal, gc: { danglingContainers: { enabled: true } } });
  t.true(d2.reconciler.running);
  ac.abort();
  await eventually(() => !d2.reconciler.running, 5000, 10).catch(() => undefined);
  t.false(d2.reconciler.running);
  await docker.getContainer(containerId).remove({ force: true });
});

test('taskDir: alloc, local and secrets are mounted at /alloc, /local, /secrets', async (t) => {
  const taskDir = tmpState();
  const cfg = task('dirs', { command: 'sh', args: ['-c', 'echo a > /alloc/f && echo l > /local/f && echo s > /secrets/f'] }, { taskDir });
  const h = await driver.startTask(cfg);
  t.is((await driver.waitTask(cfg.id)).exitCode, 0);
  for (const sub of ['alloc', 'local', 'secrets']) t.is(fs.readFileSync(path.join(taskDir, sub, 'f'), 'utf8'), `${sub[0]}\n`);
  const info = await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect();
  t.deepEqual(info.Mounts.map((m) => m.Destination).sort(), ['/alloc', '/local', '/secrets']);
  await driver.destroyTask(cfg.id);
});

test('cgroups v2 engine: containers get corral\'s slice as cgroup parent (engine info and a v2 manager injected, create captured)', async (t) => {
  // This host is hybrid (the engine reports cgroup v1, corral runs its v1 manager), so the engine's
  // answer to `info` and the manager are replaced; the create call is captured and refused, which
  // also exercises the clean failure path (the group made for the container is removed).
  const cases = [
    ['systemd', 'corral.slice', () => 'corral-share.slice'],
    ['cgroupfs', 'corral.slice', (g: string) => `/corral.slice/share.slice/${g}.scope`],
    ['systemd', 'other.slice', () => 'other-share.slice'],
  ] as const;
  for (const [cgroupDriver, parentName, expected] of cases) {
    const captured: Array<{ HostConfig?: { CgroupParent?: string; CpusetCpus?: string } }> = [];
    const wrapper = Object.create(docker) as typeof docker;
    wrapper.info = (async () => ({ ...(await docker.info()), CgroupVersion: '2', CgroupDriver: cgroupDriver })) as typeof docker.info;
    wrapper.createContainer = (async (o: { HostConfig?: { CgroupParent?: string } }) => {
      captured.push(o);
      throw Object.assign(new Error('injected: create refused'), { statusCode: 500 });
    }) as unknown as typeof docker.createContainer;
    const made: string[] = [];
    const removed: string[] = [];
    const mgr = {
      version: 'v2', parentName, sharedCores: () => [0],
      createAsync: async (allocId: string, name: string) => {
        made.push(`${allocId}-${name}`);
        return { name: `${allocId}-${name}`, destroy: async () => { removed.push(`${allocId}-${name}`); } };
      },
    } as unknown as CgroupManager;
    const d = newDriver({ docker: wrapper, cgroupManager: mgr });
    const cfg = task('v2', { command: 'true' });
    await t.throwsAsync(d.startTask(cfg), { code: 'ERR_DOCKER', message: /injected/ });
    const g = `${cfg.allocId}-v2`;
    t.is(captured[0]?.HostConfig?.CgroupParent, expected(g));
    // Inside its group the container follows the pool; outside (systemd) it gets the pool as CpusetCpus.
    t.is(captured[0]?.HostConfig?.CpusetCpus, cgroupDriver === 'systemd' ? '0' : undefined);
    t.deepEqual(made, cgroupDriver === 'systemd' ? [] : [g]);
    t.deepEqual(removed, made, 'the failed start removes the group it made');
    t.throws(() => d.inspectTask(cfg.id), { code: 'ERR_TASK_NOT_FOUND' });
    t.deepEqual(d.imageUsage().get([...d.imageUsage().keys()][0] ?? '')?.tasks ?? [], []);
  }
  // On the real (v1) engine no cgroup parent is set.
  const cfg = task('v1', { command: 'true' });
  const h = await driver.startTask(cfg);
  const info = await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect();
  t.is(info.HostConfig.CgroupParent, '');
  await driver.waitTask(cfg.id);
  await driver.destroyTask(cfg.id);
});

test.serial('pull from a registry: progress events (image-pull), forcePull, and the pull timeout', async (t) => {
  const reg = await startRegistry();
  const ref = reg.ref('corral-test/pulled', `t${randomUUID().slice(0, 8)}`);
  extraImages.push(ref);
  try {
    const d = newDriver({ pullTimeoutMs: 30_000 });
    const events: TaskEvent[] = [];
    const ac = new AbortController();
    const sub = (async () => { for await (const e of d.taskEvents({ signal: ac.signal })) events.push(e); })();
    const cfg = task('pulled', { image: ref, command: 'echo', args: ['pulled ok'] });
    await d.startTask(cfg);
    t.is((await d.waitTask(cfg.id)).exitCode, 0);
    await d.destroyTask(cfg.id);
    ac.abort();
    await sub;
    const pulls = events.filter((e) => e.type === 'image-pull' && e.taskId === cfg.id);
    t.true(pulls.length >= 2, pulls.map((e) => e.message).join('; '));
    t.true(pulls.some((e) => /Pulling from|Pull complete|Downloaded newer image/.test(e.message)), pulls.map((e) => e.message).join('; '));
    t.true(reg.requests.some((r) => r.includes('/manifests/')));
    // Now local: used as is (no registry request) unless forcePull.
    const n = reg.requests.length;
    const local = task('local', { image: ref, command: 'true' });
    await d.startTask(local);
    await d.waitTask(local.id);
    await d.destroyTask(local.id);
    t.is(reg.requests.length, n, 'a local image is not pulled again');
    const forced = task('forced', { image: ref, command: 'true', forcePull: true });
    await d.startTask(forced);
    await d.waitTask(forced.id);
    await d.destroyTask(forced.id);
    t.true(reg.requests.length > n, 'forcePull asks the registry');
    // A registry that never answers: the pull is bounded by pullTimeoutMs, nothing is left.
    reg.hang = true;
    const slow = newDriver({ pullTimeoutMs: 1000 });
    const hung = task('hung', { image: reg.ref('corral-test/never', 'v1'), command: 'true' });
    const t0 = Date.now();
    await t.throwsAsync(slow.startTask(hung), { code: 'ERR_DOCKER_TIMEOUT', message: /pull image/ });
    t.true(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
    t.deepEqual((await containersOf(FID)).filter((c) => c.Labels['io.corral.task_id'] === hung.id), []);
  } finally {
    await reg.close();
  }
});
