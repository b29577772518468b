/** The one line `corral run --summary` prints at the end (as `systemd-run --wait` does): how it ended and what it used. */
import type { ExitResult, TaskResourceUsage } from '../drivers/contract.js';
import { signalName } from '../signals.js';

export interface Peak {
  memoryBytes: number;
  cpuUserNs: number;
  cpuSystemNs: number;
  cpuTotalNs: number;
  /** The kernel's counts (raw_exec with cgroups), absent where not counted: see TaskResourceUsage.limitHits. */
  oomKills?: number;
  pidsLimitHits?: number;
}

export const newPeak = (): Peak => ({ memoryBytes: 0, cpuUserNs: 0, cpuSystemNs: 0, cpuTotalNs: 0 });

/** Counters only grow, so the highest sample is the last; memory keeps its high-water mark. */
export function trackPeak(p: Peak, s: TaskResourceUsage): void {
  p.memoryBytes = Math.max(p.memoryBytes, s.memory.maxUsageBytes, s.memory.usageBytes);
  p.cpuUserNs = Math.max(p.cpuUserNs, s.cpu.userNs);
  p.cpuSystemNs = Math.max(p.cpuSystemNs, s.cpu.systemNs);
  p.cpuTotalNs = Math.max(p.cpuTotalNs, s.cpu.totalNs);
  const h = s.limitHits;
  if (h?.oomKills !== undefined) p.oomKills = Math.max(p.oomKills ?? 0, h.oomKills);
  if (h?.pidsLimitHits !== undefined) p.pidsLimitHits = Math.max(p.pidsLimitHits ?? 0, h.pidsLimitHits);
}

/** Whether the end is worth the summary line even unasked: an OOM kill (of the task or any of its processes) or a refused fork. */
export function hitLimits(r: ExitResult, p: Peak): boolean {
  return r.oomKilled || (p.oomKills ?? 0) > 0 || (p.pidsLimitHits ?? 0) > 0;
}

/** The task itself was OOM-killed (SIGKILL), or only some of its processes were (it went on). */
function oomNote(r: ExitResult, p: Peak): string {
  if (!r.oomKilled && !(p.oomKills ?? 0)) return '';
  return r.signal === 9 ? ' (OOM-killed: the memory limit was hit)' : ' (the memory limit was hit: processes of the task were OOM-killed)';
}

/** The kernel's count when there is one; else (Docker, a kernel before 4.13) only whether there was one. */
function oomKills(r: ExitResult, p: Peak): string {
  if (p.oomKills !== undefined) return `oom kills ${p.oomKills}`;
  return r.oomKilled ? 'oom kills: at least 1 (not counted here)' : 'oom kills 0';
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function describeExit(r: ExitResult): string {
  if (r.signal) return `killed by ${signalName(r.signal) ?? `signal ${r.signal}`}`;
  if (r.exitCode !== null) return `exit code ${r.exitCode}`;
  return `exit status unknown${r.err ? ` (${r.err})` : ''}`;
}

export function formatSummary(r: ExitResult, durationMs: number, p: Peak, stoppedByCorral: boolean): string {
  const parts = [
    `${describeExit(r)}${oomNote(r, p)}${stoppedByCorral ? ' (stopped by corral)' : ''}`,
    `duration ${formatDuration(durationMs)}`,
    `peak memory ${formatBytes(p.memoryBytes)}`,
    `cpu ${(p.cpuUserNs / 1e9).toFixed(2)}s user ${(p.cpuSystemNs / 1e9).toFixed(2)}s system`,
    oomKills(r, p),
    ...((p.pidsLimitHits ?? 0) > 0 ? [`pids limit hit ${p.pidsLimitHits} time${p.pidsLimitHits === 1 ? '' : 's'} (forks refused)`] : []),
  ];
  return `corral: ${parts.join(', ')}`;
}
