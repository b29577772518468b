// raw_exec never blocks the event loop (kernel tests, as root, each in a sandbox of its own):
// - execTask into a frozen task group and startTask under a frozen parent fail at once with a clear
//   CgroupFrozenError (within their bound) while a 10 ms heartbeat keeps ticking, and leave nothing;
// - 200 concurrent startTask calls with a heartbeat and monitorEventLoopDelay: the figures are logged,
//   not asserted (the machine is shared; timing assertions would flake).
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { RawExecDriver } from '../src/drivers/raw_exec/index.js';
import { CgroupFrozenError } from '../src/errors.js';
import type { TaskConfig, TaskHandle } from '../src/drivers/contract.js';
import { isRoot, newAllocId } from './helpers/cgroups.js';
import { heartbeat } from './helpers/loop.js';
import { sandbox } from './helpers/sandbox.js';

const ts = isRoot ? test.serial : test.skip;
const ENV = { PATH: '/usr/local/bin:/usr/bin:/bin' };

function task(name: string, args: string[] = ['60']): TaskConfig<any> {
  return { id: `${name}-${randomBytes(3).toString('hex')}`, allocId: newAllocId(), name, env: ENV, driver: { command: 'sleep', args } };
}

/** The freeze control of a task's group (v1 freezer.state or v2 cgroup.freeze) and of its parent. */
function freezeFiles(h: TaskHandle): { task: [string, string, string]; parent: [string, string, string] } {
  const paths = (h.driverState as { cgroup: { paths: Record<string, string> } }).cgroup.paths;
  if (paths.freezer) {
    return {
      task: [path.join(paths.freezer, 'freezer.state'), 'FROZEN', 'THAWED'],
      parent: [path.join(path.dirname(paths.freezer), 'freezer.state'), 'FROZEN', 'THAWED'],
    };
  }
  const dir = Object.values(paths)[0]!;
  // v2: <parent>.slice/share.slice/<task>.scope: freeze the parent slice.
  return { task: [path.join(dir, 'cgroup.freeze'), '1', '0'], parent: [path.join(path.dirname(path.dirname(dir)), 'cgroup.freeze'), '1', '0'] };
}

ts('execTask into a frozen task group and startTask under a frozen parent: CgroupFrozenError at once, loop ticking, nothing left', async (t) => {
  const sb = sandbox(t, 'rawexec-frozen');
  const driver = new RawExecDriver({ stateDir: sb.stateDir, cgroupParent: sb.parent });
  sb.defer(() => driver.shutdown());
  const h = await driver.startTask(task('victim'));
  sb.defer(() => driver.destroyTask(h.taskId, { force: true }).catch(() => {}));
  const f = freezeFiles(h);
  const thaw = () => { for (const [p, , v] of [f.task, f.parent]) { try { fs.writeFileSync(p, v); } catch { /* gone */ } } };
  sb.defer(thaw);

  fs.writeFileSync(f.task[0], f.task[1]);
  let hb = heartbeat();
  let t0 = performance.now();
  const e1 = await t.throwsAsync(driver.execTask(h.taskId, ['echo', 'hi'], { timeoutMs: 2000 }), { instanceOf: CgroupFrozenError });
  t.log(`execTask into a frozen group: ${e1!.code} after ${(performance.now() - t0).toFixed(1)} ms (bound 2000); heartbeat max gap ${hb.stop().toFixed(1)} ms`);
  t.is(e1!.code, 'ERR_CGROUP_FROZEN');
  fs.writeFileSync(f.task[0], f.task[2]);

  fs.writeFileSync(f.parent[0], f.parent[1]);
  const cfg = task('late');
  hb = heartbeat();
  t0 = performance.now();
  const e2 = await t.throwsAsync(driver.startTask(cfg), { instanceOf: CgroupFrozenError });
  t.log(`startTask under a frozen parent: ${e2!.code} after ${(performance.now() - t0).toFixed(1)} ms; heartbeat max gap ${hb.stop().toFixed(1)} ms`);
  t.regex(e2!.message, /is frozen/);
  thaw();
  // Nothing of the refused start is left: no record, no task, no group.
  t.false(fs.readdirSync(sb.stateDir).some((n) => n.includes(cfg.id)), 'no record');
  t.throws(() => driver.inspectTask(cfg.id));
  t.false(fs.existsSync(path.join(path.dirname(f.parent[0]), `${cfg.allocId}-late`)), 'no group');
  // The task itself was only frozen, and runs on.
  const r = await driver.execTask(h.taskId, ['echo', 'hi'], { timeoutMs: 10_000 });
  t.is(r.stdout, 'hi\n');
});

ts('200 concurrent startTask calls: the loop keeps ticking (max gap, monitorEventLoopDelay max and p99 logged)', async (t) => {
  const sb = sandbox(t, 'rawexec-many');
  const driver = new RawExecDriver({ stateDir: sb.stateDir, cgroupParent: sb.parent });
  sb.defer(() => driver.shutdown());
  const N = 200;
  const cfgs = Array.from({ length: N }, (_, i) => task(`m${i}`, ['120']));
  sb.defer(() => Promise.all(cfgs.map((c) => driver.destroyTask(c.id, { force: true }).catch(() => {}))));
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const hb = heartbeat();
  const t0 = performance.now();
  const calls = cfgs.map((c) => driver.startTask(c));
  const callsMs = performance.now() - t0; // the calls themselves, up to each one's first await
  const results = await Promise.allSettled(calls);
  const took = performance.now() - t0;
  const gap = hb.stop();
  h.disable();
  const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  t.log(`${N} concurrent starts in ${took.toFixed(0)} ms (the ${N} calls themselves: ${callsMs.toFixed(1)} ms); heartbeat max gap ${gap.toFixed(1)} ms; ` +
    `monitorEventLoopDelay max ${(h.max / 1e6).toFixed(1)} ms, p99 ${(h.percentile(99) / 1e6).toFixed(1)} ms, mean ${(h.mean / 1e6).toFixed(2)} ms`);
  t.deepEqual(failed.map((f) => String(f.reason)), [], 'every start succeeded');
  const t1 = performance.now();
  await Promise.all(cfgs.map((c) => driver.destroyTask(c.id, { force: true })));
  t.log(`${N} destroys in ${(performance.now() - t1).toFixed(0)} ms`);
});
