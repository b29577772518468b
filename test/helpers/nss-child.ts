/**
 * Child of test/users-nss.test.ts, run inside a mount namespace whose /etc/nsswitch.conf lists the
 * test's NSS module: prints what corral finds for a user that exists only there.
 */
import { native } from '../../src/native.js';

async function main(): Promise<void> {
  const n = native();
  const viaWorker = await new Promise((resolve, reject) => n.lookupUser('corral-nss-user', (err, u) => (err ? reject(err) : resolve(u))));
  const out: Record<string, unknown> = {
    viaWorker,
    byUid: n.lookupUserSync(47110),
    group: n.lookupGroupSync('corral-nss-extra'),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`nss-child: ${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
