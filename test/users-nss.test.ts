/**
 * Users through NSS (native/users.cc): getpwnam_r/getpwuid_r/getgrnam_r/getgrgid_r/getgrouplist on
 * the threadpool. The second test proves the NSS path with a user from a non-files source: a tiny
 * NSS module (test/fixtures/nss) listed in a private /etc/nsswitch.conf bind-mounted inside a mount
 * namespace of a child process, so the host's own NSS configuration is never touched. The child
 * also runs a task as that user through run() (the raw_exec driver's user lookup).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native, type NssUser } from '../src/native.js';
import { bound } from './helpers/names.js';
import { sandbox } from './helpers/sandbox.js';

const ROOT = path.join(__dirname, '..');

function sh(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? bound(60_000), cwd: ROOT }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0, stdout, stderr });
    });
  });
}

const lookup = (key: string | number) => new Promise<NssUser | null>((resolve, reject) => native().lookupUser(key, (err, u) => (err ? reject(err) : resolve(u ?? null))));

test('lookupUser/lookupGroup: known users and groups, unknown is null, bad keys are TypeErrors', async (t) => {
  const n = native();
  const root = await lookup('root');
  t.like(root, { name: 'root', uid: 0, gid: 0, home: '/root' });
  t.true(root!.groups.includes(0));
  t.like(await lookup(0), { name: 'root' });
  t.is(await lookup('corral-no-such-user-x'), null);
  t.is(n.lookupUserSync('corral-no-such-user-x'), null);
  t.like(n.lookupUserSync('root'), { uid: 0 });
  t.like(n.lookupGroupSync(0), { name: 'root', gid: 0 });
  t.is(n.lookupGroupSync('corral-no-such-group-x'), null);
  for (const bad of ['', -1, 1.5, 4294967295, 'a\0b', null, {}] as unknown[]) {
    t.throws(() => n.lookupUser(bad as string, () => {}), { instanceOf: TypeError }, `lookupUser(${JSON.stringify(bad)})`);
    t.throws(() => n.lookupUserSync(bad as string), { instanceOf: TypeError });
    t.throws(() => n.lookupGroupSync(bad as string), { instanceOf: TypeError });
  }
});

test('a user known only to an NSS module (no /etc/passwd line) is found, with its groups, and runs a task', async (t) => {
  const sb = sandbox(t, 'nss');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-nss-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cc = await sh('cc', ['-shared', '-fPIC', '-O2', '-o', path.join(dir, 'libnss_corraltest.so.2'), path.join(ROOT, 'test/fixtures/nss/nss_corraltest.c')]);
  if (cc.code !== 0) {
    t.fail(`could not build the test NSS module (a C compiler is needed, as for the addon): ${cc.stderr}`);
    return;
  }
  fs.writeFileSync(path.join(dir, 'nsswitch.conf'), 'passwd: files corraltest\ngroup: files corraltest\n');
  t.false(fs.readFileSync('/etc/passwd', 'utf8').includes('corral-nss-user'), 'the user must not be in /etc/passwd');
  const script = `mount --bind ${dir}/nsswitch.conf /etc/nsswitch.conf && exec "$0" --import tsx test/helpers/nss-child.ts`;
  const r = await sh('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, process.execPath], {
    env: { ...process.env, LD_LIBRARY_PATH: dir, CORRAL_NSS_TEST_PARENT: sb.parent },
  });
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  const user = { name: 'corral-nss-user', uid: 47110, gid: 47110, home: '/nonexistent', shell: '/bin/sh', groups: [47110, 47111] };
  t.deepEqual(out.viaWorker, user);
  t.deepEqual(out.byUid, user);
  t.deepEqual(out.group, { name: 'corral-nss-extra', gid: 47111 });
  t.deepEqual(out.driverUser, { ...user, groups: [47111] }, 'the raw_exec driver resolves it through NSS');
  t.like(out.driverUserGroup, { uid: 47110, gid: 47111, groups: [47110] });
  t.deepEqual(out.task, { exitCode: 0, stdout: '47110\n47110\n47110 47111\n', stderr: '' }, 'run() as the NSS user');
});
