// The cgroups layer on its own: a group with limits, a process started inside it, a whole-group kill.
// Run as root: node --import tsx examples/cgroups.ts
import { randomUUID } from 'node:crypto';
import { createCgroupManager } from '../src/index.js';
// The raw addon is not part of the library's surface; it has its own entry point (corral/native).
import { spawnProcess } from '../src/native.js';

async function main(): Promise<void> {
  // The default parent is corral (v1) / corral.slice (v2); the test suite runs this under a parent of its own.
  const parentName = process.env.CORRAL_EXAMPLE_PARENT;
  const mgr = createCgroupManager(parentName ? { parentName } : {}); // or { version: 'v2' } for the unified mount of a hybrid host
  console.log(mgr.fingerprint());             // { 'unique.cgroups.version': 'v1', 'cgroups.mode': 'hybrid', ... }
  // mkdirs and limit writes on the libuv pool (create() is the synchronous variant).
  const group = await mgr.createAsync(randomUUID(), 'demo', { resources: { cpuShares: 512, pidsMax: 128 } });
  // Already inside its group before its first instruction: clone3 into the v2 dir, or a join of each v1 controller.
  // Spawned off the event loop, bounded (timeoutMs); the ProcessHandle owns the child's pidfd.
  const child = await spawnProcess({
    file: '/bin/sh', argv: ['sh', '-c', 'setsid sleep 60 & sleep 60 & sleep 60'], envp: [], stdio: [-1, 1, 2], setsid: true, timeoutMs: 10_000,
    ...group.placement,
  });
  const exited = new Promise((resolve) => child.process.watch(true, resolve));
  while (group.pids().length < 4) await new Promise((r) => setTimeout(r, 10));
  console.log('pids in the group:', group.pids());
  console.log('kill:', await group.kill());   // freeze → SIGKILL all → thaw, or cgroup.kill; waits until empty
  console.log('main process:', await exited); // { exitCode: null, signal: 9, reaped: true, ... }
  await group.destroy();                      // rmdir (EBUSY retried), reserved cores released
  await mgr.removeParentIfEmpty();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
