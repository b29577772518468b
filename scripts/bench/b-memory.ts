/**
 * 6. Memory: the agent's RSS with 1000 raw_exec tasks running `sleep`, as bytes per task:
 * (RSS with the tasks running − RSS before, after a warm-up and a full GC) / 1000.
 * Baseline, in a separate fresh Node process: 1000 `sleep`s through child_process.spawn, no cgroups.
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
  const r0 = rss();
  const kids = [];
  for (let i = 0; i < N; i++) { const c = cp.spawn('/bin/sleep', ['3600'], { stdio: 'ignore' }); kids.push(c); }
  await new Promise(r => setTimeout(r, 500)); gc(); gc();
  const r1 = rss();
  for (const c of kids) c.kill('SIGKILL');
  await Promise.all(kids.map(c => c.exitCode !== null || c.signalCode !== null ? null : new Promise(r => c.on('exit', r))));
  process.stdout.write(JSON.stringify({ r0, r1 }));
})();
`;

export async function run(o: BenchOptions): Promise<Section> {
  const N = o.quick ? 300 : 1000;
  const notes: string[] = [];
  const KiB = 1024;
  const parentName = `${BENCH_PARENT}-mem`;
  onCleanup(async () => {
    for (const mnt of new Set(Object.values(v1Mounts()))) await removeCgroupTree(path.join(mnt, parentName));
    await removeCgroupTree(path.join(UNIFIED, parentName));
  });

  // Baseline first, in its own process, so neither run reuses memory the other freed.
  let base;
  try {
    const out = cp.execFileSync(process.execPath, ['--expose-gc', '-e', BASELINE, String(N)], { encoding: 'utf8', timeout: 120_000 });
    const { r0, r1 } = JSON.parse(out) as { r0: number; r1: number };
    base = measure([(r1 - r0) / N], 'bytes/task');
    notes.push(`child_process.spawn baseline: RSS ${(r0 / 2 ** 20).toFixed(1)} → ${(r1 / 2 ** 20).toFixed(1)} MiB with ${N} sleeps.`);
  } catch (err) {
    base = missing('bytes/task', errMsg(err));
  }

  let corral;
  let extra: Record<string, string | number> = {};
  const mgr = await loadCgroupManager({ parentName });
  const drv = mgr.ok ? await loadRawExec({ cgroupManager: mgr.value, stateDir: stateDir() }) : mgr;
  if (!drv.ok) corral = missing('bytes/task', drv.reason);
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
      await sleep(200);
      gc();
      const r0 = rssBytes();
      const h0 = process.memoryUsage();
      const t0 = Date.now();
      await startMany(N, 'mem');
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
      corral = measure([(r1 - r0) / N], 'bytes/task');
      extra = { running, 'V8 heap/task': `${((h1.heapUsed - h0.heapUsed) / N / KiB).toFixed(1)} KiB`, 'external/task': `${((h1.external + h1.arrayBuffers - h0.external - h0.arrayBuffers) / N / KiB).toFixed(1)} KiB` };
      notes.push(`corral: RSS ${(r0 / 2 ** 20).toFixed(1)} → ${(r1 / 2 ** 20).toFixed(1)} MiB with ${running} of ${N} tasks running (started in ${startS.toFixed(1)} s, 8 at a time).`);
      await stopAll();
    } catch (err) {
      corral = missing('bytes/task', errMsg(err));
    }
  }
  const ratio = corral.median != null ? corral.median / KiB : null;
  const toKiB = (m: typeof corral) => ({ ...m, median: m.median == null ? null : m.median / KiB, runs: m.runs.map((r) => Math.round((r / KiB) * 10) / 10), unit: 'KiB/task' });
  return {
    id: 'memory',
    title: `6. Memory: agent RSS with ${N} raw_exec tasks running sleep`,
    unit: 'KiB of agent RSS per running task (lower is better)',
    columns: ['corral raw_exec', 'child_process.spawn (no cgroup)'],
    rows: [
      {
        case: `${N} tasks`,
        values: { 'corral raw_exec': toKiB(corral), 'child_process.spawn (no cgroup)': toKiB(base) },
        checks: [{ target: '< 20 KiB per task', ratio: ratio == null ? null : Math.round(ratio * 10) / 10, ratioText: ratio == null ? 'n/a' : `${ratio.toFixed(1)} KiB`, met: ratio == null ? null : ratio < 20, ...(ratio == null ? { why: corral.note } : {}) }],
        extra,
      },
    ],
    notes,
  };
}
