/**
 * corral's benchmarks, all six in one go (`npm run bench` → scripts/bench.sh → here).
 * Each bench runs in its own Node process with a time budget; the figures are printed as a table and
 * written to bench-results/latest.json (+ latest.md). With --record, also to scripts/bench/results-<date>.{json,md}.
 *
 *   node --import tsx scripts/bench/main.ts [--only lifecycle,kill] [--quick] [--record]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BENCH_PARENT, REPO, RUN_ID, busyNote, cgroupMode, renderMarkdown, removeCgroupTree, benchParents, textTable, type RunResult, type Section } from './lib.js';

// The kill bench runs last: its N = 5000 populations leave the machine loaded for a while after them.
const ORDER = ['lifecycle', 'loopdelay', 'spawnmem', 'cpuset', 'memory', 'docker', 'kill'] as const;
/**
 * Seconds each bench may take (it cuts its repetitions short to stay inside; main stops it 20 s after).
 * The whole run must stay under about 11 minutes: docker gets what is left of TOTAL_S (at least 60 s),
 * because creating and removing hundreds of containers is what takes longest on 2 cores.
 */
const BUDGET_S: Record<string, number> = { lifecycle: 120, loopdelay: 60, spawnmem: 45, kill: 170, cpuset: 90, memory: 75, docker: 280 };
const TOTAL_S = 630;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function machine(): Record<string, string | number> {
  const first = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return (r.stdout ?? '').trim();
  };
  return {
    nproc: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? '',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    cgroupMode: cgroupMode(),
    node: process.version,
    docker: first('sh', ['-c', "docker version --format '{{.Server.Version}}' 2>/dev/null"]) || 'unavailable',
    corral: first('sh', ['-c', `cd '${REPO}' && git rev-parse --short HEAD 2>/dev/null`]) || 'unknown',
    loadavgAtStart: os.loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

function runBench(name: string, quick: boolean, outDir: string, elapsedS: number): Promise<Section> {
  const out = path.join(outDir, `${name}.json`);
  try {
    fs.unlinkSync(out);
  } catch {}
  // CORRAL_BENCH_BUDGET_SCALE: more time per bench on a machine so loaded that one repetition does not fit.
  let budget = (BUDGET_S[name] ?? 60) * (quick ? 0.6 : 1) * (Number(process.env.CORRAL_BENCH_BUDGET_SCALE) || 1);
  if (name === 'docker') budget = Math.max(60, Math.min(budget, TOTAL_S * (quick ? 0.6 : 1) - elapsedS));
  return new Promise((resolve) => {
    const t0 = Date.now();
    process.stderr.write(`bench: ${name} (budget ${budget.toFixed(0)} s)\n`);
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(__dirname, 'run-one.ts'), name, out, ...(quick ? ['--quick'] : [])], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, CORRAL_BENCH_RUN: RUN_ID, CORRAL_BENCH_BUDGET_S: String(budget) },
    });
    let timedOut = false;
    let timer: NodeJS.Timeout;
    const stop = () => {
      timedOut = true;
      process.stderr.write(`bench: ${name} exceeded its ${budget.toFixed(0)} s budget; stopping it\n`);
      child.kill('SIGTERM'); // it runs its clean-up steps, then exits
      setTimeout(() => child.kill('SIGKILL'), 120_000).unref();
    };
    timer = setTimeout(() => {
      // Figures written, clean-up under way: give it up to 90 s more.
      if (fs.existsSync(out)) {
        process.stderr.write(`bench: ${name} is still cleaning up; waiting up to 90 s more\n`);
        timer = setTimeout(stop, 90_000);
      } else stop();
    }, budget * 1000 + 20_000);
    current = child;
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      current = undefined;
      let sec: Section;
      try {
        sec = JSON.parse(fs.readFileSync(out, 'utf8')) as Section;
      } catch {
        sec = { id: name, title: name, unit: '', columns: [], rows: [], notes: [], skipped: timedOut ? `stopped after its ${budget.toFixed(0)} s budget` : `bench process ended (${sig ?? code}) without a result` };
      }
      sec.elapsedMs = Date.now() - t0;
      resolve(sec);
    });
  });
}

let current: ReturnType<typeof spawn> | undefined;

async function sweep(): Promise<void> {
  for (const d of benchParents(BENCH_PARENT)) await removeCgroupTree(d);
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const only = arg('--only')?.split(',').filter(Boolean);
  const names = ORDER.filter((n) => !only || only.includes(n));
  const outDir = path.join(REPO, 'bench-results');
  fs.mkdirSync(outDir, { recursive: true });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      process.stderr.write(`bench: ${sig}; stopping\n`);
      current?.kill('SIGTERM');
      setTimeout(() => void sweep().finally(() => process.exit(130)), 3000);
    });
  }
  const started = new Date();
  const info = machine();
  const sections: Section[] = [];
  for (const n of names) {
    sections.push(await runBench(n, quick, outDir, (Date.now() - started.getTime()) / 1000));
    await sweep();
  }
  info.loadavgAtEnd = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const totalS = (Date.now() - started.getTime()) / 1000;
  const checks = sections.flatMap((s) => s.rows.flatMap((r) => r.checks.map((c) => ({ s, r, c }))));
  const met = checks.filter((x) => x.c.met === true).length;
  const missed = checks.filter((x) => x.c.met === false);
  const result: RunResult = { startedAt: started.toISOString(), totalSeconds: Math.round(totalS), quick, machine: info, sections, summary: { checks: checks.length, met, missed: missed.length, notMeasured: checks.length - met - missed.length } };

  const head =
    `corral benchmarks — ${started.toISOString()}${quick ? ' (quick)' : ''}\n` +
    `machine: ${info.nproc} cores (${info.cpu}), ${info.memGiB} GiB, Linux ${info.kernel}, cgroups ${info.cgroupMode}, Node ${info.node}, Docker ${info.docker}; load ${info.loadavgAtStart} → ${info.loadavgAtEnd}; corral ${info.corral}`;
  const busy = busyNote(info);
  const text = [head + (busy ? `\n${busy}` : ''), ...sections.map(textTable)].join('\n\n');
  process.stdout.write('\n' + text + '\n\n');
  process.stdout.write(`targets: ${met} met, ${missed.length} missed, ${checks.length - met - missed.length} not measured; ${totalS.toFixed(0)} s in all\n`);
  for (const x of missed) process.stdout.write(`  MISSED  [${x.s.id}] ${x.r.case}: ${x.c.target} (${x.c.ratioText})\n`);

  const md = renderMarkdown(result);
  fs.writeFileSync(path.join(outDir, 'latest.json'), JSON.stringify(result, null, 2));
  fs.writeFileSync(path.join(outDir, 'latest.md'), md);
  const stamp = started.toISOString().slice(0, 16).replace(/[:T]/g, '-');
  fs.writeFileSync(path.join(outDir, `results-${stamp}.json`), JSON.stringify(result, null, 2));
  process.stdout.write(`written: bench-results/latest.json, bench-results/latest.md\n`);
  if (process.argv.includes('--record')) {
    // A second recorded run on one day gets -2, -3...: an earlier record is never overwritten.
    const day = started.toISOString().slice(0, 10);
    let name = `results-${day}`;
    for (let i = 2; fs.existsSync(path.join(__dirname, `${name}.json`)); i++) name = `results-${day}-${i}`;
    fs.writeFileSync(path.join(__dirname, `${name}.json`), JSON.stringify(result, null, 2));
    fs.writeFileSync(path.join(__dirname, `${name}.md`), md);
    process.stdout.write(`recorded: scripts/bench/${name}.json and .md\n`);
  }

}

main().catch(async (err) => {
  process.stderr.write(`bench: ${(err as Error)?.stack ?? err}\n`);
  await sweep();
  process.exit(1);
});
