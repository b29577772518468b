/**
 * Helpers for tests against the real dockerd: bring it up (scripts/docker-up.sh), the local test
 * image, containers created directly (for reconciler scenarios) and cleanup by label.
 * Every container a test file creates carries `corral-test.file=<fileId>` so after.always can find
 * and remove them all, also on failure.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import Docker from 'dockerode';
import { bound, uniqueName } from './names.js';
import { setContainerSweeper } from './sandbox.js';

export const TEST_IMAGE = process.env.CORRAL_TEST_IMAGE ?? 'corral-test/busybox:latest';
export const FILE_LABEL = 'corral-test.file';
const ROOT = path.resolve(__dirname, '..', '..');

export const docker = new Docker({ socketPath: '/var/run/docker.sock' });

/** Starts dockerd and builds the test image if needed (fast when both are there). */
export async function ensureDockerUp(): Promise<void> {
  try {
    await docker.ping();
    await docker.getImage(TEST_IMAGE).inspect();
    return;
  } catch {
    execFileSync('bash', [path.join(ROOT, 'scripts', 'docker-up.sh')], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000 });
  }
}

/**
 * A unique id for one test file (label value and agent id material): `corral-test-<run>-<name>-...`,
 * so scripts/check-leftovers.sh finds this run's containers by their corral-test.file label.
 */
export function fileId(name: string): string {
  return uniqueName(name);
}

export interface RawContainerOptions {
  fileId: string;
  name?: string;
  labels?: Record<string, string>;
  cmd?: string[];
  /** Anonymous volumes (container paths), e.g. ['/alloc', '/local', '/secrets']. */
  volumes?: string[];
  start?: boolean;
}

/** Creates (and by default starts) a container straight through dockerode. */
export async function createRawContainer(o: RawContainerOptions): Promise<Docker.Container> {
  const vols: Record<string, object> = {};
  for (const v of o.volumes ?? []) vols[v] = {};
  const c = await docker.createContainer({
    Image: TEST_IMAGE,
    name: o.name,
    Cmd: o.cmd ?? ['sleep', '300'],
    Labels: { ...(o.labels ?? {}), [FILE_LABEL]: o.fileId },
    Volumes: vols,
    HostConfig: { NetworkMode: 'none' },
  });
  if (o.start ?? true) await c.start();
  return c;
}

/** IDs of every container (any state) of a test file. */
export async function containersOf(fid: string, running = false): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: !running, filters: { label: [`${FILE_LABEL}=${fid}`] } });
}

/** Removes every container of a test file (force, with anonymous volumes). Never throws. */
export async function removeContainersOf(fid: string): Promise<number> {
  let n = 0;
  try {
    for (const c of await containersOf(fid)) {
      try {
        await docker.getContainer(c.Id).remove({ force: true, v: true });
        n++;
      } catch { /* already gone */ }
    }
  } catch { /* dockerd down: nothing to do here */ }
  return n;
}

/** Removes every container carrying label key=value (e.g. io.corral.agent_id=<id>). Never throws. */
export async function removeContainersWithLabel(key: string, value: string): Promise<number> {
  let n = 0;
  try {
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${key}=${value}`] } })) {
      try {
        await docker.getContainer(c.Id).remove({ force: true, v: true });
        n++;
      } catch { /* already gone */ }
    }
  } catch { /* dockerd down */ }
  return n;
}

/** Removes containers by id (force, with anonymous volumes). Never throws. */
export async function removeContainers(ids: string[]): Promise<number> {
  let n = 0;
  for (const id of ids) {
    try {
      await docker.getContainer(id).remove({ force: true, v: true });
      n++;
    } catch { /* already gone, or dockerd down */ }
  }
  return n;
}

// sandbox(t) removes the containers carrying its labels, and those recorded in its state dir, at
// teardown in files that use docker.
setContainerSweeper(removeContainersWithLabel, removeContainers);

export async function exists(id: string): Promise<boolean> {
  try {
    await docker.getContainer(id).inspect();
    return true;
  } catch {
    return false;
  }
}

/** Waits until `cond` holds, polling; throws after `ms` (an idle-host bound, stretched by CORRAL_TEST_SLOWDOWN). */
export async function eventually(cond: () => boolean | Promise<boolean>, ms = 10_000, stepMs = 50): Promise<void> {
  ms = bound(ms);
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Active handles other than stdio and the ones ava itself holds. */
export function activeTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

export { randomUUID };
