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

/** A signal that aborts when any of the given ones does (undefined ones ignored). */
export function anySignal(...signals: Array<AbortSignal | undefined>): AbortSignal | undefined {
  const s = signals.filter((x): x is AbortSignal => x !== undefined);
  if (s.length === 0) return undefined;
  if (s.length === 1) return s[0];
  return AbortSignal.any(s);
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
