/**
 * Child of test/users-nss.test.ts, run inside a mount namespace whose /etc/nsswitch.conf lists the
 * test's NSS module: prints what corral finds for a user that exists only there.
 */
import { native } from '../../src/native.js';
import { lookupUser } from '../../src/drivers/raw_exec/users.js';
import { run } from '../../src/run.js';

async function main(): Promise<void> {
  const n = native();
  const viaWorker = await new Promise((resolve, reject) => n.lookupUser('corral-nss-user', (err, u) => (err ? reject(err) : resolve(u))));
  const out: Record<string, unknown> = {
    viaWorker,
    byUid: n.lookupUserSync(47110),
    group: n.lookupGroupSync('corral-nss-extra'),
    // What the raw_exec driver resolves, and a task run as that user (ids printed numerically: the
    // task's own environment has no LD_LIBRARY_PATH to find the NSS module).
    driverUser: await lookupUser('corral-nss-user'),
    driverUserGroup: await lookupUser('corral-nss-user:corral-nss-extra'),
  };
  const parent = process.env.CORRAL_NSS_TEST_PARENT;
  if (parent) {
    const r = await run('sh', ['-c', 'id -u; id -g; id -G'], { user: 'corral-nss-user', cgroupParent: parent, cwd: '/', extendEnv: false });
    out.task = { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`nss-child: ${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
