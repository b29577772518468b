/**
 * Persisted task records, so that a restarted agent finds its tasks again.
 * One JSON file per task in `<stateDir>/tasks`: the task's handle plus
 *  - `state`: `starting` (written before the task's cgroup exists: a crash from then on leaves a
 *    record that recovery resolves) or `running` (the spawn succeeded, the handle is complete);
 *  - `owner`: the agent process that owns the task (pid and process start time, see owner.ts).
 *
 * Writes are atomic (temp file, then rename or link); a failed write removes its temp file, and
 * temp files of writers that died mid-write are removed when the directory is listed. A record file
 * is one or more lines, each a whole record, the last complete one current: the drivers' update of a
 * starting task to running (putAsync, or the raw_exec spawn's own thread with the line from
 * recordLine) appends its line in one write(2) instead of replacing the file,
 * because ext4 (auto_da_alloc) starts writeback of a file renamed over another (about 100 µs more
 * than the append on an idle disk, more while the disk is busy). A reader sees an appended line whole or only as a prefix without
 * its newline (the file's size grows after the copy), which it skips; an agent killed mid-append
 * leaves the record as it was (a `starting` record, which recovery resolves).
 * A new record is created with link(2), which fails if the file exists: two agents can never
 * both create the same task. Adoption of a dead owner's record renames the file away first (one
 * renamer wins), so two agents never adopt the same task either.
 *
 * No fsync: the store must survive the agent process dying, which the page cache already
 * guarantees. What fsync adds is surviving a kernel crash or power loss, and those end every
 * raw_exec task with the machine, so a record that outlived them would only point at nothing.
 * fsync cost ~2 ms per start on ext4, more than the whole rest of a task's start.
 * A corrupt or foreign file is reported through `problems` and skipped; listing never throws for one.
 *
 * createAsync/putAsync/deleteAsync are the same steps on the libuv pool, for the drivers' start and
 * destroy paths (a disk that stalls never stalls the loop); the returned promise settles once the
 * step is done, so a record awaited is as much on disk as one written synchronously.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { InvalidConfigError, TaskExistsError, TaskNotFoundError, TaskOwnedError } from '../errors.js';
import type { TaskHandle } from '../drivers/contract.js';
import { recordFileNative, type FsOp } from '../native.js';
import { type OwnerStatus, type TaskOwner, invalidOwner, ownerStatus, processStartTime, selfOwner } from './owner.js';
import { type RecordState, parseRecordText } from './record-format.js';

export { type OwnerStatus, type TaskOwner, ownerStatus, selfOwner } from './owner.js';

export const DEFAULT_STATE_DIR = '/var/lib/corral';
const TASK_DIR = 'tasks';
const SUFFIX = '.json';
/** `<record>.claim.<pid>.<starttime>`: a record being adopted by that process. */
const CLAIM_RE = /^(.*\.json)\.claim\.(\d+)\.(\d+)$/;
/** `<record>.<pid>-<starttime>.<n>.tmp`: a write in progress by that process. */
const TMP_RE = /\.(\d+)-(\d+)\.\d+\.tmp$/;

export type { RecordState } from './record-format.js';

export interface StoreProblem {
  file: string;
  reason: string;
}

/** One task record as listed: its handle, state, owner and whether that owner still runs. */
export interface TaskRecord {
  taskId: string;
  driver: string;
  file: string;
  state: RecordState;
  /** Undefined for records written before records had owners (treated as dead). */
  owner: TaskOwner | undefined;
  /** Judged at listing time from this store's owner's point of view. */
  ownerStatus: OwnerStatus;
  handle: TaskHandle;
}

export interface TaskStoreOptions {
  /** Who owns the records this store writes. Default: this process. */
  owner?: TaskOwner;
}

let tmpSeq = 0;

export class TaskStore {
  readonly dir: string;
  readonly owner: TaskOwner;
  private readonly tasksDir: string;
  private tasksDirMade = false;

  constructor(stateDir: string = DEFAULT_STATE_DIR, opts: TaskStoreOptions = {}) {
    if (typeof stateDir !== 'string' || !path.isAbsolute(stateDir)) throw new InvalidConfigError('stateDir', stateDir, 'must be an absolute path');
    if (opts.owner !== undefined) {
      const why = invalidOwner(opts.owner);
      if (why) throw new InvalidConfigError('owner', opts.owner, why);
    }
    this.dir = stateDir;
    this.tasksDir = path.join(stateDir, TASK_DIR);
    this.owner = opts.owner ? { pid: opts.owner.pid, startTime: opts.owner.startTime } : selfOwner();
  }

  /** The file a task's record lives in. Task ids are encoded so that any id maps to one safe file name. */
  fileFor(taskId: string): string {
    return path.join(this.tasksDir, encodeURIComponent(taskId).replace(/\./g, '%2E') + SUFFIX);
  }

  /**
   * Creates the record of a new task, owned by this store's owner; throws TaskExistsError when a
   * record of that id exists (whoever owns it). Atomic and exclusive across processes.
   */
  create(handle: TaskHandle, state: RecordState = 'starting'): void {
    const file = this.fileFor(handle.taskId);
    try {
      this.writeRecord(file, this.serialise(handle, state), true);
    } catch (err) {
      if (isLinkExists(err)) throw new TaskExistsError(handle.taskId);
      throw err;
    }
  }

  /** create off the event loop: resolves once the record is in place (the same exclusivity and errors). */
  async createAsync(handle: TaskHandle, state: RecordState = 'starting'): Promise<void> {
    const file = this.fileFor(handle.taskId);
    try {
      await this.writeRecordAsync(file, this.serialise(handle, state), true);
    } catch (err) {
      if (isLinkExists(err)) throw new TaskExistsError(handle.taskId);
      throw err;
    }
  }

  /**
   * The create of a task's record as a step (`create`: exclusive) for a batch that runs it off the
   * loop before the task's group is made (CreateOptions.before), instead of a pool job of its own.
   * A failure of the step itself goes through createStepError.
   */
  async createStep(handle: TaskHandle, state: RecordState = 'starting'): Promise<FsOp> {
    await this.tasksDirAsync();
    const file = this.fileFor(handle.taskId);
    return ['create', file, this.serialise(handle, state), this.tmpName(file)];
  }

  /** What createAsync would have thrown for a failed createStep: TaskExistsError, or the errno error. */
  createStepError(handle: TaskHandle, err: unknown): Error {
    if (isLinkExists(err) && (err as NodeJS.ErrnoException).path === this.fileFor(handle.taskId)) return new TaskExistsError(handle.taskId);
    const e = err as NodeJS.ErrnoException;
    return Object.assign(new Error(e.message), { code: e.code, errno: e.errno === undefined ? undefined : -Math.abs(e.errno), syscall: e.syscall, path: e.path });
  }

  /**
   * put off the event loop: resolves once the record says the new state. The new record is appended
   * to the file as its last line (one write, see the header); a record that is gone is written anew.
   */
  async putAsync(handle: TaskHandle, opts: { state?: RecordState } = {}): Promise<void> {
    const file = this.fileFor(handle.taskId);
    const text = this.serialise(handle, opts.state ?? 'running');
    try {
      await new Promise<void>((resolve, reject) => {
        recordFileNative().appendRecordAsync(file, text, (err) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await this.writeRecordAsync(file, text, false);
    }
  }

  /**
   * A task's record file and the line putAsync would append to it: for a writer that appends it on
   * another thread (the raw_exec spawn's SpawnOptions.record).
   */
  recordLine(handle: TaskHandle, state: RecordState): { file: string; text: string } {
    return { file: this.fileFor(handle.taskId), text: this.serialise(handle, state) };
  }

  /** The delete of a task's record as a step (`unlink`; a record already gone is deleted), for a batch that runs it last. */
  deleteStep(taskId: string): FsOp {
    return ['unlink', this.fileFor(taskId)];
  }

  /** delete off the event loop (one unlink; a record already gone is deleted). */
  async deleteAsync(taskId: string): Promise<void> {
    try {
      await fsp.unlink(this.fileFor(taskId));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Writes (replaces) a task's record, owned by this store's owner. Default state `running`. */
  put(handle: TaskHandle, opts: { state?: RecordState } = {}): void {
    this.writeRecord(this.fileFor(handle.taskId), this.serialise(handle, opts.state ?? 'running'), false);
  }

  /** get off the event loop. */
  async getAsync(taskId: string): Promise<TaskHandle | undefined> {
    const file = this.fileFor(taskId);
    let text: string;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch {
      return undefined;
    }
    const r = this.parseRecord(text, file);
    return 'record' in r ? r.record.handle : undefined;
  }

  get(taskId: string): TaskHandle | undefined {
    return this.getRecord(taskId)?.handle;
  }

  getRecord(taskId: string): TaskRecord | undefined {
    const r = this.readOne(this.fileFor(taskId));
    return 'record' in r ? r.record : undefined;
  }

  delete(taskId: string): void {
    fs.rmSync(this.fileFor(taskId), { force: true });
  }

  /**
   * Takes a task's record over for this store's owner (a restarted agent adopting the tasks of one
   * that died). Refused with TaskOwnedError while the current owner is alive, unless `force`.
   * Returns the record as it was before adoption (its previous owner). Safe against another agent
   * adopting the same record at the same time: exactly one of them wins, the other gets
   * TaskOwnedError (or TaskNotFoundError if the winner has deleted it meanwhile).
   */
  adopt(taskId: string, opts: { force?: boolean } = {}): TaskRecord {
    const file = this.fileFor(taskId);
    const before = this.readOne(file);
    if (!('record' in before)) throw new TaskNotFoundError(taskId);
    const rec = before.record;
    if (rec.ownerStatus === 'self') return rec;
    if (rec.ownerStatus === 'alive' && !opts.force) throw new TaskOwnedError(taskId, rec.owner!);
    const claim = `${file}.claim.${this.owner.pid}.${this.owner.startTime}`;
    try {
      fs.renameSync(file, claim);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // Someone else renamed it first: report the record as it is now.
      const now = this.getRecord(taskId);
      if (now?.owner && now.ownerStatus !== 'dead') throw new TaskOwnedError(taskId, now.owner);
      throw new TaskNotFoundError(taskId);
    }
    try {
      const claimed = this.readOne(claim, file);
      // Between our read and our rename another agent may have adopted (and rewritten) it.
      if (!('record' in claimed) || (claimed.record.ownerStatus === 'alive' && !opts.force)) {
        restoreClaim(claim, file);
        if ('record' in claimed) throw new TaskOwnedError(taskId, claimed.record.owner!);
        throw new TaskNotFoundError(taskId);
      }
      try {
        this.writeRecord(file, this.serialise(claimed.record.handle, claimed.record.state), true);
      } catch (err) {
        // EEXIST: another agent created a new task of this id after we took the old record.
        if (isLinkExists(err)) throw new TaskExistsError(taskId);
        restoreClaim(claim, file);
        throw err;
      }
      fs.rmSync(claim, { force: true });
      return claimed.record;
    } catch (err) {
      if (fs.existsSync(claim) && !fs.existsSync(file)) restoreClaim(claim, file);
      else fs.rmSync(claim, { force: true });
      throw err;
    }
  }

  /** Every valid handle, optionally of one driver; what could not be read goes to `problems`. */
  list(driver?: string): { handles: TaskHandle[]; problems: StoreProblem[] } {
    const { records, problems } = this.records(driver);
    return { handles: records.map((r) => r.handle), problems };
  }

  /**
   * Every valid record (optionally of one driver) with its owner's liveness; what could not be read
   * goes to `problems`. Temp files and adoption claims left by processes that died are cleaned up
   * on the way (a claim is put back as the record it was).
   */
  records(driver?: string): { records: TaskRecord[]; problems: StoreProblem[] } {
    const records: TaskRecord[] = [];
    const problems: StoreProblem[] = [];
    let names: string[];
    try {
      names = fs.readdirSync(this.tasksDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records, problems };
      throw err;
    }
    const present = new Set(names);
    for (const name of names.sort()) {
      const file = path.join(this.tasksDir, name);
      if (name.endsWith('.tmp')) {
        const m = TMP_RE.exec(name);
        if (m && this.writerGone(Number(m[1]), Number(m[2]))) fs.rmSync(file, { force: true });
        continue;
      }
      const claim = CLAIM_RE.exec(name);
      if (claim) {
        const [, recordName, pid, st] = claim;
        if (this.writerGone(Number(pid), Number(st))) {
          if (!present.has(recordName!)) {
            restoreClaim(file, path.join(this.tasksDir, recordName!));
            const r = this.readOne(path.join(this.tasksDir, recordName!));
            if ('record' in r && (driver === undefined || r.record.driver === driver)) records.push(r.record);
          } else {
            fs.rmSync(file, { force: true });
          }
        } else if (!present.has(recordName!)) {
          // Being adopted right now by a live agent: that agent is its owner.
          const r = this.readOne(file, path.join(this.tasksDir, recordName!));
          const by = { pid: Number(pid), startTime: Number(st) };
          if ('record' in r && (driver === undefined || r.record.driver === driver)) records.push({ ...r.record, owner: by, ownerStatus: ownerStatus(by, this.owner) });
        }
        continue;
      }
      if (!name.endsWith(SUFFIX)) {
        problems.push({ file, reason: 'not a task record file' });
        continue;
      }
      const r = this.readOne(file);
      if ('problem' in r) {
        if (r.problem !== 'missing') problems.push({ file, reason: r.problem });
        continue;
      }
      if (driver === undefined || r.record.driver === driver) records.push(r.record);
    }
    return { records, problems };
  }

  /** Whether the writer named in a temp or claim file name has died (this process counts as alive). */
  private writerGone(pid: number, startTime: number): boolean {
    if (pid === this.owner.pid && startTime === this.owner.startTime) return false;
    return processStartTime(pid) !== startTime;
  }

  private serialise(handle: TaskHandle, state: RecordState): string {
    return JSON.stringify({ ...handle, state, owner: this.owner }) + '\n';
  }

  /**
   * A temp file beside `file` (O_EXCL, 0600), then link (exclusive: EEXIST from link when the record
   * exists) or rename over it; the temp file never survives a failure (ENOSPC, EDQUOT...). One native
   * primitive (native/record_file.cc) for this and the asynchronous path below.
   */
  private writeRecord(file: string, text: string, exclusive: boolean): void {
    if (!this.tasksDirMade) {
      fs.mkdirSync(this.tasksDir, { recursive: true, mode: 0o700 });
      this.tasksDirMade = true;
    }
    recordFileNative().writeRecord(this.tmpName(file), file, text, exclusive);
  }

  /**
   * A temp file beside `file`, then link (exclusive) or rename over it: one libuv pool job (native
   * writeRecordAsync) instead of the five or six hops of fs.promises, which were a third of a whole
   * task lifecycle on an idle machine. The temp file never survives a failure.
   */
  private async writeRecordAsync(file: string, text: string, exclusive: boolean): Promise<void> {
    await this.tasksDirAsync();
    const tmp = this.tmpName(file);
    await new Promise<void>((resolve, reject) => {
      recordFileNative().writeRecordAsync(tmp, file, text, exclusive, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** The tasks directory, made off the loop the first time a record is written. */
  private async tasksDirAsync(): Promise<void> {
    if (this.tasksDirMade) return;
    await fsp.mkdir(this.tasksDir, { recursive: true, mode: 0o700 });
    this.tasksDirMade = true;
  }

  private tmpName(file: string): string {
    return `${file}.${this.owner.pid}-${this.owner.startTime}.${++tmpSeq}.tmp`;
  }

  /** Reads one record file; `asFile` is the record file name it must match (for claim files). */
  private readOne(file: string, asFile: string = file): { record: TaskRecord } | { problem: string } {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return { problem: code === 'ENOENT' ? 'missing' : `unreadable (${code})` };
    }
    return this.parseRecord(text, asFile);
  }

  /** A record file's text as its current record, which must be `asFile`'s (record-format.ts). */
  private parseRecord(text: string, asFile: string): { record: TaskRecord } | { problem: string } {
    const r = parseRecordText(text, (h) => (this.fileFor(h.taskId) === asFile ? undefined : `file name does not match task id ${JSON.stringify(h.taskId)}`));
    if ('problem' in r) return r;
    const { handle, state, owner } = r;
    return {
      record: { taskId: handle.taskId, driver: handle.driver, file: asFile, state, owner, ownerStatus: ownerStatus(owner, this.owner), handle },
    };
  }
}

/** Puts a claimed record back under its name unless a record of that name exists again. */
function restoreClaim(claim: string, file: string): void {
  try {
    fs.linkSync(claim, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  fs.rmSync(claim, { force: true });
}

/** The exclusive create's refusal: the record exists (not an EEXIST of the temp file). */
function isLinkExists(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'EEXIST' && (err as NodeJS.ErrnoException).syscall === 'link';
}
