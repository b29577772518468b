/** Timers and AbortSignals: one sleep and one signal combiner for every layer. Neither leaves a timer or listener behind. */

/** Sleeps `ms`, or less if `signal` aborts: resolves true when the time passed, false when aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const kSources = Symbol('corral.anySignal.sources');

/**
 * A signal that aborts when any of the given ones does (undefined ones ignored).
 *
 * The combined signal holds its sources strongly. Node's AbortSignal.any holds them only weakly, and
 * Node 20 lets an AbortSignal.timeout() be collected before it fires once nothing else refers to it:
 * `taskStats(id, { signal: AbortSignal.timeout(700) })` then streamed on for good after the first GC
 * (seen under load in examples/raw-exec.ts). Sources do not hold the combined signal, so a dropped one
 * is still collected.
 */
export function anySignal(...signals: Array<AbortSignal | undefined>): AbortSignal | undefined {
  const s = signals.filter((x): x is AbortSignal => x !== undefined);
  if (s.length === 0) return undefined;
  if (s.length === 1) return s[0];
  const any = AbortSignal.any(s);
  Object.defineProperty(any, kSources, { value: s });
  return any;
}

/**
 * Sleeps `ms` unless one of `signals` aborts or `until` settles first; resolves true when the full
 * time passed. Holds nothing afterwards.
 */
export async function sleepUnless(ms: number, signals: Array<AbortSignal | undefined>, until?: Promise<unknown>): Promise<boolean> {
  const ac = new AbortController();
  const abort = () => ac.abort();
  const live = signals.filter((s): s is AbortSignal => s !== undefined);
  for (const s of live) {
    if (s.aborted) return false;
    s.addEventListener('abort', abort, { once: true });
  }
  void until?.then(abort, abort);
  try {
    return await sleep(ms, ac.signal);
  } finally {
    ac.abort();
    for (const s of live) s.removeEventListener('abort', abort);
  }
}
