/**
 * 6. Memory per running task: the agent's RSS and V8 heap with N raw_exec tasks running `sleep`, as
 * bytes per task: (figure with the tasks running − figure before, after a warm-up and a full GC) / N.
 * Baseline, in a separate fresh Node process: N `sleep`s through child_process.spawn, no cgroups,
 * measured the same way. Goal (issue 13): corral's RSS per task ≤ child_process's per child.
 */
import * as cp from 'node:child_process';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { TaskDriver } from '../../src/drivers/contract.js';
import { BENCH_PARENT, stateDir, errMsg, gc, measure, missing, onCleanup, removeCgroupTree, rssBytes, sleep, v1Mounts, UNIFIED, type Section, type BenchOptions } from './lib.js';
import { loadCgroupManager, loadRawExec } from './corral.js';

const BASELINE = `
const cp = require('node:child_process');
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','utf8'))[1]) * 1024;
const N = Number(process.argv[1]);
(async () => {
  for (let i = 0; i < 20; i++) { const c = cp.spawn('/bin/sleep', ['3600'], { stdio: 'ignore' }); c.kill('SIGKILL'); await new Promise(r => c.on('exit', r)); }
  await new Promise(r => setTimeout(r, 200)); gc(); gc();
  const r0 = rss(); const h0 = process.memoryUsage().heapUsed;
  const kids = [];
  for (let i = 0; i < N; i++) { const c = cp.spawn('/bin/sleep', ['3600'], { stdio: 'ignore' }); kids.push(c); }
  await new Promise(r => setTimeout(r, 500)); gc(); gc();
  const r1 = rss(); const h1 = process.memoryUsage().heapUsed;
  for (const c of kids) c.kill('SIGKILL');
  await Promise.all(kids.map(c => c.exitCode !== null || c.signalCode !== null ? null : new Promise(r => c.on('exit', r))));
  process.stdout.write(JSON.stringify({ r0, r1, h0, h1 }));
})();
`;

interface Mem { rss: number; heap: number; note: string; running?: number }

export async function run(o: BenchOptions): Promise<Section> {
  const sizes = o.quick ? [100, 200] : [200, 400];
  const notes: string[] = [];
  const KiB = 1024;
  const parentName = `${BENCH_PARENT}-mem`;
  onCleanup(async () => {
    for (const mnt of new Set(Object.values(v1Mounts()))) await removeCgroupTree(path.join(mnt, parentName));
    await removeCgroupTree(path.join(UNIFIED, parentName));
  });

  // Baselines first, each in its own fresh process, so no run reuses memory another freed.
  const baseline = (N: number): Mem | string => {
    try {
      const out = cp.execFileSync(process.execPath, ['--expose-gc', '-e', BASELINE, String(N)], { encoding: 'utf8', timeout: 120_000 });
      const { r0, r1, h0, h1 } = JSON.parse(out) as { r0: number; r1: number; h0: number; h1: number };
      return { rss: (r1 - r0) / N, heap: (h1 - h0) / N, note: `child_process.spawn, N = ${N}: RSS ${(r0 / 2 ** 20).toFixed(1)} → ${(r1 / 2 ** 20).toFixed(1)} MiB` };
    } catch (err) {
      return errMsg(err);
    }
  };
  const bases = new Map(sizes.map((N) => [N, baseline(N)] as const));

  const mgr = await loadCgroupManager({ parentName });
  const drv = mgr.ok ? await loadRawExec({ cgroupManager: mgr.value, stateDir: stateDir() }) : mgr;
  const corral = new Map<number, Mem | string>();
  if (!drv.ok) for (const N of sizes) corral.set(N, drv.reason);
  else {
    const driver: TaskDriver = drv.value;
    const ids: string[] = [];
    onCleanup(async () => {
      await Promise.allSettled(ids.map((id) => driver.destroyTask(id, { force: true })));
      await driver.shutdown();
    });
    const startMany = async (n: number, prefix: string) => {
      let next = 0;
      const worker = async () => {
        while (next < n) {
          const id = `${prefix}-${next++}`;
          await driver.startTask({ id, allocId: randomUUID(), name: 'sleep', driver: { command: '/bin/sleep', args: ['3600'] } });
          ids.push(id);
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
    };
    const stopAll = async () => {
      const list = ids.splice(0);
      let next = 0;
      const worker = async () => {
        while (next < list.length) {
          const id = list[next++]!;
          await driver.stopTask(id, { timeoutMs: 1000, signal: 'SIGKILL' }).catch(() => {});
          await driver.destroyTask(id, { force: true }).catch(() => {});
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
    };
    try {
      await startMany(20, 'warm');
      await stopAll();
      for (const N of sizes) {
        await sleep(200);
        gc();
        const r0 = rssBytes();
        const h0 = process.memoryUsage();
        const t0 = Date.now();
        await startMany(N, `mem${N}`);
        const startS = (Date.now() - t0) / 1000;
        await sleep(500);
        gc();
        const r1 = rssBytes();
        const h1 = process.memoryUsage();
        const running = ids.filter((id) => {
          try {
            return driver.inspectTask(id).state === 'running';
          } catch {
            return false;
          }
        }).length;
        corral.set(N, {
          rss: (r1 - r0) / N, heap: (h1.heapUsed - h0.heapUsed) / N, running,
          note: `corral raw_exec, N = ${N}: RSS ${(r0 / 2 ** 20).toFixed(1)} → ${(r1 / 2 ** 20).toFixed(1)} MiB with ${running} of ${N} tasks running (started in ${startS.toFixed(1)} s, 8 at a time); external+arrayBuffers ${((h1.external + h1.arrayBuffers - h0.external - h0.arrayBuffers) / N / KiB).toFixed(1)} KiB/task`,
        });
        await stopAll();
      }
    } catch (err) {
      for (const N of sizes) if (!corral.has(N)) corral.set(N, errMsg(err));
    }
  }
  const cols = ['corral raw_exec: RSS', 'child_process.spawn: RSS', 'corral raw_exec: V8 heap', 'child_process.spawn: V8 heap'];
  const val = (m: Mem | string | undefined, k: 'rss' | 'heap') =>
    typeof m === 'object' ? measure([Math.round((m[k] / KiB) * 10) / 10], 'KiB/task') : missing('KiB/task', m ?? 'not measured');
  const rows = sizes.map((N) => {
    const c = corral.get(N);
    const b = bases.get(N);
    for (const m of [b, c]) if (typeof m === 'object') notes.push(m.note);
    const ok = typeof c === 'object' && typeof b === 'object';
    const ratio = ok ? c.rss / b.rss : null;
    return {
      case: `N = ${N} running`,
      values: { [cols[0]!]: val(c, 'rss'), [cols[1]!]: val(b, 'rss'), [cols[2]!]: val(c, 'heap'), [cols[3]!]: val(b, 'heap') },
      checks: [{
        target: 'RSS per task ≤ child_process per child',
        ratio: ratio == null ? null : Math.round(ratio * 100) / 100,
        ratioText: ratio == null ? 'n/a' : `${ratio.toFixed(2)}x of it`,
        met: ratio == null ? null : ratio <= 1,
        ...(ratio == null ? { why: typeof c === 'string' ? c : String(b) } : {}),
      }],
      extra: (typeof c === 'object' ? { running: c.running ?? 0 } : {}) as Record<string, number>,
    };
  });
  notes.push('RSS and heap deltas are of the whole agent process after a full GC: the driver\'s task table, records, pidfd watches and events, and for child_process its ChildProcess objects and pipes (stdio ignored).');
  return {
    id: 'memory',
    title: '6. Memory per running task: agent RSS and V8 heap, N raw_exec tasks vs N child_process children',
    unit: 'KiB per running task (lower is better)',
    columns: cols,
    rows,
    notes,
  };
}
