/**
 * /proc readers: a process's stat line (start time for pid-reuse checks, session and process group
 * for noCgroups tracking, cpu ticks and rss for /proc stats), and the processes of a session.
 */
import * as fs from 'node:fs';

/** USER_HZ: the unit of utime/stime/starttime in /proc/<pid>/stat; 100 on every Linux ABI Node runs on. */
export const CLK_TCK = 100;
export const PAGE_SIZE = 4096;

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Clock ticks. */
  utime: number;
  stime: number;
  /** Field 22: clock ticks after boot when the process started. Distinguishes a reused pid. */
  starttime: number;
  /** Pages. */
  rss: number;
}

/** Parses /proc/<pid>/stat; the comm may contain spaces and parentheses, so fields are counted from the last ')'. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  const f = text.slice(close + 2).trim().split(' ');
  // f[0] is field 3 (state); field N is f[N - 3].
  if (f.length < 22) return undefined;
  const n = (field: number) => Number(f[field - 3]);
  return {
    pid,
    comm: text.slice(open + 1, close),
    state: f[0]!,
    ppid: n(4),
    pgrp: n(5),
    session: n(6),
    utime: n(14),
    stime: n(15),
    starttime: n(22),
    rss: n(24),
  };
}

export function readProcStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The start time (field 22) of a live, non-zombie process, or undefined when there is none. */
export function processStartTime(pid: number): number | undefined {
  const st = readProcStat(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return undefined;
  return st.starttime;
}

export function allPids(): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) if (/^\d+$/.test(name)) out.push(Number(name));
  return out;
}

/** Live (non-zombie) processes whose process group or session is `id` (a setsid'd task leads both). */
export function sessionMembers(id: number): ProcStat[] {
  const out: ProcStat[] = [];
  for (const pid of allPids()) {
    const st = readProcStat(pid);
    if (!st || st.state === 'Z' || st.state === 'X') continue;
    if (st.pgrp === id || st.session === id) out.push(st);
  }
  return out;
}

/** Descendants of `root` (by ppid) among `stats`, root included if present. */
export function descendantsOf(root: number, stats: readonly ProcStat[]): number[] {
  const children = new Map<number, number[]>();
  for (const s of stats) {
    const l = children.get(s.ppid) ?? [];
    l.push(s.pid);
    children.set(s.ppid, l);
  }
  const out = new Set<number>();
  const todo = [root];
  while (todo.length > 0) {
    const p = todo.pop()!;
    if (out.has(p)) continue;
    out.add(p);
    for (const c of children.get(p) ?? []) todo.push(c);
  }
  if (!stats.some((s) => s.pid === root)) out.delete(root);
  return [...out];
}

export function killQuiet(pid: number, signal: NodeJS.Signals | number): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * SIGKILLs every process chosen by `pick` in rounds until none is left or `timeoutMs` passes.
 * Returns the number of SIGKILLs sent; throws when processes remain at the bound.
 */
export async function killUntilGone(pick: () => number[], timeoutMs: number, what: string): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let sent = 0;
  for (;;) {
    const pids = pick();
    if (pids.length === 0) return sent;
    if (Date.now() > deadline) throw new Error(`${what}: processes ${pids.join(',')} still alive after ${timeoutMs} ms`);
    for (const p of pids) if (killQuiet(p, 'SIGKILL')) sent++;
    await sleep(10);
  }
}
