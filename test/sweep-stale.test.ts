/**
 * scripts/sweep-stale.sh (run by scripts/test.sh first): a test parent whose creator pid is dead is
 * removed with its processes (frozen ones too) and its lock file; one whose creator is alive, one of a
 * live registered run, and a name without a creator pid are left alone.
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_LOCK_DIR } from '../src/cgroups/lock.js';
import { cleanupParent, hostLayout, isRoot, pidAlive, waitFor } from './helpers/cgroups.js';
import { sandbox } from './helpers/sandbox.js';

const execFileP = promisify(execFile);
const ROOT = path.resolve(__dirname, '..');
const tr = isRoot && hostLayout().v1Mounts.freezer ? test.serial : test.skip;

tr('stale test parents (dead creator) are swept with their processes and lock files; live ones are not', async (t) => {
  const sb = sandbox(t, 'sweep');
  const freezer = hostLayout().v1Mounts.freezer!;
  // A creator that cannot exist (above pid_max): a pid of an exited process may be reused at once.
  const dead = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
  // Not this run's id: scripts/test.sh registers its run as live, and a live run's names are never swept.
  const stale = `corral-test-sweepgone${process.pid}-x-${dead}-1`;
  const live = `${sb.name}-live-${process.pid}-1`; // its creator (this worker) is alive
  const registered = `corral-test-sweepreg${process.pid}-x-${dead}-2`; // dead creator, but its run is live
  const nopid = `corral-test-sweepnopid${process.pid}-x`;
  const runsDir = '/run/corral-test-runs';
  const reg = path.join(runsDir, `sweepreg${process.pid}`);
  const lock = path.join(DEFAULT_LOCK_DIR, `cpuset-${encodeURIComponent('/sys/fs/cgroup')}-${stale}.lock`);
  sb.defer(async () => {
    fs.rmSync(reg, { force: true });
    fs.rmSync(lock, { force: true });
    for (const p of [stale, live, registered, nopid]) await cleanupParent(p);
  });
  for (const p of [stale, live, registered, nopid]) fs.mkdirSync(path.join(freezer, p, 'task'), { recursive: true });
  fs.mkdirSync(runsDir, { recursive: true });
  fs.writeFileSync(reg, String(process.pid));
  fs.mkdirSync(DEFAULT_LOCK_DIR, { recursive: true });
  fs.writeFileSync(lock, '');
  // A process in the stale group, frozen there (as a killed run can leave it).
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  sb.defer(() => { try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ } });
  fs.writeFileSync(path.join(freezer, stale, 'task', 'cgroup.procs'), String(child.pid));
  fs.writeFileSync(path.join(freezer, stale, 'task', 'freezer.state'), 'FROZEN');
  const { stdout } = await execFileP('bash', [path.join(ROOT, 'scripts/sweep-stale.sh')]);
  t.regex(stdout, new RegExp(`removed stale test parent ${stale}`));
  t.false(fs.existsSync(path.join(freezer, stale)), 'the stale parent is gone');
  await waitFor(() => !pidAlive(child.pid!), { what: 'the frozen process of the stale group to die' });
  t.false(fs.existsSync(lock), 'its lock file is gone');
  for (const p of [live, registered, nopid]) t.true(fs.existsSync(path.join(freezer, p, 'task')), `${p} is left alone`);
});
