/**
 * A task record file's text. One or more lines, each a whole record (the handle plus `state` and
 * `owner`); the last complete line is the current one. A line still being appended shows as a tail
 * without its newline and is skipped; a file with no complete line is read whole (records written by
 * hand, or before records had a newline).
 */
import type { TaskHandle } from '../drivers/contract.js';
import { type TaskOwner, invalidOwner } from './owner.js';

export type RecordState = 'starting' | 'running';

export interface RecordLine {
  handle: TaskHandle;
  state: RecordState;
  owner?: TaskOwner;
}

/**
 * The current record of a file's text. `check` may refuse a line's handle (a reason): a refused or
 * invalid line counts as not there, and the line before it is tried; the last line's problem is
 * reported when none is a record.
 */
export function parseRecordText(text: string, check: (h: TaskHandle) => string | undefined): RecordLine | { problem: string } {
  const lines = text.split('\n');
  lines.pop();
  let last: { problem: string } | undefined;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lines[i]!.trim() === '') continue;
    const r = parseLine(lines[i]!, check);
    if (!('problem' in r)) return r;
    last ??= r;
  }
  return last ?? parseLine(text, check);
}

function parseLine(text: string, check: (h: TaskHandle) => string | undefined): RecordLine | { problem: string } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return { problem: `corrupt JSON: ${(err as Error).message}` };
  }
  const why = invalidRecord(v);
  if (why) return { problem: `not a corral task record: ${why}` };
  const { state, owner, ...rest } = v as TaskHandle & { state?: RecordState; owner?: TaskOwner };
  const handle = rest as TaskHandle;
  const refused = check(handle);
  if (refused) return { problem: refused };
  // Records from before write-ahead were written once the task ran.
  return { handle, state: state ?? 'running', ...(owner !== undefined ? { owner } : {}) };
}

function invalidRecord(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not an object';
  const h = v as Record<string, unknown>;
  if (h.version !== 1) return `unknown version ${JSON.stringify(h.version)}`;
  for (const k of ['driver', 'taskId', 'allocId', 'taskName', 'startedAt'] as const) {
    if (typeof h[k] !== 'string' || (h[k] as string).length === 0) return `missing ${k}`;
  }
  if (typeof h.config !== 'object' || h.config === null) return 'missing config';
  if (typeof h.driverState !== 'object' || h.driverState === null) return 'missing driverState';
  if (h.state !== undefined && h.state !== 'starting' && h.state !== 'running') return `unknown state ${JSON.stringify(h.state)}`;
  if (h.owner !== undefined) return invalidOwner(h.owner);
  return undefined;
}
