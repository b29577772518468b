/**
 * Pure logic of the cgroups layer: cpu lists, names, resources, the cpuset partition and its
 * rewrite plans, stat parsers; and the managers on a fake tree in a temp dir, with a fake addon
 * that keeps control files in memory and enforces the kernel's v1 cpuset rules (a child stays a
 * subset of its parent; a process may join only with cpus and mems set), so the order of writes is
 * checked, not just their values.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { coresMinus, formatCpuList, parseCpuList } from '../src/cgroups/cpulist.js';
import { groupName, parseGroupName, validateAllocId, validateTaskName } from '../src/cgroups/names.js';
import { checkReservation, planV1SharedRewrite, reservedCores, shareCores } from '../src/cgroups/partition.js';
import { sharesToWeight, validateResources } from '../src/cgroups/resources.js';
import { statsFromV1, statsFromV2 } from '../src/cgroups/stats.js';
import { CgroupV1Manager } from '../src/cgroups/v1.js';
import { CgroupV2Manager } from '../src/cgroups/v2.js';
import type { CgroupLayout, TaskResources } from '../src/cgroups/types.js';
import type { NativeAddon, NativeErrorInfo } from '../src/native.js';
import { CgroupError, CgroupTimeoutError, CgroupUnsupportedError, CpusetConflictError, InvalidConfigError } from '../src/errors.js';

const A = '0b7e3a3c-8f5e-4d55-9b7b-0c1f1f7d2a11';
const B = '1c8f4b4d-9a6f-4e66-8c8c-1d2a2a8e3b22';
const C = '2d9a5c5e-0b7a-4f77-9d9d-2e3b3b9f4c33';
const D = '4f1c7e7a-2d9c-4b99-9fbf-4a5d5d1b6e55';

// ---------- cpu lists ----------

test('parseCpuList / formatCpuList round-trip', (t) => {
  t.deepEqual(parseCpuList('0-3,5\n'), [0, 1, 2, 3, 5]);
  t.deepEqual(parseCpuList(''), []);
  t.deepEqual(parseCpuList('\n'), []);
  t.deepEqual(parseCpuList('7,1-2,2'), [1, 2, 7]);
  t.is(formatCpuList([5, 0, 1, 2, 3]), '0-3,5');
  t.is(formatCpuList([]), '');
  t.is(formatCpuList([1, 3, 5]), '1,3,5');
  t.throws(() => parseCpuList('1-a'), { instanceOf: InvalidConfigError });
  t.throws(() => parseCpuList('3-1'), { instanceOf: InvalidConfigError });
  t.deepEqual(coresMinus([0, 1, 2, 3], [1, 2]), [0, 3]);
});

// ---------- names ----------

test('validateAllocId: a UUID, else InvalidConfigError naming allocId and the value', (t) => {
  t.is(validateAllocId(A), A);
  for (const bad of ['', 'abc', `${A}x`, '../../etc', A.replace(/-/g, ''), 42]) {
    const err = t.throws(() => validateAllocId(bad), { instanceOf: InvalidConfigError });
    t.is(err!.field, 'allocId');
    t.is(err!.value, bad);
    t.is(err!.code, 'ERR_INVALID_CONFIG');
  }
});

test('validateTaskName: rejects traversal, separators, NUL, control characters, empty and over-long names', (t) => {
  for (const ok of ['web', 'my task', 'a.b', 'ü-ñ', 'x'.repeat(128)]) t.is(validateTaskName(ok), ok);
  for (const bad of ['', '.', '..', '../x', 'a/b', 'a\\b', 'a\0b', 'a\nb', 'tab\t', 'x'.repeat(129), 'é'.repeat(65), 'a..b']) {
    const err = t.throws(() => validateTaskName(bad), { instanceOf: InvalidConfigError });
    t.is(err!.field, 'name');
  }
});

test('groupName / parseGroupName', (t) => {
  t.is(groupName(A, 'web'), `${A}-web`);
  t.deepEqual(parseGroupName(`${A}-web`), { allocId: A, taskName: 'web' });
  t.is(parseGroupName('shared'), undefined);
  t.is(parseGroupName(`${A}-`), undefined);
});

// ---------- resources ----------

test('validateResources and the shares → weight conversion', (t) => {
  t.deepEqual(validateResources({ cores: [3, 1], cpuShares: 1024 }), { cores: [1, 3], cpuShares: 1024 });
  t.deepEqual(validateResources({ cores: [] }), {});
  t.throws(() => validateResources({ cpuShares: 1 }), { instanceOf: InvalidConfigError, message: /resources\.cpuShares/ });
  t.throws(() => validateResources({ cores: [1, 1] }), { instanceOf: InvalidConfigError, message: /listed twice/ });
  t.throws(() => validateResources({ cores: [-1] }), { instanceOf: InvalidConfigError, message: /resources\.cores/ });
  t.throws(() => validateResources({ memoryBytes: 10 }), { instanceOf: InvalidConfigError, message: /resources\.memoryBytes/ });
  t.throws(() => validateResources({ pidsMax: 0 }), { instanceOf: InvalidConfigError, message: /resources\.pidsMax/ });
  t.is(sharesToWeight(2), 1);
  t.is(sharesToWeight(1024), 39);
  t.is(sharesToWeight(262144), 10000);
});

// ---------- partition ----------

test('partition from the tree: reservations belong to one task; the share pool is the rest and never empty', (t) => {
  const usable = [0, 1, 2, 3];
  const res = new Map([['a', [1, 2]]]);
  t.deepEqual(reservedCores(res), [1, 2]);
  t.deepEqual(shareCores(usable, res), [0, 3]);
  t.deepEqual(shareCores(usable, new Map()), usable);
  t.notThrows(() => checkReservation(usable, res, 'b', [3]));
  t.notThrows(() => checkReservation(usable, res, 'a', [1, 2]), 'an owner may re-check its own cores');
  const conflict = t.throws(() => checkReservation(usable, res, 'b', [2, 3]), { instanceOf: CpusetConflictError });
  t.deepEqual(conflict!.cores, [2]);
  t.is(conflict!.heldBy, 'a');
  t.is(conflict!.code, 'ERR_CPUSET_CONFLICT');
  const unusable = t.throws(() => checkReservation(usable, res, 'b', [9]), { instanceOf: InvalidConfigError });
  t.is(unusable!.field, 'resources.cores');
  t.regex(unusable!.message, /core 9 is not usable/);
  t.throws(() => checkReservation(usable, res, 'b', [0, 3]), { instanceOf: InvalidConfigError, message: /no core for the tasks that share/ });
});

test('plan v1: shrink writes children before the parent, grow the parent first', (t) => {
  t.deepEqual(planV1SharedRewrite([0, 1, 2], [0], 'P', ['c1', 'c2']), [['c1', '0'], ['c2', '0'], ['P', '0']]);
  t.deepEqual(planV1SharedRewrite([0], [0, 1, 2], 'P', ['c1']), [['P', '0-2'], ['c1', '0-2']]);
  // Neither a subset nor a superset: grow to the union, move the children, shrink.
  t.deepEqual(planV1SharedRewrite([0, 1], [1, 2], 'P', ['c1']), [['P', '0-2'], ['c1', '1-2'], ['P', '1-2']]);
  t.deepEqual(planV1SharedRewrite([0, 1], [], 'P', []), [['P', '\n']]);
});

// ---------- stats ----------

test('statsFromV2: usec → ns, anon/file, peak; memory unavailable with a reason', (t) => {
  const s = statsFromV2({
    cpuStat: 'usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 5\nnr_throttled 2\nthrottled_usec 40\n',
    memoryCurrent: '8192\n',
    memoryStat: 'anon 4096\nfile 2048\nkernel 10\n',
    memoryPeak: '16384\n',
  });
  t.deepEqual(s.cpu, { userNs: 2e6, systemNs: 1e6, totalNs: 3e6, throttledNs: 40000, throttledPeriods: 2 });
  t.deepEqual(s.memory, { usageBytes: 8192, rssBytes: 4096, cacheBytes: 2048, maxUsageBytes: 16384 });
  const u = statsFromV2({ cpuStat: 'usage_usec 1\nuser_usec 1\nsystem_usec 0\n' }, 'no memory controller');
  t.is(u.memory, undefined);
  t.is(u.unavailable.memory, 'no memory controller');
  t.is(statsFromV2({ cpuStat: '', memoryCurrent: '1', memoryStat: '' }).unavailable['memory.peak'] !== undefined, true);
});

test('statsFromV1: usage_user/sys in ns, cpuacct.stat ticks as fallback, total_* preferred', (t) => {
  const s = statsFromV1({
    cpuacctUsage: '5000000\n',
    cpuacctUsageUser: '3000000\n',
    cpuacctUsageSys: '2000000\n',
    cpuStat: 'nr_periods 0\nnr_throttled 3\nthrottled_time 99\n',
    memoryUsage: '1000\n',
    memoryStat: 'cache 1\nrss 2\ntotal_cache 10\ntotal_rss 20\n',
    memoryMaxUsage: '3000\n',
  });
  t.deepEqual(s.cpu, { userNs: 3e6, systemNs: 2e6, totalNs: 5e6, throttledNs: 99, throttledPeriods: 3 });
  t.deepEqual(s.memory, { usageBytes: 1000, rssBytes: 20, cacheBytes: 10, maxUsageBytes: 3000 });
  const old = statsFromV1({ cpuacctUsage: '1', cpuacctStat: 'user 7\nsystem 3\n', memoryUsage: '0', memoryStat: 'rss 5\ncache 6\n' });
  t.is(old.cpu.userNs, 7e7);
  t.is(old.cpu.systemNs, 3e7);
  t.is(old.memory!.rssBytes, 5);
});

// ---------- fake tree + fake addon ----------

interface FakeAddon extends NativeAddon {
  files: Map<string, string>;
  log: string[];
  failOn?: (p: string) => NativeErrorInfo | undefined;
  freezeTimesOut?: boolean;
}

function err(code: string, errno: number, p: string): NativeErrorInfo {
  return { code, errno: -errno, syscall: 'write', path: p, message: `${code}: fake` };
}

/** A fake addon over an in-memory map of control files, enforcing v1 cpuset rules for files under `cpusetRoot`. */
function fakeAddon(cpusetRoot?: string): FakeAddon {
  const files = new Map<string, string>();
  const log: string[] = [];
  const read = (p: string): string | undefined => {
    if (files.has(p)) return files.get(p);
    try {
      return fs.readFileSync(p, 'utf8');
    } catch {
      if (p.endsWith('/cgroup.controllers')) return read(path.join(path.dirname(path.dirname(p)), 'cgroup.subtree_control'));
      return undefined;
    }
  };
  const cpus = (p: string) => { const v = read(p); return v === undefined ? undefined : parseCpuList(v); };
  const self: FakeAddon = {
    files,
    log,
    writeFiles(paths, values) {
      return paths.map((p, i) => {
        const v = values[i]!;
        const inj = self.failOn?.(p);
        if (inj) return inj;
        if (!fs.existsSync(path.dirname(p))) return err('ENOENT', 2, p);
        if (cpusetRoot && p.startsWith(cpusetRoot + '/') && p.endsWith('/cpuset.cpus')) {
          const want = parseCpuList(v);
          const dir = path.dirname(p);
          const parent = cpus(path.join(path.dirname(dir), 'cpuset.cpus'));
          if (parent && want.some((c) => !parent.includes(c))) return err('EINVAL', 22, p); // not a subset of the parent
          for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
            if (!d.isDirectory()) continue;
            const child = cpus(path.join(dir, d.name, 'cpuset.cpus')) ?? [];
            if (child.some((c) => !want.includes(c))) return err('EBUSY', 16, p); // a child would not be a subset
          }
        }
        if (cpusetRoot && p.startsWith(cpusetRoot + '/') && p.endsWith('/cgroup.procs')) {
          const dir = path.dirname(p);
          if (!(cpus(path.join(dir, 'cpuset.cpus')) ?? []).length || !(read(path.join(dir, 'cpuset.mems')) ?? '').trim()) return err('ENOSPC', 28, p);
        }
        if (p.endsWith('/cgroup.subtree_control')) {
          // The kernel applies +x/-x tokens and shows the resulting list.
          const have = new Set((read(p) ?? '').split(/\s+/).filter(Boolean));
          for (const tok of v.split(/\s+/).filter(Boolean)) (tok[0] === '-' ? have.delete(tok.slice(1)) : have.add(tok.replace(/^\+/, '')));
          files.set(p, [...have].join(' '));
          log.push(`${p}=${v.trim()}`);
          return null;
        }
        // A group that never finishes freezing (freezeTimesOut): the kernel shows FREEZING.
        files.set(p, self.freezeTimesOut && p.endsWith('/freezer.state') && v === 'FROZEN' ? 'FREEZING' : v);
        log.push(`${p}=${v.trim()}`);
        return null;
      });
    },
    readFiles(paths) {
      return paths.map((p) => read(p) ?? { code: 'ENOENT', errno: -2, syscall: 'open', path: p, message: 'ENOENT' });
    },
    controlWrite(p, v, cb) {
      const r = self.writeFiles([p], [v])[0];
      setImmediate(() => cb(r ? Object.assign(new Error(r.message), r) as any : null));
    },
    controlRead(p, cb) {
      const v = read(p);
      setImmediate(() => (v === undefined ? cb(Object.assign(new Error('ENOENT'), { code: 'ENOENT', errno: -2, syscall: 'open', path: p }) as any) : cb(null, v)));
    },
    readProcs(p) {
      if (!fs.existsSync(path.dirname(p))) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT', errno: -2, syscall: 'open', path: p });
      const v = read(p) ?? '';
      return Int32Array.from(v.split('\n').filter(Boolean).map(Number));
    },
    // A SIGKILL to a fake group empties it (the waits that follow read cgroup.procs).
    signalGroup: (p, sig) => {
      const n = (read(p) ?? '').split('\n').filter(Boolean).length;
      if (sig === 9) files.set(p, '');
      return { signalled: n, gone: 0 };
    },
    controlSignalGroup(p, sig, cb) {
      const r = self.signalGroup(p, sig);
      setImmediate(() => cb(null, r));
    },
    // The steps run on this thread (the fake tree is a temp dir), the result comes back on a later turn.
    applyAsync: (ops, cb) => {
      let err: any = null;
      for (let i = 0; i < ops.length && !err; i++) {
        const op = ops[i]!;
        try {
          if (op[0] === 'mkdir') fs.mkdirSync(op[1]);
          else if (op[0] === 'rmdir') fs.rmdirSync(op[1]);
          else if (op[0] === 'unlink') fs.rmSync(op[1], { force: true });
          else if (op[0] === 'absent') {
            if (fs.existsSync(op[1])) throw Object.assign(new Error(`EEXIST: ${op[1]}`), { code: 'EEXIST', errno: -17, syscall: 'stat', path: op[1] });
          } else {
            const r = self.writeFiles([op[1]], [op[2] as string])[0];
            if (r) throw Object.assign(new Error(r.message), r);
          }
        } catch (e) {
          err = Object.assign(e as object, { index: i });
        }
      }
      setImmediate(() => cb(err));
    },
    // No kernel notifications in a fake tree: the waits fall back to timers.
    watchEvents: () => { throw new Error('not in the fake'); },
    spawn: () => { throw new Error('not in the fake'); },
    openProcess: () => { throw new Error('not in the fake'); },
    statfsType: () => 0x01021994,
    lookupUser: () => { throw new Error('not in the fake'); },
    lookupGroup: () => { throw new Error('not in the fake'); },
    lookupUserSync: () => { throw new Error('not in the fake'); },
    lookupGroupSync: () => { throw new Error('not in the fake'); },
    pipe: () => { throw new Error('not in the fake'); },
    flockTry: () => true,
  };
  return self;
}

function fakeV1Tree(t: { teardown: (fn: () => void) => void }): { root: string; layout: CgroupLayout } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-fake-v1-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  for (const d of ['cpuset', 'freezer', 'memory', 'pids', 'cpu,cpuacct']) fs.mkdirSync(path.join(root, d));
  fs.writeFileSync(path.join(root, 'cpuset', 'cpuset.cpus'), '0-3\n');
  fs.writeFileSync(path.join(root, 'cpuset', 'cpuset.effective_cpus'), '0-3\n');
  fs.writeFileSync(path.join(root, 'cpuset', 'cpuset.mems'), '0\n');
  const layout: CgroupLayout = {
    mode: 'v1', version: 'v1', root,
    v1Mounts: {
      cpuset: path.join(root, 'cpuset'), freezer: path.join(root, 'freezer'), memory: path.join(root, 'memory'),
      pids: path.join(root, 'pids'), cpu: path.join(root, 'cpu,cpuacct'), cpuacct: path.join(root, 'cpu,cpuacct'),
    },
  };
  return { root, layout };
}

test('fake v1 tree: groups in every controller, cpu,cpuacct share one dir, limits written', (t) => {
  const { root, layout } = fakeV1Tree(t);
  const fake = fakeAddon(path.join(root, 'cpuset'));
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  t.deepEqual(m.controllers(), ['freezer', 'cpuset', 'cpu', 'cpuacct', 'memory', 'pids']);
  t.is(m.fingerprint()['cgroups.cores'], '0-3');
  const g = m.create(A, 'web', { resources: { cpuShares: 512, memoryBytes: 1 << 24, pidsMax: 10 } });
  t.is(g.paths.cpu, g.paths.cpuacct);
  t.is(g.paths.cpuset, path.join(root, 'cpuset/corral/share'), 'a shared task joins the share group itself');
  t.is(g.placement.joinProcs!.length, 5, 'one cgroup.procs per distinct directory');
  t.is(fake.files.get(path.join(g.paths.cpu!, 'cpu.shares')), '512');
  t.is(fake.files.get(path.join(g.paths.memory!, 'memory.limit_in_bytes')), String(1 << 24));
  t.is(fake.files.get(path.join(g.paths.pids!, 'pids.max')), '10');
  t.is(fake.files.get(path.join(g.paths.cpuset!, 'cpuset.cpus')), '0-3');
  t.is(fake.files.get(path.join(g.paths.cpuset!, 'cpuset.mems')), '0');
  g.join(1234);
  t.is(fake.files.get(path.join(g.paths.freezer!, 'cgroup.procs')), '1234');
  t.deepEqual(g.pids(), [1234]);
});

test('fake v1 tree: a reservation begins and ends with a constant number of writes, whatever the number of shared tasks', async (t) => {
  const { root, layout } = fakeV1Tree(t);
  const cs = path.join(root, 'cpuset');
  const fake = fakeAddon(cs);
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const cpusetWrites = (from: number) => fake.log.slice(from).filter((l) => l.startsWith(cs + '/')).map((l) => l.slice(cs.length));
  const counts: number[] = [];
  let n = 0;
  for (const shared of [2, 20]) {
    const ss = [];
    for (let i = 0; i < shared; i++) {
      const g = m.create(randomUUID(), `s${n++}`);
      g.join(1000 + n);
      ss.push(g);
    }
    const mark = fake.log.length;
    const r = m.create(C, 'r', { resources: { cores: [1, 2] } });
    const begin = cpusetWrites(mark);
    t.deepEqual(begin, ['/corral/share/cpuset.cpus=0,3', '/corral/reserve/cpuset.cpus=1-2', `/corral/reserve/${C}-r/cpuset.cpus=1-2`, `/corral/reserve/${C}-r/cpuset.mems=0`],
      'the share pool shrinks, then the reserve parent grows before its child');
    t.is(r.paths.cpuset, path.join(cs, 'corral/reserve', `${C}-r`));
    t.deepEqual(r.cpus(), [1, 2]);
    for (const g of ss) t.deepEqual(g.cpus(), [0, 3]);
    t.deepEqual(m.sharedCores(), [0, 3]);
    // Conflicts and unusable cores: clear errors, nothing created.
    const conflict = t.throws(() => m.create(D, 'x', { resources: { cores: [2] } }), { instanceOf: CpusetConflictError });
    t.is(conflict!.heldBy, `${C}-r`);
    const bad = t.throws(() => m.create(D, 'x', { resources: { cores: [7] } }), { instanceOf: InvalidConfigError });
    t.is(bad!.field, 'resources.cores');
    t.regex(bad!.message, /core 7/);
    t.false(fs.existsSync(path.join(cs, 'corral/reserve', `${D}-x`)));
    t.false(fs.existsSync(path.join(root, 'freezer/corral', `${D}-x`)));
    const mark2 = fake.log.length;
    await r.destroy();
    t.deepEqual(cpusetWrites(mark2), ['/corral/share/cpuset.cpus=0-3', '/corral/reserve/cpuset.cpus='], 'the share pool grows back: two writes');
    for (const g of ss) t.deepEqual(g.cpus(), [0, 1, 2, 3]);
    counts.push(begin.length);
    for (const g of ss) await g.destroy();
  }
  t.deepEqual(counts, [4, 4]);
});

test('fake v1 tree: two managers (two agents) reserve, and release in any order: no clean-up fails because of the other\'s reservation', async (t) => {
  const { root, layout } = fakeV1Tree(t);
  const cs = path.join(root, 'cpuset');
  const fake = fakeAddon(cs);
  const m1 = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const m2 = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const s = m1.create(A, 's');
  s.join(7);
  const r1 = m1.create(B, 'r1', { resources: { cores: [1] } });
  const r2 = m2.create(C, 'r2', { resources: { cores: [2, 3] } });
  t.deepEqual(m1.sharedCores(), [0], 'each manager sees both reservations (from the tree)');
  t.deepEqual(m2.sharedCores(), [0]);
  t.is(fake.files.get(path.join(cs, 'corral/share/cpuset.cpus')), '0');
  t.is(fake.files.get(path.join(cs, 'corral/reserve/cpuset.cpus')), '1-3');
  t.is(t.throws(() => m1.create(D, 'x', { resources: { cores: [3] } }), { instanceOf: CpusetConflictError })!.heldBy, `${C}-r2`);
  // The first reservation ends while the other process's holds: the reserve parent keeps 2-3 (its child
  // stays a subset: no EBUSY), the share pool gets core 1 back only.
  await r1.destroy();
  t.is(fake.files.get(path.join(cs, 'corral/reserve/cpuset.cpus')), '2-3');
  t.is(fake.files.get(path.join(cs, 'corral/share/cpuset.cpus')), '0-1');
  t.deepEqual(s.cpus(), [0, 1]);
  await r2.destroy();
  t.is(fake.files.get(path.join(cs, 'corral/share/cpuset.cpus')), '0-3');
  t.deepEqual(m1.sharedCores(), [0, 1, 2, 3]);
});

test('fake v1 tree: a failing limit write undoes the group and the reservation', (t) => {
  const { root, layout } = fakeV1Tree(t);
  const cs = path.join(root, 'cpuset');
  const fake = fakeAddon(cs);
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const s = m.create(A, 's');
  fake.failOn = (p) => (p.endsWith('memory.limit_in_bytes') ? err('EINVAL', 22, p) : undefined);
  const e = t.throws(() => m.create(B, 'r', { resources: { cores: [3], memoryBytes: 1 << 20 } }), { instanceOf: CgroupError });
  t.is(e!.code, 'EINVAL');
  t.regex(e!.message, /memory\.limit_in_bytes/);
  fake.failOn = undefined;
  for (const d of ['freezer', 'memory', 'pids', 'cpu,cpuacct']) t.false(fs.existsSync(path.join(root, d, 'corral', `${B}-r`)));
  t.false(fs.existsSync(path.join(cs, 'corral/reserve', `${B}-r`)));
  t.deepEqual(m.sharedCores(), [0, 1, 2, 3]);
  t.is(fake.files.get(path.join(s.paths.cpuset!, 'cpuset.cpus')), '0-3');
  // The same names can be created afterwards.
  t.notThrows(() => m.create(B, 'r', { resources: { cores: [3] } }));
});

test('fake v1 tree: createAsync (steps off the loop) undoes a failing limit write as create does; EEXIST for a name in flight', async (t) => {
  const { root, layout } = fakeV1Tree(t);
  const cs = path.join(root, 'cpuset');
  const fake = fakeAddon(cs);
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const s = await m.createAsync(A, 's');
  t.true(fs.existsSync(path.join(root, 'freezer', 'corral', `${A}-s`)));
  fake.failOn = (p) => (p.endsWith('memory.limit_in_bytes') ? err('EINVAL', 22, p) : undefined);
  const e = await t.throwsAsync(m.createAsync(B, 'r', { resources: { cores: [3], memoryBytes: 1 << 20 } }), { instanceOf: CgroupError });
  t.is(e!.code, 'EINVAL');
  t.regex(e!.path ?? '', /memory\.limit_in_bytes/);
  fake.failOn = undefined;
  for (const d of ['freezer', 'memory', 'pids', 'cpu,cpuacct']) t.false(fs.existsSync(path.join(root, d, 'corral', `${B}-r`)));
  t.false(fs.existsSync(path.join(cs, 'corral/reserve', `${B}-r`)));
  t.deepEqual(m.sharedCores(), [0, 1, 2, 3]);
  t.is(fake.files.get(path.join(s.paths.cpuset!, 'cpuset.cpus')), '0-3');
  const [g1, g2] = await Promise.allSettled([m.createAsync(C, 'twice'), m.createAsync(C, 'twice')]);
  t.is(g1.status, 'fulfilled');
  t.is(g2.status === 'rejected' && (g2.reason as CgroupError).code, 'EEXIST');
  const r = await m.createAsync(B, 'r', { resources: { cores: [3] } });
  t.deepEqual(r.cpus(), [3]);
  t.deepEqual(m.sharedCores(), [0, 1, 2]);
  await r.destroy();
  t.deepEqual(m.sharedCores(), [0, 1, 2, 3]);
  t.false(fs.existsSync(path.join(root, 'freezer', 'corral', `${B}-r`)));
});

test('fake v1 tree: EEXIST for a group that exists, ENOENT for open of one that does not, open restores a reservation', (t) => {
  const { root, layout } = fakeV1Tree(t);
  const fake = fakeAddon(path.join(root, 'cpuset'));
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  m.create(A, 'r', { resources: { cores: [2] } });
  t.throws(() => m.create(A, 'r'), { instanceOf: CgroupError, code: 'EEXIST' });
  const m2 = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  t.throws(() => m2.create(A, 'r'), { instanceOf: CgroupError, code: 'EEXIST' });
  const g = m2.open(A, 'r');
  t.deepEqual(g.cpus(), [2]);
  t.deepEqual(m2.sharedCores(), [0, 1, 3]);
  const missing = t.throws(() => m2.open(B, 'nope'), { instanceOf: CgroupError });
  t.is(missing!.code, 'ENOENT');
  t.regex(missing!.message, new RegExp(`${B}-nope`));
});

test('fake v1 tree: cleanupStale removes empty groups of ours, reports busy ones, keeps what it is told', async (t) => {
  const { root, layout } = fakeV1Tree(t);
  const fake = fakeAddon(path.join(root, 'cpuset'));
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const busy = m.create(A, 'busy');
  m.create(B, 'empty', { resources: { cores: [1] } });
  m.create(C, 'kept');
  busy.join(42);
  const m2 = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const r = await m2.cleanupStale({ keep: (n) => n.endsWith('-kept') });
  t.deepEqual(r.removed, [`${B}-empty`]);
  t.deepEqual(r.nonEmpty, [`${A}-busy`]);
  t.true(fs.existsSync(path.join(root, 'freezer/corral', `${C}-kept`)));
  t.false(fs.existsSync(path.join(root, 'cpuset/corral/reserve', `${B}-empty`)));
});

test('fake v1 tree: freeze timeout is a CgroupTimeoutError; a missing controller is a CgroupUnsupportedError before anything is made', async (t) => {
  const { root, layout } = fakeV1Tree(t);
  const fake = fakeAddon(path.join(root, 'cpuset'));
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const g = m.create(A, 'f');
  fake.freezeTimesOut = true;
  const e = await t.throwsAsync(g.freeze({ timeoutMs: 20 }), { instanceOf: CgroupTimeoutError });
  t.is(e!.timeoutMs, 20);
  t.regex(e!.message, /did not freeze within 20 ms/);
  const noPids: CgroupLayout = { ...layout, v1Mounts: { ...layout.v1Mounts } };
  delete noPids.v1Mounts.pids;
  const m2 = new CgroupV1Manager({ layout: noPids, parentName: 'corral2', native: () => fake, lockDir: root });
  const u = t.throws(() => m2.create(B, 'p', { resources: { pidsMax: 5 } }), { instanceOf: CgroupUnsupportedError });
  t.is(u!.feature, 'pids');
  t.false(fs.existsSync(path.join(root, 'freezer/corral2')));
});

function fakeV2Tree(t: { teardown: (fn: () => void) => void }, controllers: string): { root: string; layout: CgroupLayout } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-fake-v2-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.writeFileSync(path.join(root, 'cgroup.controllers'), controllers + '\n');
  fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), '\n');
  if (controllers.includes('cpuset')) fs.writeFileSync(path.join(root, 'cpuset.cpus.effective'), '0-3\n');
  return { root, layout: { mode: 'v2', version: 'v2', root, v1Mounts: {}, unifiedMount: root } };
}

test('fake v2 tree: share.slice and reserve.slice, controllers enabled down the tree, a reservation change is two writes', async (t) => {
  const { root, layout } = fakeV2Tree(t, 'cpuset cpu io memory pids');
  const fake = fakeAddon();
  const m = new CgroupV2Manager({ layout, parentName: 'corral.slice', native: () => fake, lockDir: root });
  const s1 = m.create(A, 's1', { resources: { cpuShares: 1024, memoryBytes: 1 << 24, pidsMax: 7 } });
  for (const d of ['', 'corral.slice', 'corral.slice/share.slice', 'corral.slice/reserve.slice']) {
    t.is(fake.files.get(path.join(root, d, 'cgroup.subtree_control')), 'cpu cpuset memory pids', `controllers enabled in /${d}`);
  }
  t.deepEqual(m.controllers(), ['cpu', 'cpuset', 'memory', 'pids']);
  const share = path.join(root, 'corral.slice', 'share.slice');
  const d = path.join(share, `${A}-s1.scope`);
  t.is(s1.placement.cgroupDir, d);
  t.is(fake.files.get(path.join(d, 'cpu.weight')), '39');
  t.is(fake.files.get(path.join(d, 'memory.max')), String(1 << 24));
  t.is(fake.files.get(path.join(d, 'pids.max')), '7');
  t.is(fake.files.get(path.join(d, 'cpuset.cpus')), undefined, 'a shared scope inherits the share pool');
  t.is(fake.files.get(path.join(share, 'cpuset.cpus')), '0-3');
  const others = Array.from({ length: 20 }, () => m.create(randomUUID(), 'more'));
  const before = fake.log.length;
  const r = m.create(C, 'r', { resources: { cores: [0] } });
  const rdir = path.join(root, 'corral.slice', 'reserve.slice', `${C}-r.scope`);
  t.deepEqual(fake.log.slice(before).filter((l) => l.includes('cpuset.cpus')), [`${share}/cpuset.cpus=1-3`, `${rdir}/cpuset.cpus=0`]);
  t.deepEqual(s1.cpus(), [1, 2, 3]);
  t.deepEqual(r.cpus(), [0]);
  t.deepEqual(m.sharedCores(), [1, 2, 3]);
  const m2 = new CgroupV2Manager({ layout, parentName: 'corral.slice', native: () => fake, lockDir: root });
  t.is(t.throws(() => m2.create(B, 'thief', { resources: { cores: [0] } }), { instanceOf: CpusetConflictError })!.heldBy, `${C}-r`,
    'a second manager sees the reservation in the tree');
  const mark = fake.log.length;
  await r.destroy();
  t.deepEqual(fake.log.slice(mark).filter((l) => l.includes('cpuset.cpus')), [`${share}/cpuset.cpus=0-3`]);
  t.deepEqual(s1.cpus(), [0, 1, 2, 3]);
  for (const g of [s1, ...others]) await g.destroy();
  await m.removeParentIfEmpty();
  t.false(fs.existsSync(path.join(root, 'corral.slice')));
});

test('fake v2 tree: a 0.1-layout scope (directly under the parent) is opened, kept off reserved cores, and removed', async (t) => {
  const { root, layout } = fakeV2Tree(t, 'cpuset cpu memory pids');
  const fake = fakeAddon();
  const old = path.join(root, 'corral.slice', `${A}-old.scope`);
  const oldRes = path.join(root, 'corral.slice', `${B}-oldres.scope`);
  fs.mkdirSync(old, { recursive: true });
  fs.mkdirSync(oldRes);
  fake.files.set(path.join(old, 'cpuset.cpus'), '0-2');
  fake.files.set(path.join(oldRes, 'cpuset.cpus'), '3');
  const m = new CgroupV2Manager({ layout, parentName: 'corral.slice', native: () => fake, lockDir: root });
  const g = m.open(A, 'old');
  t.is(g.placement.cgroupDir, old);
  const gr = m.open(B, 'oldres', { resources: { cores: [3] } });
  t.deepEqual(gr.cpus(), [3]);
  t.deepEqual(m.sharedCores(), [0, 1, 2]);
  t.is(t.throws(() => m.create(C, 'x', { resources: { cores: [3] } }), { instanceOf: CpusetConflictError })!.heldBy, `${B}-oldres`);
  const r = m.create(C, 'r', { resources: { cores: [0] } });
  t.is(fake.files.get(path.join(old, 'cpuset.cpus')), '1-2', 'the old shared scope leaves the new reservation too');
  t.deepEqual(g.cpus(), [1, 2]);
  await gr.destroy();
  t.is(fake.files.get(path.join(old, 'cpuset.cpus')), '1-3');
  for (const x of [g, r]) await x.destroy();
  t.false(fs.existsSync(old));
  await m.removeParentIfEmpty();
  t.false(fs.existsSync(path.join(root, 'corral.slice')));
});

test('fake v1 tree: 0.1-layout groups (shared/ and reserved/ with one cpuset group each) are opened, kept in line and removed', async (t) => {
  const { root, layout } = fakeV1Tree(t);
  const cs = path.join(root, 'cpuset');
  const fake = fakeAddon(cs);
  // What corral 0.1 left: corral (0-3), shared (0-2) with one child, reserved (3) with one child.
  const mk = (d: string, cpus: string) => { fs.mkdirSync(path.join(cs, d), { recursive: true }); fake.files.set(path.join(cs, d, 'cpuset.cpus'), cpus); fake.files.set(path.join(cs, d, 'cpuset.mems'), '0'); };
  mk('corral', '0-3');
  mk('corral/shared', '0-2');
  mk(`corral/shared/${A}-old`, '0-2');
  mk('corral/reserved', '3');
  mk(`corral/reserved/${B}-oldres`, '3');
  for (const n of [`${A}-old`, `${B}-oldres`]) for (const c of ['freezer', 'memory', 'pids', 'cpu,cpuacct']) fs.mkdirSync(path.join(root, c, 'corral', n), { recursive: true });
  const m = new CgroupV1Manager({ layout, parentName: 'corral', native: () => fake, lockDir: root });
  const g = m.open(A, 'old');
  t.is(g.paths.cpuset, path.join(cs, `corral/shared/${A}-old`));
  const gr = m.open(B, 'oldres');
  t.deepEqual(gr.cpus(), [3], 'a 0.1 reserved group keeps its cores, read from the tree');
  t.deepEqual(m.sharedCores(), [0, 1, 2]);
  t.is(fake.files.get(path.join(cs, 'corral/share/cpuset.cpus')), '0-2');
  t.throws(() => m.create(C, 'x', { resources: { cores: [3] } }), { instanceOf: CpusetConflictError });
  const r = m.create(C, 'r', { resources: { cores: [0] } });
  t.is(fake.files.get(path.join(cs, `corral/shared/${A}-old/cpuset.cpus`)), '1-2', 'the old shared group leaves the new reservation');
  t.deepEqual(g.cpus(), [1, 2]);
  await gr.destroy();
  t.deepEqual(g.cpus(), [1, 2, 3]);
  t.is(fake.files.get(path.join(cs, 'corral/share/cpuset.cpus')), '1-3');
  for (const x of [g, r]) await x.destroy();
  for (const c of ['freezer', 'memory', 'pids', 'cpu,cpuacct']) t.deepEqual(fs.readdirSync(path.join(root, c, 'corral')), []);
  await m.removeParentIfEmpty();
  t.false(fs.existsSync(path.join(cs, 'corral')));
});

test('fake v2 tree without controllers (hybrid unified): limits refused before anything is created; stats say why', (t) => {
  const { root, layout: l } = fakeV2Tree(t, '');
  const layout = { ...l, mode: 'hybrid' as const };
  const fake = fakeAddon();
  const m = new CgroupV2Manager({ layout, parentName: 'corral.slice', native: () => fake, lockDir: root });
  const cases: Array<[TaskResources, string]> = [[{ cores: [0] }, 'cpuset'], [{ memoryBytes: 1 << 20 }, 'memory'], [{ pidsMax: 3 }, 'pids'], [{ cpuShares: 100 }, 'cpu']];
  for (const [res, ctrl] of cases) {
    const e = t.throws(() => m.create(A, 'x', { resources: res }), { instanceOf: CgroupUnsupportedError });
    t.is(e!.feature, ctrl);
    t.regex(e!.message, /hybrid host and has no controllers/);
  }
  t.false(fs.existsSync(path.join(root, 'corral.slice')));
  const g = m.create(A, 'ok');
  t.deepEqual(m.controllers(), []);
  const s = g.stats();
  t.is(s.memory, undefined);
  t.regex(s.unavailable.memory!, /no memory controller/);
  t.false(g.oomKilled());
});
