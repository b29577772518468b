/**
 * 2. Spawn latency while the agent holds 0, 200 MiB, 1 GiB and 4 GiB outside the V8 heap (Buffers,
 * every page written so it is resident). Figure: duration of the spawn call itself (the part that
 * forks/clones and waits for exec), median, µs. child_process.spawn forks, so it copies the page
 * tables of everything held; corral's native spawn does not.
 */
import * as cp from 'node:child_process';
import { checkFaster, errMsg, measure, missing, nowNs, rssBytes, usSince, type Measure, type Row, type Section, type BenchOptions } from './lib.js';
import { loadNative } from './corral.js';
import { spawnProcess } from '../../src/native.js';

const MiB = 1024 * 1024;
const CHUNK = 256 * MiB;

export async function run(o: BenchOptions): Promise<Section> {
  const sizes = [0, 200 * MiB, 1024 * MiB, 4096 * MiB];
  const reps = o.quick ? 9 : 21;
  const notes: string[] = [];
  const nat = await loadNative();
  let natReason = nat.ok ? undefined : nat.reason;
  const held: Buffer[] = [];
  let heldBytes = 0;
  const hold = (target: number) => {
    while (heldBytes < target) {
      const n = Math.min(CHUNK, target - heldBytes);
      const b = Buffer.allocUnsafe(n);
      b.fill(0xa5); // touch every page: resident, and copied page tables on fork
      held.push(b);
      heldBytes += n;
    }
  };
  const nodeSpawn = async (): Promise<{ callUs: number; totalUs: number }> => {
    const t0 = nowNs();
    const ch = cp.spawn('/bin/true', [], { stdio: 'ignore' });
    const callUs = usSince(t0);
    await new Promise<void>((res, rej) => {
      ch.on('error', rej);
      ch.on('exit', () => res());
    });
    return { callUs, totalUs: usSince(t0) };
  };
  const corralSpawn = async (): Promise<{ callUs: number; totalUs: number }> => {
    if (!nat.ok) throw new Error(nat.reason);
    const n = nat.value;
    const t0 = nowNs();
    const r = await spawnProcess({ file: '/bin/true', argv: ['/bin/true'], envp: ['PATH=/usr/bin:/bin'], stdio: [-1, -1, -1], timeoutMs: 30_000 }, n);
    const callUs = usSince(t0);
    await new Promise<void>((res) => r.process.watch(true, () => res()));
    return { callUs, totalUs: usSince(t0) };
  };
  if (nat.ok) {
    try {
      await corralSpawn();
    } catch (err) {
      natReason = `native spawn not usable yet: ${errMsg(err)}`;
    }
  }
  const rows: Row[] = [];
  const corral0: Measure[] = [];
  for (const size of sizes) {
    hold(size);
    const rss = rssBytes();
    const c: number[] = [];
    const ct: number[] = [];
    const s: number[] = [];
    const st: number[] = [];
    for (let i = 0; i < 3; i++) {
      await nodeSpawn();
      if (!natReason) await corralSpawn();
    }
    for (let i = 0; i < reps; i++) {
      const a = await nodeSpawn();
      s.push(a.callUs);
      st.push(a.totalUs);
      if (!natReason) {
        const b = await corralSpawn();
        c.push(b.callUs);
        ct.push(b.totalUs);
      }
    }
    const values: Record<string, Measure> = {
      'corral native spawn': natReason ? missing('µs', natReason) : measure(c, 'µs'),
      'child_process.spawn': measure(s, 'µs'),
      'corral spawn→exit': natReason ? missing('µs', natReason) : measure(ct, 'µs'),
      'spawn→exit': measure(st, 'µs'),
    };
    if (size === 0) corral0.push(values['corral native spawn']!);
    const checks = [];
    const base = corral0[0];
    if (size > 0) {
      const cur = values['corral native spawn']!;
      if (base?.median != null && cur.median != null) {
        const ratio = cur.median / base.median;
        checks.push({ target: 'flat: corral within 1.5x of its 0-MiB figure', ratio: Math.round(ratio * 100) / 100, ratioText: `${ratio.toFixed(2)}x`, met: ratio <= 1.5 });
      } else checks.push({ target: 'flat: corral within 1.5x of its 0-MiB figure', ratio: null, ratioText: 'n/a', met: null, why: natReason });
    }
    if (size === 1024 * MiB) checks.push(checkFaster('≥10x faster than child_process.spawn at 1 GiB', values['corral native spawn'], values['child_process.spawn'], 10));
    rows.push({
      case: size === 0 ? '0' : size >= 1024 * MiB ? `${size / 1024 / MiB} GiB` : `${size / MiB} MiB`,
      values,
      checks,
      extra: { 'agent RSS MiB': Math.round(rss / MiB) },
    });
  }
  held.length = 0;
  notes.push(`${reps} spawns of /bin/true per figure, corral and child_process alternating; "spawn" columns time the spawn call (fork/clone until exec), "→exit" until the exit was reaped.`);
  return {
    id: 'spawnmem',
    title: '2. Spawn latency vs memory held outside the V8 heap (Buffers, resident)',
    unit: 'µs (lower is better)',
    columns: ['corral native spawn', 'child_process.spawn', 'corral spawn→exit', 'spawn→exit'],
    rows,
    notes,
  };
}
