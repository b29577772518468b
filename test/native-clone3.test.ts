// clone3 fallbacks, for real: Node runs under a seccomp filter (test/fixtures/seccomp/clone3-deny.c,
// compiled here with the machine's C compiler) that makes corral's clone3 (CLONE_INTO_CGROUP) fail
// with EPERM (a seccomp profile older than clone3, common in CI sandboxes), ENOSYS or E2BIG, and
// spawns `cat /proc/self/cgroup` into a cgroup2 group through the native spawn. The child must take
// the join path (placement 'join') and be in the group when it runs: what it reads as its own cgroup
// is the group. Without the filter (the control), the same spawn is placement 'clone3'. A clone3
// failure that is no reason to fall back (EAGAIN) is the spawn's error (syscall 'clone3'). Each
// leaves no fd open in the spawning process.
// x86_64 only (elsewhere there is no clone3 trampoline: spawn always joins).
import test from 'ava';
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hostLayout } from './helpers/cgroups.js';
import { bound, sandbox } from './helpers/sandbox.js';

const layout = hostLayout();
const V2 = layout.unifiedMount ?? '/sys/fs/cgroup/unified';
const ROOT = path.join(__dirname, '..');
const ts = process.arch === 'x64' ? test.serial : test.skip;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-clone3-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));
let helper: string | undefined;
/** The seccomp helper, compiled once per file. */
function compileHelper(): string {
  if (helper) return helper;
  const out = path.join(tmp, 'clone3-deny');
  cp.execFileSync('cc', ['-O1', '-Wall', '-o', out, path.join(ROOT, 'test', 'fixtures', 'seccomp', 'clone3-deny.c')], { stdio: 'pipe' });
  helper = out;
  return out;
}

interface Seen { placement?: string; cgroup?: string | null; exitCode?: number | null; code?: string; syscall?: string; newFds: string[] }

/** Runs test/helpers/clone3-child.ts (under the helper when `deny` is set); its JSON line and stderr. */
function runChild(deny: string | undefined, group: string): { seen: Seen; stderr: string } {
  const node = [process.execPath, '--import', 'tsx', path.join(ROOT, 'test', 'helpers', 'clone3-child.ts'), group];
  const [file, ...args] = deny ? [compileHelper(), deny, ...node] : node;
  const r = cp.spawnSync(file!, args, { cwd: ROOT, encoding: 'utf8', timeout: bound(60_000) });
  if (r.status !== 0) throw new Error(`${deny ?? 'control'}: status ${r.status} signal ${r.signal}\n${r.stdout}\n${r.stderr}`);
  return { seen: JSON.parse(r.stdout.trim().split('\n').pop()!) as Seen, stderr: r.stderr };
}

function group(t: import('ava').ExecutionContext): { dir: string; rel: string } {
  const sb = sandbox(t, 'clone3');
  const dir = path.join(V2, sb.parent, 'g.scope');
  fs.mkdirSync(dir, { recursive: true });
  return { dir, rel: `/${sb.parent}/g.scope` };
}

ts('control: without a filter, a spawn into a cgroup2 group is clone3 with CLONE_INTO_CGROUP', (t) => {
  const g = group(t);
  const { seen } = runChild(undefined, g.dir);
  t.deepEqual(seen, { placement: 'clone3', cgroup: g.rel, exitCode: 0, newFds: [] });
});

for (const deny of ['EPERM', 'ENOSYS', 'E2BIG']) {
  ts(`clone3 failing with ${deny} under seccomp: the spawn falls back to joining, the child is in the group when it runs`, (t) => {
    const g = group(t);
    const { seen, stderr } = runChild(deny, g.dir);
    // The filter really answered corral's clone3 (and only that one) with the error.
    t.regex(stderr, /clone3-deny: denied 1 passed \d+/);
    t.deepEqual(seen, { placement: 'join', cgroup: g.rel, exitCode: 0, newFds: [] });
  });
}

ts('clone3 failing with EAGAIN (no reason to fall back): the spawn fails naming clone3, nothing started, no fd left', (t) => {
  const g = group(t);
  const { seen, stderr } = runChild('EAGAIN', g.dir);
  t.regex(stderr, /clone3-deny: denied 1 passed \d+/);
  t.deepEqual(seen, { code: 'EAGAIN', syscall: 'clone3', newFds: [] });
  t.is(fs.readFileSync(path.join(g.dir, 'cgroup.procs'), 'utf8'), '');
});
