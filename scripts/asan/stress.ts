/**
 * Stress script for the sanitizer lane (scripts/asan/run.sh runs it under ASan+UBSan, UV_THREADPOOL_SIZE=1).
 * Each round, in a cgroup of its own under corral-test-stress-<random>:
 *   concurrent spawns into the group (clone3 on cgroup2, the v1 join path too where there is a v1
 *   freezer), an "exec" (another spawn) into the same group, signals through the ProcessHandles and
 *   signalGroup, a group kill (cgroup.kill, freeze-v2 or freezer-v1 in turn), wait-empty, rmdir;
 *   a spawn into a frozen group (refused) every 10th round; a worker thread that spawns and watches,
 *   then exits with its watches open, every 25th round.
 * At the end our fd count must equal the count before the first round, and no child may be left.
 * Usage: node --import tsx scripts/asan/stress.ts [rounds=300]
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native, spawnProcess, type ExitInfo, type SpawnOptions } from '../../src/native.js';
import { CgroupIO, type GroupKillMethod } from '../../src/cgroups/io.js';
import { CgroupFrozenError } from '../../src/errors.js';
import { detectCgroupLayout } from '../../src/cgroups/detect.js';

const rounds = Number(process.argv[2] ?? 300);
const n = native();
const io = new CgroupIO();
const layout = detectCgroupLayout();
const V2 = layout.unifiedMount;
const FREEZER = layout.v1Mounts.freezer;
const PARENT = `corral-test-stress-${randomBytes(4).toString('hex')}`;
const parents = [V2, FREEZER].filter((x): x is string => !!x).map((r) => path.join(r, PARENT));
/** Our open fds as `n->target` (the directory fd of the listing itself, gone by then, is left out). */
const fdList = () => fs.readdirSync('/proc/self/fd').flatMap((f) => { try { return [`${f}->${fs.readlinkSync(`/proc/self/fd/${f}`)}`]; } catch { return []; } });
const settle = () => new Promise<void>((r) => setImmediate(() => setImmediate(r)));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function childrenOfUs(): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // (tsx's esbuild service is a child of ours too, and stays.)
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid && !stat.includes('(esbuild)')) out.push(Number(e));
    } catch { /* gone */ }
  }
  return out;
}

const base = (o: Partial<SpawnOptions>): SpawnOptions => ({ file: '/bin/sleep', argv: ['sleep', '100'], envp: [], stdio: [-1, -1, -1], timeoutMs: 10_000, ...o });

async function spawnWatched(o: Partial<SpawnOptions>) {
  const r = await spawnProcess(base(o));
  const exit = new Promise<ExitInfo>((res) => r.process.watch(true, res));
  return { ...r, exit };
}

function workerRound(): Promise<void> {
  const addon = process.env.CORRAL_ADDON ?? path.join(__dirname, '..', '..', 'build', 'Release', 'corral.node');
  const code = `
    const a = require(${JSON.stringify(addon)});
    const { parentPort } = require('node:worker_threads');
    const sp = (argv) => new Promise((res, rej) => a.spawn({ file: argv[0], argv, envp: [], stdio: [-1, -1, -1], timeoutMs: 10000 }, (e, r) => e ? rej(e) : res(r)));
    (async () => {
      const r = await sp(['/bin/sleep', '100']);
      r.process.watch(true, () => {});
      const q = await sp(['/bin/sleep', '0.02']);
      q.process.watch(true, () => {});
      sp(['/bin/true']).catch(() => {}); // in flight at teardown: its thread kills and reaps it
      parentPort.postMessage([r.pid, q.pid]);
    })();
  `;
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once('error', reject);
    w.once('message', async (pids: number[]) => {
      await w.terminate();
      // The teardown leaves the worker's children running and reaps them (a background waitpid) when
      // they exit: kill the long sleeper, then wait until both are gone (reaped, no zombie).
      for (const pid of pids) {
        let h;
        try { h = n.openProcess(pid); } catch { continue; } // already reaped
        try { h.signal(9); } catch { /* exited, not yet reaped */ }
        await new Promise<ExitInfo>((res) => h.watch(false, res));
      }
      for (let k = 0; pids.some((p) => fs.existsSync(`/proc/${p}`)); k++) {
        if (k > 1000) return reject(new Error(`worker children ${pids.join(' ')} not reaped`));
        await sleep(2);
      }
      resolve();
    });
  });
}

async function round(i: number): Promise<void> {
  const useV1 = !!FREEZER && i % 3 === 2;
  const dir = useV1 ? path.join(FREEZER!, PARENT, `r${i}`) : path.join(V2!, PARENT, `r${i}.scope`);
  fs.mkdirSync(dir);
  const procs = path.join(dir, 'cgroup.procs');
  const where: Partial<SpawnOptions> = useV1 ? { joinProcs: [procs] } : i % 2 ? { cgroupDir: dir } : { joinProcs: [procs] };
  try {
    const tasks = await Promise.all(Array.from({ length: 4 }, (_, k) =>
      spawnWatched({ ...where, ...(k === 0 ? { file: '/bin/sh', argv: ['sh', '-c', 'sleep 100 & sleep 100 & wait'] } : {}) })));
    const exec = await spawnWatched({ ...where, file: '/bin/sh', argv: ['sh', '-c', 'exit 3'] });
    if ((await exec.exit).exitCode !== 3) throw new Error(`round ${i}: exec exit ${JSON.stringify(await exec.exit)}`);
    tasks[1]!.process.signal(15);
    if ((await tasks[1]!.exit).signal !== 15) throw new Error(`round ${i}: SIGTERM not seen`);
    n.signalGroup(procs, 0);
    if (i % 10 === 0) {
      const ctl = useV1 ? ['freezer.state', 'FROZEN', 'THAWED'] : ['cgroup.freeze', '1', '0'];
      fs.writeFileSync(path.join(dir, ctl[0]!), ctl[1]!);
      await io.waitFrozen(dir, useV1 ? 1 : 2, true, 5000);
      const e = await spawnProcess(base(where)).then(() => undefined, (err: unknown) => err);
      if (!(e instanceof CgroupFrozenError)) throw new Error(`round ${i}: spawn into a frozen group gave ${String(e)}`);
      fs.writeFileSync(path.join(dir, ctl[0]!), ctl[2]!);
      await io.waitFrozen(dir, useV1 ? 1 : 2, false, 5000);
    }
    const method: GroupKillMethod = useV1 ? 'freezer-v1' : i % 2 ? 'cgroup.kill' : 'freeze-v2';
    await io.groupKill(method, procs, dir, 10_000);
    await io.waitEmpty(procs, 1000);
    for (const t of [tasks[0]!, ...tasks.slice(2)]) {
      const info = await t.exit;
      if (info.signal !== 9) throw new Error(`round ${i}: ${method} left exit ${JSON.stringify(info)}`);
    }
  } finally {
    await io.groupKill(useV1 ? 'freezer-v1' : 'cgroup.kill', procs, dir, 10_000).catch(() => {});
    for (let k = 0; ; k++) {
      try { fs.rmdirSync(dir); break; } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || k > 200) throw err;
        await sleep(5);
      }
    }
  }
  if (i % 25 === 0) await workerRound();
}

async function main(): Promise<void> {
  if (!V2) throw new Error('stress: no cgroup2 mount');
  for (const p of parents) fs.mkdirSync(p);
  await settle();
  const before = fdList();
  const t0 = Date.now();
  try {
    for (let i = 0; i < rounds; i++) await round(i);
  } finally {
    for (const p of parents.reverse()) { try { fs.rmdirSync(p); } catch (err) { console.error(`stress: rmdir ${p}: ${String(err)}`); } }
  }
  await sleep(50);
  await settle();
  const after = fdList();
  const extra = after.filter((f) => !before.includes(f));
  const kids = childrenOfUs();
  for (const k of kids) { try { console.error(`left: ${k} ${fs.readFileSync(`/proc/${k}/stat`, 'utf8').slice(0, 60)}`); } catch { /* gone */ } }
  console.log(`stress: ${rounds} rounds in ${((Date.now() - t0) / 1000).toFixed(1)} s; fds ${before.length} before, ${after.length} after; children left: ${kids.length}`);
  if (after.length > before.length || extra.length > 0) throw new Error(`stress: fd count changed: new ${extra.join(' ')}`);
  if (kids.length > 0) throw new Error(`stress: children left: ${kids.join(' ')}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
