/**
 * The event loop and our own fds, as the native tests watch them: a heartbeat (longest gap between
 * 10 ms beats), bounded polls, and the list of this process's open fds for "nothing left open" checks.
 */
import type { ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { bound } from './names.js';

export const sleepMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value; fails after timeoutMs (stretched by CORRAL_TEST_SLOWDOWN). */
export async function until<T>(what: string, fn: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + bound(timeoutMs);
  for (let step = 2; ; step = Math.min(step * 2, 50)) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleepMs(step);
  }
}

/** A 10 ms heartbeat; stop() returns the longest gap between two beats (ms). */
export function heartbeat(): { stop: () => number } {
  let last = performance.now();
  let max = 0;
  const iv = setInterval(() => {
    const now = performance.now();
    max = Math.max(max, now - last);
    last = now;
  }, 10);
  return { stop: () => { clearInterval(iv); return Math.max(max, performance.now() - last); } };
}

/**
 * Our open fds as `n->target`. An fd that cannot be read back was closed while we looked (readdir's
 * own directory fd, or a transient one of Node's): it is not held, so it does not count.
 */
export const fdList = (): string[] =>
  fs.readdirSync('/proc/self/fd').flatMap((f) => { try { return [`${f}->${fs.readlinkSync(`/proc/self/fd/${f}`)}`]; } catch { return []; } });

/** The fds open now that were not open at `before` (fds closed meanwhile by Node itself are fine). */
export const newFds = (before: string[]): string[] => fdList().filter((f) => !before.includes(f));

/** Asserts that no fd of ours is open that was not at `before`. */
export function noNewFds(t: ExecutionContext, before: string[], what: string): void {
  t.deepEqual(newFds(before), [], what);
}

/** Lets libuv run the close callbacks (where a closed handle's fd is released) of what just finished. */
export const settle = (): Promise<void> => new Promise((r) => setImmediate(() => setImmediate(r)));
