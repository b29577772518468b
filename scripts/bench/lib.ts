/**
 * Shared pieces of the benchmark harness: timing, medians, result shapes, table output, cgroup helpers
 * and the clean-up registry. Every bench runs in its own Node process (scripts/bench/run-one.ts) and
 * returns a Section; scripts/bench/main.ts prints them and writes the JSON.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { detectCgroupLayout } from '../../src/cgroups/detect.js';
import type { CgroupLayout } from '../../src/cgroups/types.js';

/** What run-one.ts passes to every bench's run(). */
export interface BenchOptions {
  quick: boolean;
}

export const REPO = path.resolve(__dirname, '..', '..');
export const CG = '/sys/fs/cgroup';
/** The host's cgroup layout, as corral itself detects it (absent where no cgroup hierarchy is mounted). */
const LAYOUT: CgroupLayout | undefined = (() => {
  try {
    return detectCgroupLayout();
  } catch {
    return undefined;
  }
})();
/** Where cgroup2 is mounted: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a v2 host. */
export const UNIFIED = LAYOUT?.unifiedMount ?? `${CG}/unified`;

// ---------- timing and statistics ----------

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export function usSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e3;
}

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------- results ----------

/** One measured figure: the median of `runs`. */
export interface Measure {
  median: number | null;
  runs: number[];
  unit: string;
  /** Why there is no figure, or what to know about it. */
  note?: string;
}

export function measure(runs: number[], unit: string, note?: string): Measure {
  return { median: median(runs), runs: runs.map((r) => round(r, 3)), unit, ...(note ? { note } : {}) };
}

export function missing(unit: string, note: string): Measure {
  return { median: null, runs: [], unit, note };
}

/** A target checked on one row: `ratio` is computed so that higher is better for corral unless said. */
export interface Check {
  target: string;
  /** The figure compared against the target (e.g. baseline/corral), null when it could not be computed. */
  ratio: number | null;
  ratioText: string;
  met: boolean | null;
  why?: string;
}

export interface Row {
  case: string;
  values: Record<string, Measure>;
  checks: Check[];
  /** Extra figures shown after the values (e.g. survivors, API calls). */
  extra?: Record<string, string | number>;
}

export interface Section {
  id: string;
  title: string;
  /** How to read the figures (unit, lower/higher is better). */
  unit: string;
  /** Column keys of `values`, in order; the first ones are corral's. */
  columns: string[];
  rows: Row[];
  notes: string[];
  /** Set when the whole section could not run, with the reason. */
  skipped?: string;
  elapsedMs?: number;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** corral must be at least `factor` times faster than `baseline` (lower-is-better figures). */
export function checkFaster(target: string, corral: Measure | undefined, baseline: Measure | undefined, factor: number): Check {
  if (!corral || !baseline || corral.median == null || baseline.median == null || corral.median <= 0) {
    return { target, ratio: null, ratioText: 'n/a', met: null, why: corral?.note ?? baseline?.note ?? 'not measured' };
  }
  const ratio = baseline.median / corral.median;
  return { target, ratio: round(ratio, 2), ratioText: `${fmtRatio(ratio)}x`, met: ratio >= factor };
}

/** corral must be within `factor` of `baseline` (lower-is-better): corral/baseline <= factor. */
export function checkWithin(target: string, corral: Measure | undefined, baseline: Measure | undefined, factor: number): Check {
  if (!corral || !baseline || corral.median == null || baseline.median == null || baseline.median <= 0) {
    return { target, ratio: null, ratioText: 'n/a', met: null, why: corral?.note ?? baseline?.note ?? 'not measured' };
  }
  const ratio = corral.median / baseline.median;
  return { target, ratio: round(ratio, 2), ratioText: `${fmtRatio(ratio)}x of it`, met: ratio <= factor };
}

function fmtRatio(r: number): string {
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}

export function fmtValue(m: Measure | undefined): string {
  if (!m || m.median == null) return '—';
  const v = m.median;
  const s = v >= 1000 ? v.toFixed(0) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3);
  return s;
}

export function verdict(c: Check): string {
  return c.met == null ? 'n/a' : c.met ? 'met' : 'MISSED';
}

// ---------- table output ----------

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

export function textTable(sec: Section): string {
  const out: string[] = [];
  out.push(`== ${sec.title}`);
  out.push(`   ${sec.unit}`);
  if (sec.skipped) {
    out.push(`   SKIPPED: ${sec.skipped}`);
    for (const n of sec.notes) out.push(`   note: ${n}`);
    return out.join('\n');
  }
  const extraKeys = [...new Set(sec.rows.flatMap((r) => Object.keys(r.extra ?? {})))];
  const header = ['case', ...sec.columns, ...extraKeys];
  const cells = sec.rows.map((r) => [r.case, ...sec.columns.map((c) => fmtValue(r.values[c])), ...extraKeys.map((k) => String(r.extra?.[k] ?? ''))]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  out.push('   ' + header.map((h, i) => pad(h, widths[i]!)).join('  '));
  for (let i = 0; i < sec.rows.length; i++) {
    out.push('   ' + cells[i]!.map((c, j) => pad(c, widths[j]!)).join('  '));
    for (const ch of sec.rows[i]!.checks) {
      out.push(`       ${verdict(ch).padEnd(6)} ${ch.target}: ${ch.ratioText}${ch.why ? ` (${ch.why})` : ''}`);
    }
  }
  for (const n of sec.notes) out.push(`   note: ${n}`);
  return out.join('\n');
}

export function markdownTable(sec: Section): string {
  const out: string[] = [];
  out.push(`#### ${sec.title}`);
  out.push('');
  out.push(`Figures: ${sec.unit}.`);
  out.push('');
  if (sec.skipped) {
    out.push(`Skipped: ${sec.skipped}`);
    return out.join('\n');
  }
  const extraKeys = [...new Set(sec.rows.flatMap((r) => Object.keys(r.extra ?? {})))];
  out.push(`| case | ${[...sec.columns, ...extraKeys].join(' | ')} | target: ratio → verdict |`);
  out.push(`|${'---|'.repeat(sec.columns.length + extraKeys.length + 2)}`);
  for (const r of sec.rows) {
    const checks = r.checks.map((c) => `${c.target}: ${c.ratioText} → **${verdict(c)}**`).join('; ') || '';
    out.push(`| ${r.case} | ${sec.columns.map((c) => fmtValue(r.values[c])).join(' | ')}${extraKeys.length ? ' | ' + extraKeys.map((k) => String(r.extra?.[k] ?? '')).join(' | ') : ''} | ${checks} |`);
  }
  if (sec.notes.length) {
    out.push('');
    for (const n of sec.notes) out.push(`- ${n}`);
  }
  return out.join('\n');
}

// ---------- clean-up ----------

type Cleanup = () => void | Promise<void>;
const cleanups: Cleanup[] = [];

/** Registers a clean-up step; steps run in reverse order at the end, on failure and on SIGINT/SIGTERM. */
export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

export async function runCleanups(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`bench: clean-up step failed: ${(err as Error).message}\n`);
    }
  }
}

let signalled = false;
export function installSignalCleanup(): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (signalled) return;
      signalled = true;
      process.stderr.write(`bench: ${sig}, cleaning up\n`);
      void runCleanups().finally(() => process.exit(130));
    });
  }
}

// ---------- cgroups ----------

export const RUN_ID = process.env.CORRAL_BENCH_RUN ?? `${process.pid}`;
/** Every cgroup the bench creates is under a parent with this name (the clean-up sweeps `corral-bench-*`). */
export const BENCH_PARENT = `corral-bench-${RUN_ID}`;

/** v1 controller → mount point (corral's detection). */
export function v1Mounts(): Record<string, string> {
  return { ...(LAYOUT?.v1Mounts ?? {}) };
}

export function hasUnified(): boolean {
  return LAYOUT?.unifiedMount !== undefined && fs.existsSync(`${UNIFIED}/cgroup.procs`);
}

export function cgroupMode(): string {
  return LAYOUT?.mode ?? 'v1';
}

export function mkdirp(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
}

/** Reads the pids of a cgroup.procs file (empty when gone). */
export function readProcs(procs: string): number[] {
  try {
    return fs
      .readFileSync(procs, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Removes a cgroup directory tree depth-first. Processes still inside are killed first
 * (cgroup.kill where the file exists, else SIGKILL in rounds) and rmdir is retried on EBUSY.
 */
export async function removeCgroupTree(dir: string, timeoutMs = 10_000): Promise<void> {
  if (!fs.existsSync(dir)) return;
  const deadline = Date.now() + timeoutMs;
  let children: string[] = [];
  try {
    children = fs.readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => path.join(dir, d.name));
  } catch {
    return;
  }
  for (const c of children) await removeCgroupTree(c, Math.max(1000, deadline - Date.now()));
  const procs = path.join(dir, 'cgroup.procs');
  const freezer = path.join(dir, 'freezer.state');
  try {
    if (fs.existsSync(freezer) && fs.readFileSync(freezer, 'utf8').trim() !== 'THAWED') fs.writeFileSync(freezer, 'THAWED');
  } catch {}
  for (;;) {
    const pids = readProcs(procs);
    if (pids.length === 0) break;
    try {
      if (fs.existsSync(path.join(dir, 'cgroup.kill'))) fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
    } catch {}
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {}
    }
    if (Date.now() > deadline) break;
    await sleep(5);
  }
  for (;;) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') return;
      if (e.code !== 'EBUSY' || Date.now() > deadline) {
        process.stderr.write(`bench: could not remove ${dir}: ${e.code}\n`);
        return;
      }
      await sleep(5);
    }
  }
}

/** Every directory the bench may have created under `name` in every hierarchy (v1 controllers and unified). */
export function benchParents(name = BENCH_PARENT): string[] {
  const dirs = new Set<string>();
  for (const mnt of Object.values(v1Mounts())) dirs.add(path.join(mnt, name));
  if (hasUnified()) dirs.add(path.join(UNIFIED, name));
  return [...dirs];
}

/** Creates the bench parent in the given v1 controllers (cpuset gets cpus and mems from the root). */
export function makeV1Parent(controllers: string[], sub = ''): Record<string, string> {
  const mounts = v1Mounts();
  const out: Record<string, string> = {};
  for (const c of controllers) {
    const mnt = mounts[c];
    if (!mnt) throw new Error(`v1 controller ${c} is not mounted`);
    let dir = path.join(mnt, BENCH_PARENT);
    const parts = sub ? sub.split('/') : [];
    const chain = [dir, ...parts.map((_, i) => path.join(dir, ...parts.slice(0, i + 1)))];
    for (const d of chain) {
      if (!fs.existsSync(d)) fs.mkdirSync(d);
      if (c === 'cpuset') {
        const parent = path.dirname(d);
        if (!fs.readFileSync(path.join(d, 'cpuset.cpus'), 'utf8').trim()) fs.writeFileSync(path.join(d, 'cpuset.cpus'), fs.readFileSync(path.join(parent, 'cpuset.cpus'), 'utf8').trim());
        if (!fs.readFileSync(path.join(d, 'cpuset.mems'), 'utf8').trim()) fs.writeFileSync(path.join(d, 'cpuset.mems'), fs.readFileSync(path.join(parent, 'cpuset.mems'), 'utf8').trim());
      }
    }
    dir = chain[chain.length - 1]!;
    out[c] = dir;
  }
  return out;
}

export function rootCpus(): string {
  const m = v1Mounts();
  if (m.cpuset) return fs.readFileSync(path.join(m.cpuset, 'cpuset.effective_cpus'), 'utf8').trim();
  return `0-${require('node:os').cpus().length - 1}`;
}

export function rootMems(): string {
  const m = v1Mounts();
  if (m.cpuset) return fs.readFileSync(path.join(m.cpuset, 'cpuset.effective_mems'), 'utf8').trim();
  return '0';
}

// ---------- processes ----------

export const BIN_DIR = process.env.CORRAL_BENCH_BIN ?? path.join(REPO, 'build', 'bench');

export function binPath(name: string): string {
  return path.join(BIN_DIR, name);
}

export function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function rssBytes(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss;
}

export function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

export function errMsg(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.message ? `${e.code ? e.code + ': ' : ''}${e.message}`.slice(0, 300) : String(err);
}

/** A fresh state directory for a driver's TaskStore, on disk as the default /var/lib/corral is; removed at the end. */
export function stateDir(base = '/var/tmp'): string {
  const d = fs.mkdtempSync(path.join(base, 'corral-bench-state-'));
  onCleanup(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

// ---------- time budget ----------

/** When this bench must be done (main.ts passes its budget; it stops a bench 20 s after that). */
export const BUDGET_END = Date.now() + Number(process.env.CORRAL_BENCH_BUDGET_S ?? 120) * 1000;

export function timeLeftMs(): number {
  return BUDGET_END - Date.now();
}

// ---------- the whole run ----------

export interface RunResult {
  startedAt: string;
  totalSeconds: number;
  quick: boolean;
  machine: Record<string, string | number>;
  sections: Section[];
  summary: { checks: number; met: number; missed: number; notMeasured: number };
}

/** Busy-machine warning, when the load average went well above the core count during the run. */
export function busyNote(info: Record<string, string | number>): string {
  const maxLoad = Math.max(...[info.loadavgAtStart, info.loadavgAtEnd].flatMap((l) => String(l ?? '0').split(' ').map(Number)));
  return maxLoad > Number(info.nproc) * 1.5
    ? `Shared machine: the load average reached ${maxLoad.toFixed(1)} on ${info.nproc} cores during this run (other work was running), so the figures are noisy; ratios within ~20% of a target can flip between runs.`
    : '';
}

const SHORT: Record<string, string> = { lifecycle: '1. Lifecycle', spawnmem: '2. Spawn latency', kill: '3. Group kill', cpuset: '4. Reservation change', docker: '5. Docker', memory: '6. Memory' };

/** One line per target (checks with the same target text across a bench's rows): how often met, ratio range. */
export function glanceTable(r: RunResult): string {
  const out = ['| bench | target | met | ratios (corral vs baseline) |', '|---|---|---|---|'];
  for (const sec of r.sections) {
    if (sec.skipped) {
      out.push(`| ${SHORT[sec.id] ?? sec.id} | — | skipped: ${sec.skipped} | |`);
      continue;
    }
    const groups = new Map<string, { cases: string[]; met: number; n: number; texts: string[] }>();
    for (const row of sec.rows) {
      for (const c of row.checks) {
        const key = c.target.replace(/ \([^)]*\)$/, '');
        const g = groups.get(key) ?? { cases: [], met: 0, n: 0, texts: [] };
        g.n++;
        if (c.met) g.met++;
        else if (c.met === false) g.cases.push(row.case);
        g.texts.push(c.ratioText);
        groups.set(key, g);
      }
    }
    for (const [target, g] of groups) {
      const nums = g.texts.map((t) => parseFloat(t)).filter((x) => Number.isFinite(x));
      const isRatio = g.texts.every((t) => /^[0-9.]+x/.test(t));
      const range = !nums.length
        ? 'n/a'
        : !isRatio
          ? g.texts.map((t) => t.split(' (')[0]).join(', ')
          : Math.min(...nums) === Math.max(...nums)
            ? g.texts[0]!
            : `${Math.min(...nums)}–${Math.max(...nums)}${g.texts[0]!.replace(/^[0-9.]+/, '')}`;
      const verdict = g.met === g.n ? `**met** (${g.n} of ${g.n})` : `**missed** in ${g.n - g.met} of ${g.n}${g.cases.length ? ` (${g.cases.join('; ')})` : ''}`;
      out.push(`| ${SHORT[sec.id] ?? sec.id} | ${target} | ${verdict} | ${range} |`);
    }
  }
  return out.join('\n');
}

/** The run as markdown: machine line, busy note, targets at a glance, one table per bench. */
export function renderMarkdown(r: RunResult): string {
  const info = r.machine;
  const busy = busyNote(info);
  return (
    `Measured ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC on ${info.nproc} cores (${info.cpu}), ${info.memGiB} GiB, Linux ${info.kernel}, cgroups ${info.cgroupMode}, Node ${info.node}, Docker ${info.docker}` +
    ` (load average ${info.loadavgAtStart} at the start, ${info.loadavgAtEnd} at the end), corral at ${info.corral ?? 'unknown'}, ${r.totalSeconds} s in all. Medians; ${r.summary.met} of ${r.summary.checks} targets met.\n\n` +
    (busy ? `${busy}\n\n` : '') +
    `#### Targets at a glance\n\n${glanceTable(r)}\n\n` +
    r.sections.map(markdownTable).join('\n\n') +
    '\n'
  );
}
