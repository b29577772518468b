// A task on the host in its own cgroup: start, measure, exec inside, stop gracefully, clean up.
// Run as root: node --import tsx examples/raw-exec.ts
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RawExecDriver } from '../src/index.js';

async function main(): Promise<void> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-example-'));
  // cgroupParent: default corral (v1) / corral.slice (v2); the test suite runs this under a parent of its own.
  const driver = new RawExecDriver({ stateDir, cgroupParent: process.env.CORRAL_EXAMPLE_PARENT, deniedEnvvars: ['*_TOKEN', 'AWS_*'] });
  const allocId = randomUUID();
  const id = `${allocId}-web`;

  await driver.startTask({
    id, allocId, name: 'web',
    env: { PATH: '/usr/bin:/bin', GREETING: 'hello', GITHUB_TOKEN: 'kept out by deniedEnvvars' },
    stdoutPath: path.join(stateDir, 'web.out'),                 // appended; FIFOs work too
    resources: { memoryBytes: 256 << 20, cpuShares: 512, pidsMax: 100 },
    driver: { command: 'sh', args: ['-c', 'trap "echo bye; exit 0" INT; echo $GREETING; while :; do sleep 0.1; done'], workDir: '/tmp' },
  });
  for await (const s of driver.taskStats(id, { intervalMs: 200, signal: AbortSignal.timeout(700) })) {
    console.log(`cpu ${s.cpu.percent.toFixed(1)}%  memory ${s.memory.usageBytes} bytes`);
  }
  const ex = await driver.execTask(id, ['sh', '-c', "grep -E ':(freezer)?:/.' /proc/self/cgroup"], { timeoutMs: 5000 });
  console.log('exec inside the task\'s cgroup:', ex.stdout.trim());
  await driver.stopTask(id, { signal: 'SIGINT', timeoutMs: 5000 });   // the signal, then a group kill after 5 s
  console.log('exit:', await driver.waitTask(id));                   // { exitCode: 0, signal: null, oomKilled: false }
  console.log('output:', fs.readFileSync(path.join(stateDir, 'web.out'), 'utf8').trim().split('\n'));
  await driver.destroyTask(id);                                        // removes the cgroup and the state file
  await driver.shutdown();                                             // ends timers and streams; never kills running tasks
  fs.rmSync(stateDir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
