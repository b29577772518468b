/**
 * Persisted task handles, so that a restarted agent finds its tasks again.
 * One JSON file per task in the state directory, written atomically (temp file, rename).
 *
 * No fsync: the store must survive the agent process dying, which the page cache already
 * guarantees. What fsync adds is surviving a kernel crash or power loss, and those end every
 * raw_exec task with the machine, so a handle that outlived them would only point at nothing.
 * fsync cost ~2 ms per start on ext4, more than the whole rest of a task's start.
 * A corrupt or foreign file is reported through `problems` and skipped; loading never throws for one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidConfigError } from '../errors.js';
import type { TaskHandle } from '../drivers/contract.js';

export const DEFAULT_STATE_DIR = '/var/lib/corral';
const TASK_DIR = 'tasks';
const SUFFIX = '.json';

export interface StoreProblem {
  file: string;
  reason: string;
}

export class TaskStore {
  readonly dir: string;
  private readonly tasksDir: string;
  private tasksDirMade = false;

  constructor(stateDir: string = DEFAULT_STATE_DIR) {
    if (!path.isAbsolute(stateDir)) throw new InvalidConfigError('stateDir', stateDir, 'must be an absolute path');
    this.dir = stateDir;
    this.tasksDir = path.join(stateDir, TASK_DIR);
  }

  /** The file a task's handle lives in. Task ids are encoded so that any id maps to one safe file name. */
  fileFor(taskId: string): string {
    return path.join(this.tasksDir, encodeURIComponent(taskId).replace(/\./g, '%2E') + SUFFIX);
  }

  put(handle: TaskHandle): void {
    if (!this.tasksDirMade) {
      fs.mkdirSync(this.tasksDir, { recursive: true, mode: 0o700 });
      this.tasksDirMade = true;
    }
    const file = this.fileFor(handle.taskId);
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(handle) + '\n', { mode: 0o600 });
    try {
      fs.renameSync(tmp, file);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
  }

  get(taskId: string): TaskHandle | undefined {
    const r = this.readOne(this.fileFor(taskId));
    return 'handle' in r ? r.handle : undefined;
  }

  delete(taskId: string): void {
    fs.rmSync(this.fileFor(taskId), { force: true });
  }

  /** Every valid handle, optionally of one driver; what could not be read goes to `problems`. */
  list(driver?: string): { handles: TaskHandle[]; problems: StoreProblem[] } {
    const handles: TaskHandle[] = [];
    const problems: StoreProblem[] = [];
    let names: string[];
    try {
      names = fs.readdirSync(this.tasksDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { handles, problems };
      throw err;
    }
    for (const name of names.sort()) {
      const file = path.join(this.tasksDir, name);
      if (!name.endsWith(SUFFIX)) {
        if (!name.endsWith('.tmp')) problems.push({ file, reason: 'not a task handle file' });
        continue;
      }
      const r = this.readOne(file);
      if ('problem' in r) {
        if (r.problem !== 'missing') problems.push({ file, reason: r.problem });
        continue;
      }
      if (driver === undefined || r.handle.driver === driver) handles.push(r.handle);
    }
    return { handles, problems };
  }

  private readOne(file: string): { handle: TaskHandle } | { problem: string } {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return { problem: code === 'ENOENT' ? 'missing' : `unreadable (${code})` };
    }
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (err) {
      return { problem: `corrupt JSON: ${(err as Error).message}` };
    }
    const why = invalidHandle(v);
    if (why) return { problem: `not a corral task handle: ${why}` };
    const handle = v as TaskHandle;
    if (this.fileFor(handle.taskId) !== file) return { problem: `file name does not match task id ${JSON.stringify(handle.taskId)}` };
    return { handle };
  }
}

function invalidHandle(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not an object';
  const h = v as Record<string, unknown>;
  if (h.version !== 1) return `unknown version ${JSON.stringify(h.version)}`;
  for (const k of ['driver', 'taskId', 'allocId', 'taskName', 'startedAt'] as const) {
    if (typeof h[k] !== 'string' || (h[k] as string).length === 0) return `missing ${k}`;
  }
  if (typeof h.config !== 'object' || h.config === null) return 'missing config';
  if (typeof h.driverState !== 'object' || h.driverState === null) return 'missing driverState';
  return undefined;
}
