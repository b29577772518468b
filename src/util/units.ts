/** Parsers for the human units of CLI flags and configs: durations ("5s", "5m", "250ms") and sizes ("256M"). */

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "5m" → 300000. A bare number is milliseconds. Returns undefined for anything else. */
export function parseDurationMs(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  let total = 0;
  let rest = t;
  if (rest === '') return undefined;
  while (rest.length > 0) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kb: 1024, kib: 1024,
  m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2,
  g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3,
  t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4,
};

/** "256M" → 268435456 (binary units, as Docker and Nomad read them). Returns undefined for anything else. */
export function parseSizeBytes(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return undefined;
  const mult = SIZE_UNITS[m[2]!.toLowerCase()];
  if (mult === undefined) return undefined;
  const v = Math.round(Number(m[1]) * mult);
  return Number.isSafeInteger(v) ? v : undefined;
}
