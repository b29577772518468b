/**
 * Docker containers in corral's cpuset partition. The CgroupParent mapping as a unit over `docker
 * info` shapes (v2 cgroupfs / systemd, v1, hybrid); on the host's real dockerd: the parent a
 * container gets here, and a reserved container's cores held in the same partition (host lock,
 * tree) as raw_exec's: no overlap with another reservation either way, the share pool without them,
 * nothing left behind by a refused start.
 */
import test from 'ava';
import { createCgroupManager } from '../src/cgroups/factory.js';
import type { CgroupManager } from '../src/cgroups/types.js';
import { DockerDriver } from '../src/drivers/docker/index.js';
import { RawExecDriver } from '../src/drivers/raw_exec/index.js';
import { containerPlacement } from '../src/drivers/docker/cpusets.js';
import type { TaskConfig } from '../src/drivers/contract.js';
import { CpusetConflictError } from '../src/errors.js';
import { silentLogger } from '../src/util/logger.js';
import { cpusAllowed, groupDirsUnder, hostLayout, isRoot, newAllocId } from './helpers/cgroups.js';
import { TEST_IMAGE, docker, ensureDockerUp, randomUUID } from './helpers/docker.js';
import { bound, sandbox } from './helpers/sandbox.js';

const G = '0b5e3a5c-1111-4222-8333-444455556666-web';

test('v2 host, cgroupfs engine: the container goes inside its group in share.slice or reserve.slice', (t) => {
  const engine = { cgroupVersion: '2', cgroupDriver: 'cgroupfs' };
  t.deepEqual(containerPlacement({ layoutVersion: 'v2', engine, parentName: 'corral.slice', group: G, reserved: false }),
    { cgroupParent: `/corral.slice/share.slice/${G}.scope`, inGroup: true });
  t.deepEqual(containerPlacement({ layoutVersion: 'v2', engine, parentName: 'corral.slice', group: G, reserved: true }),
    { cgroupParent: `/corral.slice/reserve.slice/${G}.scope`, inGroup: true });
  t.deepEqual(containerPlacement({ layoutVersion: 'v2', engine, parentName: 'ci/corral.slice', group: G, reserved: false }),
    { cgroupParent: `/ci/corral.slice/share.slice/${G}.scope`, inGroup: true });
});

test('v2 host, systemd engine: a slice name (corral-share.slice / corral-reserve.slice), cores as CpusetCpus', (t) => {
  const engine = { cgroupVersion: '2', cgroupDriver: 'systemd' };
  t.deepEqual(containerPlacement({ layoutVersion: 'v2', engine, parentName: 'corral.slice', group: G, reserved: false }),
    { cgroupParent: 'corral-share.slice', inGroup: false });
  t.deepEqual(containerPlacement({ layoutVersion: 'v2', engine, parentName: 'corral.slice', group: G, reserved: true }),
    { cgroupParent: 'corral-reserve.slice', inGroup: false });
});

test('v1 and hybrid hosts (engine cgroup version 1), or a layout that disagrees with the engine: docker keeps its own parent', (t) => {
  for (const [layoutVersion, cgroupVersion, cgroupDriver] of [['v1', '1', 'cgroupfs'], ['v1', '1', 'systemd'], ['v1', '2', 'cgroupfs'], ['v2', '1', 'cgroupfs']] as const) {
    t.deepEqual(containerPlacement({ layoutVersion, engine: { cgroupVersion, cgroupDriver }, parentName: 'corral.slice', group: G, reserved: true }), { inGroup: false });
  }
});

// ---- the host's dockerd ----------------------------------------------------------------------

function hostSkip(mgr: CgroupManager | undefined): string | undefined {
  if (!isRoot || !mgr) return 'not root';
  if (!mgr.controllers().includes('cpuset')) return `no cpuset controller for the ${mgr.version} manager here`;
  if (mgr.usableCores().length < 2) return 'needs 2 usable cores';
  return undefined;
}

function task(name: string, labels: Record<string, string>, cores?: number[]): TaskConfig<any> {
  return {
    id: `${name}-${randomUUID().slice(0, 8)}`, allocId: newAllocId(), name,
    ...(cores ? { resources: { cores } } : {}),
    driver: { image: TEST_IMAGE, command: 'sleep', args: ['300'], networkMode: 'none', labels },
  };
}

test.serial('host dockerd: the parent it gets here; reserved cores held in the partition, never handed out twice', async (t) => {
  const sb = sandbox(t, 'dockercpuset');
  await ensureDockerUp();
  const layout = isRoot ? hostLayout() : undefined;
  const parent = layout ? sb.parentFor(layout.version) : sb.parent;
  const mgr = layout ? createCgroupManager({ layout, parentName: parent, lockDir: sb.stateDir }) : undefined;
  const skip = hostSkip(mgr);
  if (skip) { t.log(`skipped: ${skip}`); t.pass(); return; }
  const driver = new DockerDriver({
    stateDir: sb.stateDir, agentId: `agent-${sb.name}`, logger: silentLogger, callTimeoutMs: bound(60_000), cgroupManager: mgr!,
    gc: { image: false, danglingContainers: { enabled: false } },
  });
  sb.defer(() => driver.shutdown());
  const usable = mgr!.usableCores();
  const core = usable[usable.length - 1]!;
  const rest = usable.filter((c) => c !== core);
  const info = await docker.info() as { CgroupVersion?: string; CgroupDriver?: string };
  const engine = { cgroupVersion: String(info.CgroupVersion ?? '1'), cgroupDriver: String(info.CgroupDriver ?? 'cgroupfs') };
  t.log(`engine: cgroup v${engine.cgroupVersion}, ${engine.cgroupDriver} driver; corral layout ${layout!.mode} (${mgr!.version} manager)`);

  const reserved = task('pinned', sb.labels, [core]);
  const h = await driver.startTask(reserved);
  const ci = await docker.getContainer((h.driverState as { containerId: string }).containerId).inspect();
  const expected = containerPlacement({ layoutVersion: mgr!.version, engine, parentName: parent, group: `${reserved.allocId}-pinned`, reserved: true });
  t.is(ci.HostConfig.CgroupParent ?? '', expected.cgroupParent ?? '', 'the CgroupParent the mapping gives for this host');
  t.log(`CgroupParent here: ${JSON.stringify(ci.HostConfig.CgroupParent)}`);
  t.is(ci.HostConfig.CpusetCpus, String(core));
  t.is(cpusAllowed(ci.State.Pid), String(core));
  t.is((h.driverState as { cgroup?: string }).cgroup, `${reserved.allocId}-pinned`);
  t.deepEqual(mgr!.sharedCores(), rest, 'the share pool drops the container\'s core');

  // Another reservation of that core, through the manager (raw_exec's way) or a second container: refused, naming the holder.
  const e1 = t.throws(() => mgr!.create(newAllocId(), 'raw', { resources: { cores: [core] } }));
  t.true(e1 instanceof CpusetConflictError, String(e1));
  t.is((e1 as CpusetConflictError).heldBy, `${reserved.allocId}-pinned`);
  const second = task('second', sb.labels, [core]);
  const e2 = await t.throwsAsync(driver.startTask(second));
  t.true(e2 instanceof CpusetConflictError, String(e2));
  t.deepEqual(groupDirsUnder(parent).filter((d) => d.includes(second.allocId)), [], 'a refused start leaves no group');
  t.deepEqual((await docker.listContainers({ all: true, filters: { label: [`io.corral.task_id=${second.id}`] } })).length, 0, 'nor a container');

  // raw_exec's recovery on the same state dir and parent leaves the docker task's group (it names no
  // raw_exec record, and on v1 it holds no process) and so its reservation.
  // (Its own manager, as another process would have: the docker driver's knows the group in memory.)
  const raw = new RawExecDriver({ stateDir: sb.stateDir, cgroupManager: createCgroupManager({ layout: layout!, parentName: parent, lockDir: sb.stateDir }) });
  sb.defer(() => raw.shutdown());
  const rec = await raw.recoverAll();
  t.false(rec.staleRemoved.includes(`${reserved.allocId}-pinned`), JSON.stringify(rec.staleRemoved));
  t.deepEqual(mgr!.sharedCores(), rest, 'the reservation survives raw_exec\'s clean-up of stale groups');

  // A shared container started now runs on the share pool, off the reserved core.
  const shared = task('shared', sb.labels);
  const hs = await driver.startTask(shared);
  const cs = await docker.getContainer((hs.driverState as { containerId: string }).containerId).inspect();
  t.is(cpusAllowed(cs.State.Pid), rest.join(','));

  // The reservation ends with the task: the core is back in the pool, the group is gone.
  await driver.destroyTask(reserved.id, { force: true });
  t.deepEqual(mgr!.sharedCores(), usable);
  t.deepEqual(groupDirsUnder(parent).filter((d) => d.includes(reserved.allocId)), []);
  await driver.destroyTask(shared.id, { force: true });
});
