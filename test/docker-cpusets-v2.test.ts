/**
 * Docker containers in corral's cpuset partition on a cgroups-v2-only kernel with a real dockerd on the
 * cgroupfs cgroup driver: the v2 lane runs this file in scripts/v2vm's guest, with a dockerd of the
 * guest's own (scripts/v2vm/guest-docker.sh; `npm run test:v2 -- test/docker-cpusets-v2.test.ts`).
 * What docker-cpusets.test.ts checks as a mapping over `docker info` shapes, here on the kernel:
 *   - a shared container runs inside its group in `<parent>/share.slice`, a reserved one inside its
 *     group in `<parent>/reserve.slice` (its process's /proc/<pid>/cgroup);
 *   - the reserved one runs on exactly its cores, the shared one on none of them, and the shared one
 *     follows the pool when the reservation begins and when it ends (cpuset.cpus.effective of the
 *     container's cgroup and the process's Cpus_allowed_list);
 *   - a new agent recovering the tasks finds the reservation again (the group holds the container's
 *     cgroup, not processes), and destroys them through it;
 *   - once the tasks are destroyed no container, container cgroup or task group is left.
 * Elsewhere (a hybrid or v1 host, no dockerd, an engine on the systemd driver) each test logs why it
 * skips and passes; in the lane (CORRAL_TEST_DOCKER=required) a reason to skip fails the test instead,
 * since the lane started the dockerd for it.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createCgroupManager } from '../src/cgroups/factory.js';
import { formatCpuList } from '../src/cgroups/cpulist.js';
import type { CgroupLayout, CgroupManager } from '../src/cgroups/types.js';
import type { TaskConfig } from '../src/drivers/contract.js';
import { DockerDriver } from '../src/drivers/docker/index.js';
import { silentLogger } from '../src/util/logger.js';
import { cpusAllowed, groupDirsUnder, newAllocId, procCgroups, v2CpusetHost, waitFor } from './helpers/cgroups.js';
import { TEST_IMAGE, docker, exists, randomUUID } from './helpers/docker.js';
import { type Sandbox, bound, sandbox, within } from './helpers/sandbox.js';

const REQUIRED = process.env.CORRAL_TEST_DOCKER === 'required';

/** Why this host cannot show the v2 placement (undefined: it can), with its layout. */
async function whyNot(): Promise<{ reason?: string; layout?: CgroupLayout }> {
  const host = v2CpusetHost();
  if (!host.layout) return { reason: host.reason! };
  const layout = host.layout;
  let info: { CgroupVersion?: string; CgroupDriver?: string };
  try {
    await within(docker.ping(), 10_000, 'docker ping');
    info = await within(docker.info() as Promise<typeof info>, 30_000, 'docker info');
  } catch (err) {
    return { reason: `no dockerd answers on /var/run/docker.sock: ${(err as Error).message}` };
  }
  if (String(info.CgroupVersion) !== '2') return { reason: `dockerd runs containers on cgroup v${info.CgroupVersion ?? '1'}` };
  // systemd places the container itself (a slice name as parent, beside corral's slices): not this file's layout.
  if (info.CgroupDriver !== 'cgroupfs') return { reason: `dockerd uses the ${info.CgroupDriver} cgroup driver; this file checks the cgroupfs placement` };
  try {
    await within(docker.getImage(TEST_IMAGE).inspect(), 30_000, 'image inspect');
  } catch {
    return { reason: `no ${TEST_IMAGE} image in this dockerd (scripts/build-test-image.sh)` };
  }
  return { layout };
}

const probe = whyNot();

interface Ctx {
  sb: Sandbox;
  usable: number[];
  /** A manager of the test's parent, as another corral process would open it (same lock dir). */
  manager(): CgroupManager;
  /** A driver on the test's state dir and parent; shut down at teardown. */
  driver(mgr: CgroupManager): DockerDriver;
}

function v2test(title: string, fn: (t: ExecutionContext, c: Ctx) => Promise<void>): void {
  test.serial(title, async (t) => {
    const sb = sandbox(t, 'dockerv2');
    const { reason, layout } = await probe;
    if (reason) {
      if (REQUIRED) { t.fail(`the v2 lane started a dockerd for this file, but: ${reason}`); return; }
      t.log(`skipped: ${reason}`); t.pass(); return;
    }
    const manager = () => createCgroupManager({ layout: layout!, parentName: sb.slice, lockDir: sb.stateDir });
    const usable = manager().usableCores();
    if (usable.length < 2) {
      if (REQUIRED) { t.fail(`needs 2 usable cores, has ${formatCpuList(usable)}`); return; }
      t.log(`skipped: needs 2 usable cores, has ${formatCpuList(usable)}`); t.pass(); return;
    }
    const driver = (mgr: CgroupManager) => {
      const d = new DockerDriver({
        stateDir: sb.stateDir, agentId: `agent-${sb.name}`, logger: silentLogger, callTimeoutMs: bound(30_000),
        cgroupParent: sb.slice, cgroupManager: mgr, gc: { image: false, danglingContainers: { enabled: false } },
      });
      sb.defer(() => d.shutdown());
      return d;
    };
    await fn(t, { sb, usable, manager, driver });
  });
}

function task(sb: Sandbox, name: string, cores?: number[]): TaskConfig<any> {
  return {
    id: `${name}-${randomUUID().slice(0, 8)}`, allocId: newAllocId(), name,
    ...(cores ? { resources: { cores } } : {}),
    driver: { image: TEST_IMAGE, command: 'sleep', args: ['600'], networkMode: 'none', labels: sb.labels },
  };
}

/** A running container as the kernel sees it: its process, that process's cgroup (v2 path) and the cgroup's cpus. */
async function container(id: string): Promise<{ pid: number; cgroup: string; effective: () => string; allowed: () => string }> {
  const info = await docker.getContainer(id).inspect();
  const pid = info.State.Pid;
  const cgroup = procCgroups(pid)['']!;
  return {
    pid, cgroup,
    effective: () => fs.readFileSync(path.join('/sys/fs/cgroup', cgroup, 'cpuset.cpus.effective'), 'utf8').trim(),
    allowed: () => cpusAllowed(pid),
  };
}

/** Directories under the parent other than corral's two slices: groups, container cgroups. */
function dirsUnder(slice: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = path.join(d, e.name);
      out.push(path.relative(path.join('/sys/fs/cgroup', slice), p));
      walk(p);
    }
  };
  walk(path.join('/sys/fs/cgroup', slice));
  return out.filter((d) => d !== 'share.slice' && d !== 'reserve.slice');
}

v2test('a shared and a reserved container: in share.slice and reserve.slice, on the pool and on their cores; the shared one follows the reservation; still so after recovery; nothing left once destroyed', async (t, { sb, usable, manager, driver: newDriver }) => {
  let mgr = manager();
  let driver = newDriver(mgr);
  const core = usable[usable.length - 1]!;
  const all = formatCpuList(usable);
  const rest = formatCpuList(usable.filter((c) => c !== core));

  const shared = task(sb, 'shared');
  const hs = await driver.startTask(shared);
  const sid = (hs.driverState as { containerId: string }).containerId;
  const sgroup = `${shared.allocId}-shared`;
  t.is((await docker.getContainer(sid).inspect()).HostConfig.CgroupParent, `/${sb.slice}/share.slice/${sgroup}.scope`);
  const s = await container(sid);
  t.is(s.cgroup, `/${sb.slice}/share.slice/${sgroup}.scope/${sid}`, 'the shared container\'s process is in its group in share.slice');
  t.is(s.effective(), all);
  t.is(s.allowed(), all);

  const reserved = task(sb, 'pinned', [core]);
  const hr = await driver.startTask(reserved);
  const rid = (hr.driverState as { containerId: string }).containerId;
  const rgroup = `${reserved.allocId}-pinned`;
  t.is((hr.driverState as { cgroup?: string }).cgroup, rgroup);
  t.is((await docker.getContainer(rid).inspect()).HostConfig.CgroupParent, `/${sb.slice}/reserve.slice/${rgroup}.scope`);
  const r = await container(rid);
  t.is(r.cgroup, `/${sb.slice}/reserve.slice/${rgroup}.scope/${rid}`, 'the reserved container\'s process is in its group in reserve.slice');
  t.is(r.effective(), String(core));
  t.is(r.allowed(), String(core));
  t.deepEqual(mgr.sharedCores(), usable.filter((c) => c !== core));
  // The kernel propagates the pool's new cpus down to the running container: waited for, bounded.
  await waitFor(() => s.effective() === rest && s.allowed() === rest, { what: `the shared container on ${rest}`, timeoutMs: 5000 });

  // A new agent (a fresh manager reading the partition from the tree) takes both tasks over: the
  // reserved group, holding a container's cgroup rather than processes, is found again and still counts.
  await driver.shutdown();
  mgr = manager();
  driver = newDriver(mgr);
  for (const c of [shared, reserved]) await driver.recoverTask(driver.store.get(c.id)!, { force: true });
  t.is(driver.inspectTask(reserved.id).state, 'running');
  t.deepEqual(mgr.sharedCores(), usable.filter((c) => c !== core), 'the recovered reservation holds its core');

  // The reservation ends with its task: stopped first (the core stays held), then destroyed.
  await driver.stopTask(reserved.id, { signal: 'SIGKILL', timeoutMs: bound(5000) });
  t.deepEqual(mgr.sharedCores(), usable.filter((c) => c !== core), 'a stopped task still holds its cores');
  await driver.destroyTask(reserved.id, { force: true });
  t.false(await exists(rid));
  t.false(fs.existsSync(path.join('/sys/fs/cgroup', sb.slice, 'reserve.slice', `${rgroup}.scope`)));
  t.deepEqual(mgr.sharedCores(), usable);
  await waitFor(() => s.effective() === all && s.allowed() === all, { what: `the shared container back on ${all}`, timeoutMs: 5000 });

  await driver.destroyTask(shared.id, { force: true });
  t.false(await exists(sid));
  t.deepEqual(dirsUnder(sb.slice), [], 'no group or container cgroup under the parent');
  t.deepEqual(groupDirsUnder(sb.slice), []);
  t.deepEqual(await docker.listContainers({ all: true, filters: { label: [`corral-test.file=${sb.name}`] } }), []);
});
