/**
 * The /proc toolkit (drivers, store, CLI): a process's stat line (start time for pid-reuse checks,
 * session and process group for noCgroups tracking, cpu ticks and rss for /proc stats), the
 * processes of a session, a process tree, and killing a set of processes until none is left.
 * The page size and clock tick come from the kernel (the auxiliary vector), not from constants.
 */
import * as fs from 'node:fs';
import { KillTimeoutError } from '../errors.js';
import { sleep } from './abort.js';

export { CLK_TCK, PAGE_SIZE } from './auxv.js';

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

/** True for a process that exists and is not a zombie. */
export function isLive(st: ProcStat | undefined): st is ProcStat {
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

export function allPids(): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) if (/^\d+$/.test(name)) out.push(Number(name));
  return out;
}

/** Live stats of the given pids (all of /proc when omitted). */
export function liveStats(pids: readonly number[] = allPids()): ProcStat[] {
  const out: ProcStat[] = [];
  for (const pid of pids) {
    const st = readProcStat(pid);
    if (isLive(st)) out.push(st);
  }
  return out;
}

/** Live processes whose process group or session is `id` (a setsid'd task leads both). */
export function sessionMembers(id: number): ProcStat[] {
  return liveStats().filter((st) => st.pgrp === id || st.session === id);
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

/** `root`, its descendants and the members of the session or process group it leads, among `candidates`. */
export function processTree(root: number, candidates?: readonly number[]): number[] {
  const stats = liveStats(candidates);
  const chosen = new Set(descendantsOf(root, stats));
  for (const s of stats) if (s.session === root || s.pgrp === root) chosen.add(s.pid);
  return [...chosen];
}

export function killQuiet(pid: number, signal: NodeJS.Signals | number): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGKILLs every process chosen by `pick` in rounds until none is left or `timeoutMs` passes.
 * Returns the number of SIGKILLs sent; throws KillTimeoutError when processes remain at the bound.
 */
export async function killUntilGone(pick: () => number[], timeoutMs: number, what: string): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let sent = 0;
  for (;;) {
    const pids = pick();
    if (pids.length === 0) return sent;
    if (Date.now() > deadline) throw new KillTimeoutError(what, pids, timeoutMs);
    for (const p of pids) if (killQuiet(p, 'SIGKILL')) sent++;
    await sleep(10);
  }
}

/** Kills `root` with its descendants and its session/process group (among `candidates`), until none is left. */
export function killTree(root: number, timeoutMs: number, candidates?: () => number[]): Promise<number> {
  return killUntilGone(() => processTree(root, candidates?.()), timeoutMs, `process tree of ${root}`);
}
