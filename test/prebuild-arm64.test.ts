/**
 * The linux-arm64 prebuild, on this x86_64 machine: `npm pack` with the cross compiler present puts
 * it into the tarball (scripts/prepack.sh → scripts/prebuild-arm64.sh), and the packed package's
 * prebuild is then used by Debian's arm64 Node under qemu-aarch64 (test/fixtures/prebuild-smoke.cjs):
 * loaded through node-gyp-build, reads, statfs, an NSS lookup, and real spawns that the addon places
 * in a cgroup by the join path (the only one off x86_64), killed through their pidfd; then the packed
 * library's run() with a memory limit, from arm64 Node.
 *
 * Opt-in (CORRAL_TEST_ARM64=1, `npm run test:arm64`): the pack cross-compiles for minutes on this
 * machine, too long for every CI run. Skipped, saying why, when the toolchain is absent
 * (`bash scripts/arm64-setup.sh` installs it: aarch64-linux-gnu-g++, and an arm64 Node and qemu-user
 * unpacked under /var/cache/corral-arm64).
 *
 * The arm64 Node is Debian 12's Node 18: N-API is ABI-stable, so a Node 18 that loads and runs the
 * N-API 8 addon is a fair test of the binary that Node >= 20 loads. Under qemu-user a vfork-style
 * clone runs as a fork, so what the child reports back through shared memory (a failed execve's
 * errno) cannot be tested here, only the success path.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { groupDirsUnder, hostLayout, v2Layout } from './helpers/cgroups.js';
import { ROOT, exec, packCopy } from './helpers/pack.js';
import { bound, sandbox } from './helpers/sandbox.js';

const DIR = process.env.CORRAL_ARM64_DIR ?? '/var/cache/corral-arm64';
const QEMU = path.join(DIR, 'qemu', 'usr', 'bin', 'qemu-aarch64');
const SYSROOT = path.join(DIR, 'sysroot');
const ARM64_NODE = path.join(SYSROOT, 'usr', 'bin', 'node');
const EM_AARCH64 = 183;

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, cmd)));
}

function whySkip(): string | undefined {
  const missing = [
    onPath('aarch64-linux-gnu-g++') ? '' : 'aarch64-linux-gnu-g++',
    fs.existsSync(ARM64_NODE) ? '' : ARM64_NODE,
    fs.existsSync(QEMU) ? '' : QEMU,
  ].filter(Boolean);
  if (missing.length > 0) return `no arm64 toolchain (${missing.join(', ')}): bash scripts/arm64-setup.sh`;
  if (process.env.CORRAL_TEST_ARM64 !== '1') return 'opt-in, the cross-compiling pack takes minutes: npm run test:arm64';
  return undefined;
}

const why = whySkip();
const title = 'linux-arm64 prebuild: packed when the cross compiler is present; arm64 Node under qemu loads it through node-gyp-build and spawns into a cgroup by the join path';
(why ? test.skip : test)(why ? `${title} [skipped: ${why}]` : title, async (t) => {
  t.timeout(bound(1_200_000));
  const sb = sandbox(t, 'arm64');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `${sb.name}-pack-`));
  sb.defer(() => fs.rmSync(work, { recursive: true, force: true }));

  // 1. The tarball has both prebuilds; the arm64 one is an AArch64 ELF.
  const { out: pack, tgz, files, seconds } = await packCopy(work, { CORRAL_PREBUILD_ARM64: '1' });
  t.is(pack.code, 0, pack.stderr);
  t.log(`npm pack with the arm64 cross-build: ${seconds.toFixed(1)} s`);
  t.deepEqual(files.filter((f) => f.startsWith('prebuilds/')), ['prebuilds/linux-arm64/corral.glibc.node', 'prebuilds/linux-x64/corral.glibc.node']);
  const x = await exec('tar', ['xzf', tgz, '-C', work], { cwd: work });
  t.is(x.code, 0, x.stderr);
  const pkg = path.join(work, 'package');
  const elf = fs.readFileSync(path.join(pkg, 'prebuilds', 'linux-arm64', 'corral.glibc.node'));
  t.is(elf.readUInt16LE(18), EM_AARCH64, 'e_machine of the arm64 prebuild');
  fs.mkdirSync(path.join(pkg, 'node_modules'));
  fs.symlinkSync(path.join(ROOT, 'node_modules', 'node-gyp-build'), path.join(pkg, 'node_modules', 'node-gyp-build'));

  // 2. A group of the sandbox's own, in cgroup2 (the unified mount on a hybrid host) or else v1 pids.
  const mount = v2Layout()?.root ?? hostLayout().v1Mounts.pids;
  t.truthy(mount, 'a cgroup hierarchy to join');
  const group = path.join(mount!, sb.parent, 'arm64-smoke');
  fs.mkdirSync(group, { recursive: true });

  // 3. The smoke script in arm64 Node, under qemu-aarch64 with the arm64 sysroot.
  const r = await exec(QEMU, ['-L', SYSROOT, ARM64_NODE, path.join(__dirname, 'fixtures', 'prebuild-smoke.cjs'), pkg, group], { cwd: work, timeoutMs: bound(300_000) });
  t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const s = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.log(`arm64 ${s.node} (N-API ${s.napi}) loaded ${s.file}`);
  t.like(s, {
    arch: 'arm64', file: 'prebuilds/linux-arm64/corral.glibc.node',
    readFiles: ['read by the addon', 'ENOENT'], statfsProc: '9fa0', rootUser: 'root',
    placement: 'join', firstLine: 'arm64 42', inGroup: true, exitCode: 3, listed: true, killedBy: 9,
  });
  t.is(fs.readFileSync(path.join(group, 'cgroup.procs'), 'utf8'), '', 'both children reaped, none left in the group');

  // 4. The packed library itself on arm64: run() with a memory limit, in its own group under the sandbox's parent.
  const script = `require(${JSON.stringify(path.join(pkg, 'dist', 'src', 'index.js'))})
    .run('sh', ['-c', 'echo run $((6*7)); grep -c memory:/${sb.parent}/ /proc/self/cgroup || true'], { cgroupParent: process.argv[1], resources: { memoryBytes: 64 << 20 }, timeoutMs: 120000 })
    .then((r) => console.log(JSON.stringify(r)), (e) => { console.error(e); process.exitCode = 1; });`;
  const lib = await exec(QEMU, ['-L', SYSROOT, ARM64_NODE, '-e', script, sb.parent], { cwd: work, timeoutMs: bound(300_000) });
  t.is(lib.code, 0, `${lib.stdout}\n${lib.stderr}`);
  const rr = JSON.parse(lib.stdout.trim().split('\n').pop()!);
  t.like(rr, { exitCode: 0, timedOut: false, stdout: hostLayout().v1Mounts.memory ? 'run 42\n1\n' : 'run 42\n0\n' });
  t.deepEqual(groupDirsUnder(sb.parent), [], 'run() left no task group');
});
