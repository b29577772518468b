/**
 * Who owns a task record: a process, named by its pid and its start time (field 22 of
 * /proc/<pid>/stat). A pid alone is not an identity: after the owner dies the kernel hands the
 * number to another process, and that process must not count as the owner. (pid, start time) names
 * one process for the life of the boot.
 */
import * as fs from 'node:fs';
import { CorralError } from '../errors.js';

export interface TaskOwner {
  pid: number;
  /** Clock ticks after boot at which the process started (/proc/<pid>/stat field 22). */
  startTime: number;
}

/**
 * - `self`: this very process.
 * - `alive`: another process that is still the owner (same pid and start time, not a zombie).
 * - `dead`: the owner is gone (pid missing, a zombie, or reused by a process that started later),
 *   or the record names no owner (written before records had owners): its tasks can be adopted.
 */
export type OwnerStatus = 'self' | 'alive' | 'dead';

/** Start time (clock ticks after boot) of a live, non-zombie process, or undefined when there is none. */
export function processStartTime(pid: number): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The comm field may contain spaces and ')': fields are counted from the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state), so field 22 is f[19].
  if (f.length < 20 || f[0] === 'Z' || f[0] === 'X') return undefined;
  const st = Number(f[19]);
  return Number.isSafeInteger(st) ? st : undefined;
}

let self: TaskOwner | undefined;

/** This process as an owner. */
export function selfOwner(): TaskOwner {
  if (!self) {
    const startTime = processStartTime(process.pid);
    if (startTime === undefined) throw new CorralError('ERR_PROC_UNREADABLE', `cannot read /proc/${process.pid}/stat: is /proc mounted?`);
    self = { pid: process.pid, startTime };
  }
  return { ...self };
}

export function sameOwner(a: TaskOwner | undefined, b: TaskOwner | undefined): boolean {
  return a !== undefined && b !== undefined && a.pid === b.pid && a.startTime === b.startTime;
}

/** Whether `owner` is still running, judged from `me`'s point of view. */
export function ownerStatus(owner: TaskOwner | undefined, me: TaskOwner = selfOwner()): OwnerStatus {
  if (owner === undefined) return 'dead';
  if (sameOwner(owner, me)) return 'self';
  return processStartTime(owner.pid) === owner.startTime ? 'alive' : 'dead';
}

/** Why `v` is not an owner, or undefined when it is one. */
export function invalidOwner(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null) return 'owner is not an object';
  const o = v as Record<string, unknown>;
  if (!Number.isSafeInteger(o.pid) || (o.pid as number) < 1) return `owner.pid ${JSON.stringify(o.pid)} is not a pid`;
  if (!Number.isSafeInteger(o.startTime) || (o.startTime as number) < 0) return `owner.startTime ${JSON.stringify(o.startTime)} is not a start time`;
  return undefined;
}
