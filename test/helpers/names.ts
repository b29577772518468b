/**
 * The suite's names and time bounds, shared by every helper.
 *
 * Names: every cgroup parent, state dir and container the suite creates starts with `corral-test-`
 * and carries this run's id, so scripts/check-leftovers.sh looks at the suite's own names only and
 * never at the defaults (`corral`, `corral.slice`, /var/lib/corral) a live corral agent may own.
 *
 * Bounds: CORRAL_TEST_SLOWDOWN (a factor ≥ 1; the emulated v2 guest sets 20) stretches every wait.
 * A bound is a ceiling for a wait on an event or a polled condition, never a sleep: on a fast
 * machine the wait ends as soon as the condition holds.
 */
import { randomBytes } from 'node:crypto';

/** How much slower than an idle host this machine is (CORRAL_TEST_SLOWDOWN, default 1). */
export const SLOWDOWN = Math.max(1, Number(process.env.CORRAL_TEST_SLOWDOWN ?? 1) || 1);

/** A wait's ceiling in ms, stretched by CORRAL_TEST_SLOWDOWN. */
export const bound = (ms: number): number => Math.round(ms * SLOWDOWN);

/** Prefix of every cgroup parent, state dir and container name the suite creates. */
export const TEST_PREFIX = 'corral-test-';

const sanitize = (s: string): string => s.replace(/[^a-zA-Z0-9_-]/g, '_').slice(0, 40);

/** This run's id: CORRAL_TEST_RUN_ID (scripts/test.sh sets one per run) or random for this worker. */
export const RUN_ID = sanitize(process.env.CORRAL_TEST_RUN_ID || randomBytes(3).toString('hex'));

let seq = 0;
/** A name no other test, worker or concurrent run uses: `corral-test-<run>-<tag>-<pid>-<n>`. */
export function uniqueName(tag: string): string {
  return `${TEST_PREFIX}${RUN_ID}-${sanitize(tag)}-${process.pid}-${++seq}`;
}

/** True for a cgroup parent or container name the suite may remove (one of its own). */
export function isTestName(name: string): boolean {
  return name.startsWith(TEST_PREFIX) && !name.includes('..') && !name.includes('/');
}

/** Resolves as `p` does, or rejects naming `what` after bound(ms); the timer never outlives the wait. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const limit = bound(ms);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_res, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${limit} ms waiting for ${what}`)), limit); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
