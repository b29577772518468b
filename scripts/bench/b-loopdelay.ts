/**
 * Event-loop delay while corral works: N concurrent raw_exec startTask calls (then their destroys),
 * with monitorEventLoopDelay (resolution 1 ms) and a 10 ms heartbeat running. The goal for
 * N = 200: loop delay max <= 20 ms and p99 <= 5 ms. The figures are medians over the repetitions.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { RawExecDriver } from '../../src/drivers/raw_exec/index.js';
import type { TaskConfig } from '../../src/drivers/contract.js';
import { BENCH_PARENT, type BenchOptions, benchParents, measure, onCleanup, removeCgroupTree, type Check, type Row, type Section } from './lib.js';
import { DEFAULT_LOCK_DIR } from '../../src/cgroups/lock.js';

function goal(target: string, value: number, limit: number): Check {
  return { target, ratio: value / limit, ratioText: `${value.toFixed(1)} ms (goal <= ${limit})`, met: value <= limit };
}

export async function run(o: BenchOptions): Promise<Section> {
  const N = 200;
  const reps = o.quick ? 2 : 3;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-bench-loopdelay-'));
  const parent = `${BENCH_PARENT}-loopdelay`;
  const driver = new RawExecDriver({ stateDir, cgroupParent: parent });
  onCleanup(async () => {
    await driver.shutdown().catch(() => {});
    fs.rmSync(stateDir, { recursive: true, force: true });
    // The driver's parent groups (and the cpuset partition's lock file of that parent).
    for (const d of benchParents(parent)) await removeCgroupTree(d).catch(() => {});
    for (const f of fs.existsSync(DEFAULT_LOCK_DIR) ? fs.readdirSync(DEFAULT_LOCK_DIR) : []) {
      if (f.endsWith(`-${parent}.lock`)) fs.rmSync(path.join(DEFAULT_LOCK_DIR, f), { force: true });
    }
  });
  const max: number[] = [], p99: number[] = [], mean: number[] = [], gap: number[] = [], startMs: number[] = [];
  const dMax: number[] = [], dP99: number[] = [];
  for (let r = 0; r < reps; r++) {
    const cfgs: TaskConfig<any>[] = Array.from({ length: N }, (_, i) => ({
      id: `ld${r}-${i}-${randomUUID().slice(0, 6)}`, allocId: randomUUID(), name: `ld${i}`, env: { PATH: '/usr/bin:/bin' },
      driver: { command: 'sleep', args: ['120'] },
    }));
    const h = monitorEventLoopDelay({ resolution: 1 });
    let last = performance.now();
    let worst = 0;
    const iv = setInterval(() => { const t = performance.now(); worst = Math.max(worst, t - last); last = t; }, 10);
    h.enable();
    const t0 = performance.now();
    const res = await Promise.allSettled(cfgs.map((c) => driver.startTask(c)));
    startMs.push(performance.now() - t0);
    h.disable();
    clearInterval(iv);
    max.push(h.max / 1e6);
    p99.push(h.percentile(99) / 1e6);
    mean.push(h.mean / 1e6);
    gap.push(worst);
    // The destroys too (group kill, rmdirs, records), for the record: not the goal.
    const hd = monitorEventLoopDelay({ resolution: 1 });
    hd.enable();
    await Promise.all(cfgs.map((c) => driver.destroyTask(c.id, { force: true }).catch(() => {})));
    hd.disable();
    dMax.push(hd.max / 1e6);
    dP99.push(hd.percentile(99) / 1e6);
    const failed = res.filter((x) => x.status === 'rejected').length;
    if (failed) throw new Error(`${failed} of ${N} starts failed`);
  }
  const m = measure(max, 'ms');
  const p = measure(p99, 'ms');
  const row: Row = {
    case: `${N} concurrent startTask`,
    values: {
      'loop delay max': m,
      'loop delay p99': p,
      'loop delay mean': measure(mean, 'ms'),
      'heartbeat max gap': measure(gap, 'ms'),
      'all started': measure(startMs, 'ms'),
      '200 destroys: loop delay max': measure(dMax, 'ms'),
      '200 destroys: loop delay p99': measure(dP99, 'ms'),
    },
    checks: [goal('loop delay max <= 20 ms', m.median!, 20), goal('loop delay p99 <= 5 ms', p.median!, 5)],
  };
  return {
    id: 'loopdelay',
    title: 'Event-loop delay during 200 concurrent starts (raw_exec)',
    unit: 'ms, lower is better',
    columns: Object.keys(row.values),
    rows: [row],
    notes: [
      `monitorEventLoopDelay (1 ms resolution) and a 10 ms setInterval heartbeat while ${N} startTask calls run at once (sleep 120 in its own cgroup each), ${reps} repetitions, median shown; load average at the end: ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} CPUs.`,
      'Off the loop per start: the write-ahead record and the cgroup\'s mkdirs and limit writes (one applyAsync batch on the libuv pool, the record first), the spawn and the record\'s running line (a thread of corral\'s own); waits are loop events. What stays on the loop: validation, the native spawn call (it queues the job to a pool thread) and the pidfd watch — one start\'s share per loop turn, a turn of its own after each pool job, one spawn result delivered per turn.',
    ],
  };
}
