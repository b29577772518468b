/** Parsers of cgroup stat files into CgroupStats (pure; the managers read the files in one native batch). */
import type { CgroupStats } from './types.js';

/** Parses "key value" lines (cpu.stat, memory.stat, memory.events, cpuacct.stat, memory.oom_control). */
export function parseKeyValues(text: string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  if (!text) return out;
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === undefined || v === undefined) continue;
    const n = Number(v);
    if (Number.isFinite(n)) out.set(k, n);
  }
  return out;
}

/** Parses a single-number file ("max" → Infinity); undefined when absent or not a number. */
export function parseNumber(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t === 'max') return Infinity;
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}

/** Linux USER_HZ: the unit of cpuacct.stat (always 100 on Linux, whatever CONFIG_HZ is). */
export const USER_HZ = 100;
const NS_PER_TICK = 1e9 / USER_HZ;

export interface V2StatFiles {
  cpuStat?: string;
  memoryCurrent?: string;
  memoryStat?: string;
  memoryPeak?: string;
}

/** v2: cpu.stat (usec), memory.current, memory.stat (anon = rss, file = cache), memory.peak. */
export function statsFromV2(f: V2StatFiles, memoryUnavailable?: string, cpuThrottlingUnavailable?: string): CgroupStats {
  const unavailable: Record<string, string> = {};
  const cpu = parseKeyValues(f.cpuStat);
  if (f.cpuStat === undefined) unavailable.cpu = 'cpu.stat could not be read';
  const us = (k: string) => (cpu.get(k) ?? 0) * 1000;
  const stats: CgroupStats = {
    cpu: {
      userNs: us('user_usec'),
      systemNs: us('system_usec'),
      totalNs: us('usage_usec'),
      throttledNs: us('throttled_usec'),
      throttledPeriods: cpu.get('nr_throttled') ?? 0,
    },
    unavailable,
  };
  if (cpuThrottlingUnavailable) unavailable['cpu.throttling'] = cpuThrottlingUnavailable;
  if (memoryUnavailable) {
    unavailable.memory = memoryUnavailable;
    return stats;
  }
  const usage = parseNumber(f.memoryCurrent);
  if (usage === undefined) {
    unavailable.memory = 'memory.current could not be read';
    return stats;
  }
  const ms = parseKeyValues(f.memoryStat);
  const peak = parseNumber(f.memoryPeak);
  if (peak === undefined) unavailable['memory.peak'] = 'memory.peak is not offered by this kernel (Linux 5.19+); maxUsageBytes is 0';
  stats.memory = {
    usageBytes: usage,
    rssBytes: ms.get('anon') ?? 0,
    cacheBytes: ms.get('file') ?? 0,
    maxUsageBytes: peak ?? 0,
  };
  return stats;
}

export interface V1StatFiles {
  cpuacctUsage?: string;
  cpuacctUsageUser?: string;
  cpuacctUsageSys?: string;
  cpuacctStat?: string;
  cpuStat?: string;
  memoryUsage?: string;
  memoryStat?: string;
  memoryMaxUsage?: string;
}

/**
 * v1: cpuacct.usage (ns), cpuacct.usage_user/usage_sys (ns; else cpuacct.stat in USER_HZ ticks),
 * cpu.stat (nr_throttled, throttled_time ns), memory.usage_in_bytes, memory.stat (total_rss/rss,
 * total_cache/cache), memory.max_usage_in_bytes.
 */
export function statsFromV1(f: V1StatFiles, unavailableIn: Record<string, string> = {}): CgroupStats {
  const unavailable: Record<string, string> = { ...unavailableIn };
  let userNs = parseNumber(f.cpuacctUsageUser);
  let systemNs = parseNumber(f.cpuacctUsageSys);
  if (userNs === undefined || systemNs === undefined) {
    const st = parseKeyValues(f.cpuacctStat);
    userNs = (st.get('user') ?? 0) * NS_PER_TICK;
    systemNs = (st.get('system') ?? 0) * NS_PER_TICK;
  }
  const total = parseNumber(f.cpuacctUsage);
  if (total === undefined && !unavailable.cpuacct) unavailable.cpuacct = 'cpuacct.usage could not be read';
  const cs = parseKeyValues(f.cpuStat);
  if (f.cpuStat === undefined && !unavailable['cpu.throttling']) unavailable['cpu.throttling'] = 'cpu.stat could not be read';
  const stats: CgroupStats = {
    cpu: {
      userNs,
      systemNs,
      totalNs: total ?? userNs + systemNs,
      throttledNs: cs.get('throttled_time') ?? 0,
      throttledPeriods: cs.get('nr_throttled') ?? 0,
    },
    unavailable,
  };
  if (unavailable.memory) return stats;
  const usage = parseNumber(f.memoryUsage);
  if (usage === undefined) {
    unavailable.memory = 'memory.usage_in_bytes could not be read';
    return stats;
  }
  const ms = parseKeyValues(f.memoryStat);
  stats.memory = {
    usageBytes: usage,
    rssBytes: ms.get('total_rss') ?? ms.get('rss') ?? 0,
    cacheBytes: ms.get('total_cache') ?? ms.get('cache') ?? 0,
    maxUsageBytes: parseNumber(f.memoryMaxUsage) ?? 0,
  };
  return stats;
}
