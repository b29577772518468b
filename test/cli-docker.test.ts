/**
 * The CLI with the docker driver, end to end (real dockerd): an image pull shows its progress on a
 * terminal and nothing otherwise; ps shows a container's real state; stop acts on a docker task of
 * another corral run; a pipeline runs through a container (its stdin is corral's, EOF included).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { isRoot } from './helpers/cgroups.js';
import { TEST_IMAGE, docker, ensureDockerUp } from './helpers/docker.js';
import { startRegistry } from './helpers/docker-registry.js';
import { sandbox } from './helpers/sandbox.js';
import { CORRAL, corral, onPty, runCorral, shell, taskFiles } from './helpers/cli.js';

function dockerReachable(): boolean {
  try {
    execFileSync('docker', ['version'], { stdio: 'ignore', timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}
const t = isRoot && dockerReachable() ? test.serial : test.skip;

test.before(async () => { if (isRoot && dockerReachable()) await ensureDockerUp(); });

t('an image pull: one progress line updated in place on a terminal, nothing when stderr is not a terminal', async (tt) => {
  const sb = sandbox(tt, 'cli-pull');
  const reg = await startRegistry();
  sb.defer(() => reg.close());
  const repo = `corral-test-pull-${randomBytes(4).toString('hex')}`;
  const refs = [reg.ref(repo, 'a'), reg.ref(repo, 'b')];
  sb.defer(async () => { for (const r of refs) await docker.getImage(r).remove({ force: true }).catch(() => {}); });
  const onTerm = await onPty(['run', '--driver', 'docker', '--image', refs[0]!, '--state-dir', sb.stateDir, 'sh', '-c', 'echo ran-after-pull'], []);
  tt.is(onTerm.code, 0, onTerm.output);
  tt.regex(onTerm.output, /\r\x1b\[Kpulling /);
  tt.regex(onTerm.output, /ran-after-pull/);
  const piped = await runCorral(sb, ['run', '--driver', 'docker', '--image', refs[1]!, '--state-dir', sb.stateDir, 'sh', '-c', 'echo ran']);
  tt.is(piped.code, 0, piped.stderr);
  tt.is(piped.stdout, 'ran\n');
  tt.notRegex(piped.stderr, /pulling/);
  tt.deepEqual(taskFiles(sb), []);
});

t('ps shows a docker task\'s real state; stop acts on it from another process', async (tt) => {
  const sb = sandbox(tt, 'cli-docker-ps');
  const owner = corral(sb, ['run', '--driver', 'docker', '--image', TEST_IMAGE, '--state-dir', sb.stateDir, '--name', 'boxed', 'sh', '-c', 'echo ready; sleep 1000']);
  await owner.seen('ready');
  const ps = JSON.parse((await runCorral(sb, ['ps', '--json', '--state-dir', sb.stateDir])).stdout) as { name: string; driver: string; state: string; command: string }[];
  tt.is(ps.length, 1);
  tt.is(ps[0]!.driver, 'docker');
  tt.is(ps[0]!.state, 'running');
  tt.regex(ps[0]!.command, /sleep 1000/);
  const st = await runCorral(sb, ['stop', '--timeout', '1s', '--state-dir', sb.stateDir, 'boxed']);
  tt.is(st.code, 0, st.stderr);
  const r = await owner.done;
  tt.true(r.code === 137 || r.code === 143, `${r.code} ${r.stderr}`);
  tt.deepEqual(taskFiles(sb), []);
});

t('a pipeline through a container: its stdin is corral\'s, and EOF arrives', async (tt) => {
  const sb = sandbox(tt, 'cli-docker-stdin');
  const run = `${CORRAL.join(' ')} run --driver docker --image ${TEST_IMAGE} --state-dir ${sb.stateDir} --`;
  // `read` takes the first line; `wc -c` only ends when the container's stdin is closed.
  const r = await shell(`printf 'hi\\nrest' | ${run} sh -c 'read x; echo "got [$x]"; wc -c' | tr a-z A-Z`);
  tt.is(r.code, 0, r.stderr);
  tt.is(r.stdout.replace(/ +/g, ''), 'GOT[HI]\n4\n');
  // No input at all (stdin at EOF from the start): the task still ends.
  const empty = await runCorral(sb, ['run', '--driver', 'docker', '--image', TEST_IMAGE, '--state-dir', sb.stateDir, '--', 'wc', '-c'], '');
  tt.is(empty.code, 0, empty.stderr);
  tt.is(empty.stdout.trim(), '0');
  tt.deepEqual(taskFiles(sb), []);
});
