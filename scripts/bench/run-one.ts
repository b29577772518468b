/**
 * Runs one benchmark in this (fresh) Node process and writes its Section as JSON.
 *   node --expose-gc --import tsx scripts/bench/run-one.ts <bench> <out.json> [--quick]
 * Clean-up steps registered by the bench run at the end, on failure and on SIGINT/SIGTERM.
 */
import * as fs from 'node:fs';
import { type BenchOptions, errMsg, installSignalCleanup, runCleanups, type Section } from './lib.js';

const BENCHES: Record<string, () => Promise<{ run: (o: BenchOptions) => Promise<Section> }>> = {
  lifecycle: () => import('./b-lifecycle.js'),
  spawnmem: () => import('./b-spawnmem.js'),
  kill: () => import('./b-kill.js'),
  cpuset: () => import('./b-cpuset.js'),
  docker: () => import('./b-docker.js'),
  memory: () => import('./b-memory.js'),
  loopdelay: () => import('./b-loopdelay.js'),
};

async function main(): Promise<void> {
  const [name, out] = process.argv.slice(2);
  const quick = process.argv.includes('--quick');
  if (!name || !out || !BENCHES[name]) {
    process.stderr.write(`usage: run-one.ts <${Object.keys(BENCHES).join('|')}> <out.json> [--quick]\n`);
    process.exit(2);
  }
  installSignalCleanup();
  const t0 = Date.now();
  let sec: Section;
  try {
    const mod = await BENCHES[name]!();
    sec = await mod.run({ quick });
  } catch (err) {
    process.stderr.write(`bench ${name}: ${(err as Error)?.stack ?? err}\n`);
    sec = { id: name, title: name, unit: '', columns: [], rows: [], notes: [], skipped: `failed: ${errMsg(err)}` };
  }
  sec.elapsedMs = Date.now() - t0;
  // The figures are written before the clean-up, which can take a while (hundreds of containers):
  // main.ts gives a bench whose figures are in some more time to clean up before stopping it.
  fs.writeFileSync(out, JSON.stringify(sec, null, 2));
  await runCleanups();
  // Anything a bench left on the loop (a watch it could not close) must not keep us alive.
  process.exit(0);
}

void main();
