// A container through the docker driver. Needs dockerd and the local test image: bash scripts/docker-up.sh
// Run as root: node --import tsx examples/docker.ts
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DockerDriver } from '../src/index.js';

async function main(): Promise<void> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-example-'));
  // On cgroups v2 containers go under cgroupParent (default corral.slice); the test suite uses a parent of its own.
  const parent = process.env.CORRAL_EXAMPLE_PARENT;
  const driver = new DockerDriver({ stateDir, gc: { danglingContainers: { enabled: false } }, ...(parent ? { cgroupParent: `${parent}.slice` } : {}) });
  await driver.startTask({
    id: 'hello', allocId: randomUUID(), name: 'hello', resources: { memoryBytes: 64 << 20 },
    driver: { image: 'corral-test/busybox:latest', command: 'sh', args: ['-c', 'echo hello; sleep 30'], networkMode: 'none' },
  });
  console.log(await driver.execTask('hello', ['echo', 'from exec'], { timeoutMs: 10_000 }));
  await driver.stopTask('hello', { timeoutMs: 2000 });   // SIGTERM, then SIGKILL after 2 s
  console.log(await driver.waitTask('hello'));            // { exitCode: 137, signal: 9, oomKilled: false }
  await driver.destroyTask('hello', { force: true });
  await driver.shutdown();
  fs.rmSync(stateDir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
