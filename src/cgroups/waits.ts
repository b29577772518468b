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
  /** true: done. Called on the loop; must not block (one read of a cgroupfs file). May throw. */
  check: () => boolean;
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
    const started = now();
    let step = 1;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      watch?.close();
      if (timer) clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      if (err) reject(err);
      else resolve();
    };
    const recheck = (): boolean => {
      if (done) return true;
      try {
        if (spec.check()) {
          finish();
          return true;
        }
        // Not there yet: nudge it for the next pass (a group that froze or emptied at once costs no extra write).
        spec.tick?.();
      } catch (err) {
        finish(err);
        return true;
      }
      if (now() >= spec.deadline) {
        finish(new CgroupTimeoutError(spec.phase, spec.path, spec.timeoutMs));
        return true;
      }
      return false;
    };
    const schedule = () => {
      if (done) return;
      const t = now();
      const left = Math.max(0, spec.deadline - t);
      if (!watch && t - started < SPIN_MS && left > 0) {
        immediate = setImmediate(() => { immediate = undefined; if (!recheck()) schedule(); });
        return;
      }
      const delay = watch ? EVENTS_SAFETY_MS : step;
      step = Math.min(step * 2, MAX_STEP_MS);
      timer = setTimeout(() => { timer = undefined; if (!recheck()) schedule(); }, Math.max(0, Math.min(delay, left)));
    };
    if (recheck()) return;
    if (spec.eventsPath) {
      try {
        watch = addon.watchEvents(spec.eventsPath, () => {
          if (!recheck()) {
            // keep the safety poll armed; the notification path needs no rescheduling
          }
        });
      } catch {
        watch = undefined; // no cgroup.events here (v1): timers only
      }
      // A change between the first check and arming the watch would be missed: check once more.
      if (watch && recheck()) return;
    }
    schedule();
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

  /** Empty: v2 by `populated 0` in cgroup.events (one small read), v1 by an empty cgroup.procs. */
  isEmpty(procs: string, v2: boolean): boolean {
    if (v2) return /^populated 0$/m.test(this.read(path.join(path.dirname(procs), 'cgroup.events')));
    return this.read(procs) === '';
  }

  isFrozen(dir: string, version: 1 | 2, frozen: boolean): boolean {
    if (version === 1) return this.read(path.join(dir, 'freezer.state')).trim() === (frozen ? 'FROZEN' : 'THAWED');
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

  private waitEmptyHere(procs: string, timeoutMs: number, opts: { v2?: boolean; deadline?: number; rekill?: { count: number } }): Promise<void> {
    const dir = path.dirname(procs);
    const v2 = opts.v2 ?? this.hasEvents(dir);
    let lastKill = now();
    return waitFor(this.addon(), {
      check: () => this.isEmpty(procs, v2),
      ...(v2 ? { eventsPath: path.join(dir, 'cgroup.events') } : {}),
      ...(opts.rekill ? {
        // Something that raced in between the kill and the thaw gets SIGKILLed again every ~10 ms.
        tick: () => {
          if (now() - lastKill < 10) return;
          lastKill = now();
          opts.rekill!.count += this.signal(procs, SIGKILL);
        },
      } : {}),
      deadline: opts.deadline ?? now() + timeoutMs,
      timeoutMs,
      phase: 'become empty',
      path: procs,
    });
  }

  /**
   * Waits until a v1 freezer.state reads FROZEN/THAWED or a v2 cgroup.events has frozen 1/0. With
   * `rewrite` (v1 freeze, as runc does): FROZEN written again each pass while FREEZING, and a
   * thaw + re-freeze every 200 ms, so a group that keeps forking still freezes.
   */
  waitFrozen(dir: string, version: 1 | 2, frozen: boolean, timeoutMs: number, opts: { deadline?: number; rewrite?: boolean } = {}): Promise<void> {
    const state = path.join(dir, 'freezer.state');
    let lastThaw = now();
    return waitFor(this.addon(), {
      check: () => this.isFrozen(dir, version, frozen),
      ...(version === 2 ? { eventsPath: path.join(dir, 'cgroup.events') } : {}),
      ...(opts.rewrite && version === 1 ? {
        tick: () => {
          if (now() - lastThaw > 200) {
            lastThaw = now();
            this.write(state, 'THAWED');
          }
          this.write(state, 'FROZEN');
        },
      } : {}),
      deadline: opts.deadline ?? now() + timeoutMs,
      timeoutMs,
      phase: frozen ? 'freeze' : 'thaw',
      path: dir,
    });
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
    const existed = fs.existsSync(path.dirname(procs));
    try {
      return await this.killBy(method, procs, dir, timeoutMs, deadline, out, elapsed);
    } catch (err) {
      // A missing group is an error; one that existed and was removed meanwhile (by the task's owner) was emptied.
      if (existed && removed(err, procs)) return elapsed();
      throw err;
    }
  }

  private async killBy(
    method: GroupKillMethod, procs: string, dir: string, timeoutMs: number, deadline: number,
    out: { count: number }, elapsed: () => GroupKillResult,
  ): Promise<GroupKillResult> {
    switch (method) {
      case 'cgroup.kill':
        this.write(path.join(dir, 'cgroup.kill'), '1');
        await this.waitEmpty(procs, timeoutMs, { v2: true, deadline });
        return elapsed();
      case 'freeze-v2':
      case 'freezer-v1': {
        const v1 = method === 'freezer-v1';
        const ctl = path.join(dir, v1 ? 'freezer.state' : 'cgroup.freeze');
        const thaw = v1 ? 'THAWED' : '0';
        try {
          this.write(ctl, v1 ? 'FROZEN' : '1');
          await this.waitFrozen(dir, v1 ? 1 : 2, true, timeoutMs, { deadline, rewrite: v1 });
          // Frozen: no member can exit or fork, so the list is the whole group.
          out.count += this.signal(procs, SIGKILL);
        } finally {
          // Always thaw (the SIGKILLs are delivered when the tasks run again), even after an error.
          try { this.write(ctl, thaw); } catch { /* reported by the wait below, or the first error wins */ }
        }
        await this.waitEmpty(procs, timeoutMs, { v2: !v1, deadline, rekill: out });
        return elapsed();
      }
      case 'signal-loop':
        out.count += this.signal(procs, SIGKILL);
        await this.waitEmpty(procs, timeoutMs, { v2: false, deadline, rekill: out });
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
