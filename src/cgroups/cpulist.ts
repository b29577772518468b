/** Kernel cpu lists ("0-3,5", as in cpuset.cpus and /sys/devices/system/cpu/online). */
import { InvalidConfigError } from '../errors.js';

/** Parses a kernel cpu list into sorted, unique core numbers. An empty (or blank) list is []. */
export function parseCpuList(text: string, field = 'cpulist'): number[] {
  const s = text.trim();
  if (s === '') return [];
  const out = new Set<number>();
  for (const part of s.split(',')) {
    const p = part.trim();
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    if (!m) throw new InvalidConfigError(field, text, `malformed cpu list item ${JSON.stringify(p)}`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new InvalidConfigError(field, text, `descending range ${JSON.stringify(p)}`);
    if (b - a > 65536) throw new InvalidConfigError(field, text, `range ${JSON.stringify(p)} is too large`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

/** Formats cores as a kernel cpu list with ranges ([0,1,2,3,5] → "0-3,5"); [] → "". */
export function formatCpuList(cores: Iterable<number>): string {
  const sorted = [...new Set(cores)].sort((x, y) => x - y);
  const parts: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** Set helpers on sorted core arrays. */
export function coresMinus(a: readonly number[], b: readonly number[]): number[] {
  const sb = new Set(b);
  return a.filter((x) => !sb.has(x));
}

export function coresUnion(a: readonly number[], b: readonly number[]): number[] {
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}

export function sameCores(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  const sa = [...a].sort((x, y) => x - y);
  const sb = [...b].sort((x, y) => x - y);
  return sa.every((v, i) => v === sb[i]);
}
