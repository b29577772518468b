/**
 * A second agent process for recovery tests: starts one docker task with a fresh DockerDriver on the
 * given state dir, prints its handle as JSON on stdout, shuts the driver down and exits (the
 * container keeps running).
 * argv: <stateDir> <image> <allocId> <fileLabelValue> <taskId> <taskName> <cmd...>
 */
import { DockerDriver } from '../../src/drivers/docker/index.js';
import { silentLogger } from '../../src/util/logger.js';

async function main(): Promise<void> {
  const [stateDir, image, allocId, fileLabel, taskId, taskName, ...cmd] = process.argv.slice(2);
  const d = new DockerDriver({ stateDir: stateDir!, gc: { image: false, danglingContainers: { enabled: false } }, logger: silentLogger });
  try {
    const h = await d.startTask({
      id: taskId!, allocId: allocId!, name: taskName!,
      driver: { image: image!, command: cmd[0]!, args: cmd.slice(1), networkMode: 'none', labels: { 'corral-test.file': fileLabel! } },
    });
    process.stdout.write(JSON.stringify(h) + '\n');
  } finally {
    await d.shutdown();
  }
}

main().then(() => process.exit(0), (err) => { process.stderr.write(`docker-child: ${(err as Error).stack ?? err}\n`); process.exit(1); });
