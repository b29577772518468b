/**
 * Group waits and group kills as events on the event loop, holding no thread.
 *
 * A wait re-checks its condition (one non-blocking read of a control file) whenever something may
 * have changed it:
 * - cgroup2 (v2, and the unified hierarchy of a hybrid host): the kernel's notification on
 *   `cgroup.events` (native watchEvents: a uv_poll on the file), plus a slow safety poll;
 * - v1: timers. The first checks run on setImmediate for ~2 ms (most groups empty or freeze within
 *   that time of the write; the loop still runs everything else between two checks), then on
 *   timers backing off from 1 ms to 20 ms.
 * The deadline starts when the wait starts. On expiry: CgroupTimeoutError naming the phase.
 *
 * What can stall in the kernel stays off the loop: a kill's writes and signals, and v1's reads
 * (freezer.state takes the freezer mutex), run as single steps on corral's own threads
 * (native/control.cc), never on the libuv pool; cgroup.events is read on the loop (no lock).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeAddon, EventsWatch } from '../native.js';
import { CgroupError, CgroupTimeoutError } from '../errors.js';

export type GroupKillMethod = 'cgroup.kill' | 'freezer-v1' | 'freeze-v2' | 'signal-loop';

export interface GroupKillResult {
  /** SIGKILLs delivered (0 with cgroup.kill, which does not report it). */
  signalled: number;
  /** Nanoseconds from the call until the group was seen empty. */
  elapsedNs: number;
}

const SPIN_MS = 2;
const MAX_STEP_MS = 20;
/** With kernel notifications the poll is only a safety net (a notification is never lost, but a file may be replaced). */
const EVENTS_SAFETY_MS = 100;
const SIGKILL = 9;

export interface WaitSpec {
  /**
   * true: done. Called on the loop; must not block: one read of a cgroupfs file, synchronous where
   * the kernel answers without a lock another group's operation may hold (cgroup.events), else a
   * promise (a read off the loop). May throw or reject. Never two at once.
   */
  check: () => boolean | Promise<boolean>;
  /** A cgroup.events file whose notifications should trigger a re-check. */
  eventsPath?: string;
  /** Called after each check that found the condition unmet (v1 freezer re-writes, re-kills). */
  tick?: () => void;
  deadline: number;
  timeoutMs: number;
  phase: string;
  path: string;
}

const now = () => performance.now();

/** Resolves once spec.check() is true; rejects with CgroupTimeoutError at the deadline, or with what check throws. */
export function waitFor(addon: NativeAddon, spec: WaitSpec): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let watch: EventsWatch | undefined;
    let timer: NodeJS.Timeout | undefined;
    let immediate: NodeJS.Immediate | undefined;
    let done = false;
    let checking = false;
    let again = false;
    const started = now();
    let step = 1;
    const disarm = () => {
      if (timer) clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      timer = undefined;
      immediate = undefined;
    };
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      watch?.close();
      disarm();
      if (err) reject(err);
      else resolve();
    };
    // One check at a time; a trigger that arrives during an asynchronous check runs another after it.
    const pass = (): void => {
      if (done) return;
      if (checking) {
        again = true;
        return;
      }
      let r: boolean | Promise<boolean>;
      try {
        r = spec.check();
      } catch (err) {
        return finish(err);
      }
      if (typeof r === 'boolean') return settle(r);
      checking = true;
      r.then((ok) => { checking = false; settle(ok); }, (err) => { checking = false; finish(err); });
    };
    const settle = (ok: boolean): void => {
      if (done) return;
      if (ok) return finish();
      try {
        // Not there yet: nudge it for the next pass (a group that froze or emptied at once costs no extra write).
        spec.tick?.();
      } catch (err) {
        return finish(err);
      }
      if (now() >= spec.deadline) return finish(new CgroupTimeoutError(spec.phase, spec.path, spec.timeoutMs));
      if (again) {
        again = false;
        return pass();
      }
      schedule();
    };
    // The next pass: spinning on setImmediate at first (v1), then timers backing off; with a watch
    // only a slow safety poll, the notifications drive the passes.
    const schedule = () => {
      disarm();
      const t = now();
      const left = Math.max(0, spec.deadline - t);
      if (!watch && t - started < SPIN_MS && left > 0) {
        immediate = setImmediate(() => { immediate = undefined; pass(); });
        return;
      }
      const delay = watch ? EVENTS_SAFETY_MS : step;
      step = Math.min(step * 2, MAX_STEP_MS);
      timer = setTimeout(() => { timer = undefined; pass(); }, Math.max(0, Math.min(delay, left)));
    };
    if (spec.eventsPath) {
      // Armed before the first check: a change after it is notified, one before it is seen by it.
      try {
        watch = addon.watchEvents(spec.eventsPath, () => pass());
      } catch {
        watch = undefined; // no cgroup.events here (v1): timers only
      }
    }
    pass();
  });
}

/** The native reads and writes, as CgroupErrors. */
export class GroupOps {
  constructor(private readonly addon: () => NativeAddon) {}

  read(p: string): string {
    const r = this.addon().readFiles([p])[0]!;
    if (typeof r === 'string') return r;
    throw new CgroupError(r.code, Math.abs(r.errno), r.syscall, r.path ?? p, `${r.code}: reading ${p} failed (${r.message})`);
  }

  write(p: string, value: string): void {
    const r = this.addon().writeFiles([p], [value])[0];
    if (r) throw new CgroupError(r.code, Math.abs(r.errno), r.syscall, r.path ?? p, `${r.code}: writing ${JSON.stringify(value)} to ${p} failed (${r.message})`);
  }

  signal(procs: string, sig: number): number {
    try {
      return this.addon().signalGroup(procs, sig).signalled;
    } catch (err) {
      throw CgroupError.from(err, procs);
    }
  }

  /**
   * The group kill's writes, signals and v1 reads run on corral's own threads (native/control.cc):
   * a v1 freezer write took 2–7 ms each with 200 destroys at once, and cgroup.kill and
   * cgroup.freeze take the kernel's cgroup mutex; the libuv pool may be stuck on a slow filesystem.
   */
  writeAsync(p: string, value: string): Promise<void> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().controlWrite(p, value, (err) => (err ? reject(CgroupError.from(err, p)) : resolve()));
      } catch (err) {
        reject(CgroupError.from(err, p));
      }
    });
  }

  signalAsync(procs: string, sig: number): Promise<number> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().controlSignalGroup(procs, sig, (err, r) => (err ? reject(CgroupError.from(err, procs)) : resolve(r!.signalled)));
      } catch (err) {
        reject(CgroupError.from(err, procs));
      }
    });
  }

  /**
   * A tick that runs `step` off the loop, at most one at a time (a pass that finds the last one
   * still running skips it); a failure is kept for the wait to report.
   */
  private backgroundTick(step: () => Promise<void>): { tick: () => void; failure: () => unknown; idle: () => Promise<void> } {
    let running: Promise<void> | undefined;
    let failed: unknown;
    return {
      tick: () => {
        if (running || failed !== undefined) return;
        running = step().catch((err) => { failed = err ?? new Error('tick failed'); }).finally(() => { running = undefined; });
      },
      failure: () => failed,
      idle: async () => { await running; },
    };
  }

  /** waitFor, then the background step's last run settled (a late FROZEN must not land after the thaw). */
  private async waitWithTick(spec: WaitSpec, bg: { idle: () => Promise<void> } | undefined): Promise<void> {
    try {
      await waitFor(this.addon(), spec);
    } finally {
      await bg?.idle();
    }
  }

  /** A read off the loop (see writeAsync), as a CgroupError on failure. */
  readAsync(p: string): Promise<string> {
    return new Promise((resolve, reject) => {
      try {
        this.addon().controlRead(p, (err, text) => (err ? reject(CgroupError.from(err, p)) : resolve(text!)));
      } catch (err) {
        reject(CgroupError.from(err, p));
      }
    });
  }

  /**
   * Empty: v2 by `populated 0` in cgroup.events (one small read on the loop: the kernel answers it
   * without a lock), v1 by an empty cgroup.procs, read off the loop.
   */
  isEmpty(procs: string, v2: boolean): boolean | Promise<boolean> {
    if (v2) return /^populated 0$/m.test(this.read(path.join(path.dirname(procs), 'cgroup.events')));
    return this.readAsync(procs).then((text) => text === '');
  }

  /** v1 freezer.state is read off the loop: the read takes the freezer mutex, which a freeze of a large group holds. */
  isFrozen(dir: string, version: 1 | 2, frozen: boolean): boolean | Promise<boolean> {
    if (version === 1) return this.readAsync(path.join(dir, 'freezer.state')).then((text) => text.trim() === (frozen ? 'FROZEN' : 'THAWED'));
    return new RegExp(`^frozen ${frozen ? 1 : 0}$`, 'm').test(this.read(path.join(dir, 'cgroup.events')));
  }

  /** A group that existed when the wait began and is removed meanwhile was emptied (by its owner): done. */
  async waitEmpty(procs: string, timeoutMs: number, opts: { v2?: boolean; deadline?: number; rekill?: { count: number } } = {}): Promise<void> {
    const existed = fs.existsSync(path.dirname(procs));
    try {
      await this.waitEmptyHere(procs, timeoutMs, opts);
    } catch (err) {
      if (existed && removed(err, procs)) return;
      throw err;
    }
  }

  private waitEmptyHere(
    procs: string, timeoutMs: number, opts: { v2?: boolean; deadline?: number; rekill?: { count: number }; after?: Promise<void> },
  ): Promise<void> {
    const dir = path.dirname(procs);
    let after = opts.after;
    const v2 = opts.v2 ?? this.hasEvents(dir);
    let lastKill = now();
    // Something that raced in between the kill and the thaw gets SIGKILLed again every ~10 ms.
    const rekill = opts.rekill ? this.backgroundTick(async () => {
      if (now() - lastKill < 10) return;
      lastKill = now();
      opts.rekill!.count += await this.signalAsync(procs, SIGKILL);
    }) : undefined;
    return this.waitWithTick({
      check: () => {
        if (rekill?.failure() !== undefined) throw rekill.failure();
        if (after) {
          const first = after;
          after = undefined;
          return first.then(() => this.isEmpty(procs, v2));
        }
        return this.isEmpty(procs, v2);
      },
      ...(v2 ? { eventsPath: path.join(dir, 'cgroup.events') } : {}),
      ...(rekill ? { tick: rekill.tick } : {}),
      deadline: opts.deadline ?? now() + timeoutMs,
      timeoutMs,
      phase: 'become empty',
      path: procs,
    }, rekill);
  }

  /**
   * Waits until a v1 freezer.state reads FROZEN/THAWED or a v2 cgroup.events has frozen 1/0. With
   * `rewrite` (v1 freeze, as runc does): FROZEN written again each pass while FREEZING, and a
   * thaw + re-freeze every 200 ms, so a group that keeps forking still freezes.
   */
  waitFrozen(dir: string, version: 1 | 2, frozen: boolean, timeoutMs: number, opts: { deadline?: number; rewrite?: boolean } = {}): Promise<void> {
    const state = path.join(dir, 'freezer.state');
    let lastThaw = now();
    const rewrite = opts.rewrite && version === 1 ? this.backgroundTick(async () => {
      if (now() - lastThaw > 200) {
        lastThaw = now();
        await this.writeAsync(state, 'THAWED');
      }
      await this.writeAsync(state, 'FROZEN');
    }) : undefined;
    return this.waitWithTick({
      check: () => {
        if (rewrite?.failure() !== undefined) throw rewrite.failure();
        return this.isFrozen(dir, version, frozen);
      },
      ...(version === 2 ? { eventsPath: path.join(dir, 'cgroup.events') } : {}),
      ...(rewrite ? { tick: rewrite.tick } : {}),
      deadline: opts.deadline ?? now() + timeoutMs,
      timeoutMs,
      phase: frozen ? 'freeze' : 'thaw',
      path: dir,
    }, rewrite);
  }

  private hasEvents(dir: string): boolean {
    try {
      this.read(path.join(dir, 'cgroup.events'));
      return true;
    } catch {
      return false;
    }
  }

  /** Empties a group (see GroupKillMethod), bounded by timeoutMs from the call; freeze methods always thaw on the way out. */
  async groupKill(method: GroupKillMethod, procs: string, dir: string, timeoutMs: number): Promise<GroupKillResult> {
    const t0 = process.hrtime.bigint();
    const deadline = now() + timeoutMs;
    const out = { count: 0 };
    const elapsed = () => ({ signalled: out.count, elapsedNs: Number(process.hrtime.bigint() - t0) });
    // The group existed once the first step (a control write, or a read of cgroup.procs) succeeded:
    // no lookup of it on the loop before the kill.
    const first = { done: false };
    try {
      return await this.killBy(method, procs, dir, timeoutMs, deadline, out, elapsed, first);
    } catch (err) {
      // A missing group is an error; one that existed and was removed meanwhile (by the task's owner) was emptied.
      if (first.done && removed(err, procs)) return elapsed();
      throw err;
    }
  }

  private async killBy(
    method: GroupKillMethod, procs: string, dir: string, timeoutMs: number, deadline: number,
    out: { count: number }, elapsed: () => GroupKillResult, first: { done: boolean },
  ): Promise<GroupKillResult> {
    switch (method) {
      case 'cgroup.kill': {
        // The wait's notifications are armed while the write is on its way, not after it returned:
        // the first check waits for the write, then reads.
        const written = this.writeAsync(path.join(dir, 'cgroup.kill'), '1').then(() => { first.done = true; });
        await this.waitEmptyHere(procs, timeoutMs, { v2: true, deadline, after: written });
        return elapsed();
      }
      case 'freeze-v2':
      case 'freezer-v1': {
        const v1 = method === 'freezer-v1';
        const ctl = path.join(dir, v1 ? 'freezer.state' : 'cgroup.freeze');
        const thaw = v1 ? 'THAWED' : '0';
        try {
          await this.writeAsync(ctl, v1 ? 'FROZEN' : '1');
          first.done = true;
          await this.waitFrozen(dir, v1 ? 1 : 2, true, timeoutMs, { deadline, rewrite: v1 });
          // Frozen: no member can exit or fork, so the list is the whole group.
          out.count += await this.signalAsync(procs, SIGKILL);
        } finally {
          // Always thaw (the SIGKILLs are delivered when the tasks run again), even after an error.
          await this.writeAsync(ctl, thaw).catch(() => { /* reported by the wait below, or the first error wins */ });
        }
        await this.waitEmptyHere(procs, timeoutMs, { v2: !v1, deadline, rekill: out });
        return elapsed();
      }
      case 'signal-loop':
        out.count += await this.signalAsync(procs, SIGKILL);
        first.done = true;
        await this.waitEmptyHere(procs, timeoutMs, { v2: false, deadline, rekill: out });
        return elapsed();
    }
  }
}

/**
 * The group's directory is gone (ENOENT or ENODEV, and no directory left): the kernel removes only an empty
 * cgroup, so a group that was removed under us holds nothing.
 */
function removed(err: unknown, procs: string): boolean {
  const code = (err as { code?: string } | null)?.code;
  // ENODEV: the file was opened before the rmdir and read after it.
  return (code === 'ENOENT' || code === 'ENODEV') && !fs.existsSync(path.dirname(procs));
}
