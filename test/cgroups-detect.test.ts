/** Layout detection on fixture mount tables (every layout, Nomad 19735's stacked mounts included) and on this host. */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { detectCgroupLayout, inspectMounts } from '../src/cgroups/detect.js';
import { parseMountInfo, parseProcMounts, topMountAt, v1ControllersOf } from '../src/cgroups/mounts.js';
import { CGROUP2_SUPER_MAGIC, TMPFS_MAGIC } from '../src/native.js';
import { CgroupUnsupportedError } from '../src/errors.js';

const fx = (name: string) => path.join(__dirname, 'fixtures', name);
const noStatfs = { statfs: false as const };

test('parseMountInfo: fields, octal escapes, super options', (t) => {
  const e = parseMountInfo(fs.readFileSync(fx('mountinfo-cgroup2-only-elsewhere.txt'), 'utf8'));
  const cg = e.find((m) => m.fsType === 'cgroup2')!;
  t.is(cg.mountPoint, '/mnt/cgroup 2');
  t.is(cg.id, 50);
  t.is(cg.parentId, 1);
  const hy = parseMountInfo(fs.readFileSync(fx('mountinfo-hybrid.txt'), 'utf8'));
  const cpu = hy.find((m) => m.mountPoint === '/sys/fs/cgroup/cpu,cpuacct')!;
  t.deepEqual(v1ControllersOf(cpu), ['cpu', 'cpuacct']);
  t.deepEqual(v1ControllersOf(hy.find((m) => m.mountPoint === '/sys/fs/cgroup/systemd')!), []);
});

test('parseProcMounts: comma-joined controllers among mount flags', (t) => {
  const e = parseProcMounts(fs.readFileSync(fx('mounts-systemd-v1.txt'), 'utf8'));
  t.deepEqual(v1ControllersOf(e.find((m) => m.mountPoint === '/sys/fs/cgroup/cpu,cpuacct')!), ['cpu', 'cpuacct']);
  t.deepEqual(v1ControllersOf(e.find((m) => m.mountPoint === '/sys/fs/cgroup/net_cls,net_prio')!), ['net_cls', 'net_prio']);
});

test('topMountAt: the mount stacked last wins', (t) => {
  const e = parseMountInfo(fs.readFileSync(fx('mountinfo-stacked-19735.txt'), 'utf8'));
  t.is(topMountAt(e, '/sys/fs/cgroup')!.fsType, 'cgroup2');
  const e2 = parseMountInfo(fs.readFileSync(fx('mountinfo-stacked-tmpfs-over-cgroup2.txt'), 'utf8'));
  t.is(topMountAt(e2, '/sys/fs/cgroup')!.fsType, 'tmpfs');
});

test('v1 (legacy): controllers from separate mounts, no unified', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-v1.txt'), ...noStatfs });
  t.is(l.mode, 'v1');
  t.is(l.version, 'v1');
  t.is(l.root, '/sys/fs/cgroup');
  t.is(l.v1Mounts.cpu, '/sys/fs/cgroup/cpu');
  t.is(l.v1Mounts.cpuacct, '/sys/fs/cgroup/cpuacct');
  t.is(l.v1Mounts.freezer, '/sys/fs/cgroup/freezer');
  t.is(l.unifiedMount, undefined);
  t.false('name=systemd' in l.v1Mounts);
});

test('hybrid: v1 controllers (cpu,cpuacct joined) and cgroup2 at unified → v1 logic', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-hybrid.txt'), ...noStatfs });
  t.is(l.mode, 'hybrid');
  t.is(l.version, 'v1');
  t.is(l.v1Mounts.cpu, '/sys/fs/cgroup/cpu,cpuacct');
  t.is(l.v1Mounts.cpuacct, '/sys/fs/cgroup/cpu,cpuacct');
  t.is(l.v1Mounts.net_prio, '/sys/fs/cgroup/net_cls,net_prio');
  t.is(l.unifiedMount, '/sys/fs/cgroup/unified');
});

test('hybrid with version v2: the v2 manager runs on the unified mount', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-hybrid.txt'), version: 'v2', ...noStatfs });
  t.is(l.mode, 'hybrid');
  t.is(l.version, 'v2');
  t.is(l.root, '/sys/fs/cgroup/unified');
  t.deepEqual(l.v1Mounts, {});
});

test('v2: cgroup2 at the root', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-v2.txt'), ...noStatfs });
  t.deepEqual(l, { mode: 'v2', version: 'v2', root: '/sys/fs/cgroup', v1Mounts: {}, unifiedMount: '/sys/fs/cgroup' });
  t.throws(() => detectCgroupLayout({ mountinfoPath: fx('mountinfo-v2.txt'), version: 'v1', ...noStatfs }), { instanceOf: CgroupUnsupportedError });
});

test('Nomad 19735: tmpfs and cgroup2 stacked on /sys/fs/cgroup is v2, and the covered v1 mounts do not count', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-stacked-19735.txt'), ...noStatfs });
  t.is(l.mode, 'v2');
  t.is(l.version, 'v2');
  t.is(l.root, '/sys/fs/cgroup');
  t.deepEqual(l.v1Mounts, {});
  // statfs agrees (what is really mounted), and wins over a mount table that says otherwise.
  const l2 = detectCgroupLayout({ mountinfoPath: fx('mountinfo-stacked-19735.txt'), statfs: () => CGROUP2_SUPER_MAGIC });
  t.is(l2.mode, 'v2');
});

test('tmpfs stacked over cgroup2: the visible tmpfs and its v1 mounts decide (v1)', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-stacked-tmpfs-over-cgroup2.txt'), ...noStatfs });
  t.is(l.mode, 'v1');
  t.deepEqual(Object.keys(l.v1Mounts).sort(), ['cpuset', 'freezer', 'memory']);
});

test('statfs of the root overrides a stale mount table', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-v1.txt'), statfs: () => CGROUP2_SUPER_MAGIC });
  t.is(l.mode, 'v2');
  t.is(l.version, 'v2');
  const err = t.throws(() => detectCgroupLayout({ mountinfoPath: fx('mountinfo-v2.txt'), statfs: () => TMPFS_MAGIC }));
  t.true(err instanceof CgroupUnsupportedError);
});

test('cgroup2 mounted elsewhere: v1 stays v1; alone it is a clear error that names it', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-cgroup2-elsewhere.txt'), ...noStatfs });
  t.is(l.mode, 'v1');
  t.is(l.unifiedMount, undefined);
  t.deepEqual(inspectMounts({ mountinfoPath: fx('mountinfo-cgroup2-elsewhere.txt'), ...noStatfs }).otherCgroup2, ['/mnt/cgroup2']);
  const err = t.throws(() => detectCgroupLayout({ mountinfoPath: fx('mountinfo-cgroup2-only-elsewhere.txt'), ...noStatfs }));
  t.true(err instanceof CgroupUnsupportedError);
  t.regex(err!.message, /\/mnt\/cgroup 2/);
  // ...and with it as the root, it is a v2 layout.
  const l2 = detectCgroupLayout({ mountinfoPath: fx('mountinfo-cgroup2-only-elsewhere.txt'), root: '/mnt/cgroup 2', ...noStatfs });
  t.is(l2.version, 'v2');
  t.is(l2.root, '/mnt/cgroup 2');
});

test('systemd-style /proc/mounts with comma-joined v1 mounts', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mounts-systemd-v1.txt'), ...noStatfs });
  t.is(l.mode, 'v1');
  t.is(l.v1Mounts.cpu, '/sys/fs/cgroup/cpu,cpuacct');
  t.is(l.v1Mounts.cpuacct, '/sys/fs/cgroup/cpu,cpuacct');
  t.is(l.v1Mounts.pids, '/sys/fs/cgroup/pids');
});

test('explicit mode and root overrides', (t) => {
  const l = detectCgroupLayout({ mountinfoPath: fx('mountinfo-hybrid.txt'), mode: 'v1', ...noStatfs });
  t.is(l.mode, 'v1');
  t.is(l.version, 'v1');
  const l2 = detectCgroupLayout({ mountinfoPath: fx('mountinfo-hybrid.txt'), root: '/sys/fs/cgroup/unified', ...noStatfs });
  t.is(l2.version, 'v2');
  t.is(l2.root, '/sys/fs/cgroup/unified');
  t.throws(() => detectCgroupLayout({ mountinfoPath: fx('mountinfo-v1.txt'), version: 'v2', ...noStatfs }), { instanceOf: CgroupUnsupportedError });
  t.throws(() => detectCgroupLayout({ mode: 'v3' as never }), { code: 'ERR_INVALID_CONFIG' });
});

test('a fake tree in a temp dir: mount table with tmp paths', (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-detect-'));
  try {
    const table = [
      `31 23 0:28 / ${tmp} rw - tmpfs tmpfs rw`,
      `32 31 0:29 / ${tmp}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct`,
      `33 31 0:30 / ${tmp}/freezer rw - cgroup cgroup rw,freezer`,
      `34 31 0:31 / ${tmp}/unified rw - cgroup2 cgroup2 rw`,
    ].join('\n');
    const l = detectCgroupLayout({ root: tmp, mountTable: table, statfs: () => TMPFS_MAGIC });
    t.is(l.mode, 'hybrid');
    t.is(l.v1Mounts.cpu, `${tmp}/cpu,cpuacct`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('this host: detection agrees with statfs of /sys/fs/cgroup', (t) => {
  const l = detectCgroupLayout();
  t.log(`host layout: ${l.mode} (manager ${l.version}) at ${l.root}; v1 controllers: ${Object.keys(l.v1Mounts).join(',') || 'none'}`);
  const types = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  if (l.mode === 'v2') t.regex(types, / \/sys\/fs\/cgroup .* - cgroup2 /);
  else t.true(Object.keys(l.v1Mounts).length > 0);
});
