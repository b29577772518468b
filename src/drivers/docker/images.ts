/**
 * Images for the docker driver (Nomad's docker coordinator): a local image is used as it is, a missing
 * one (or forcePull) is pulled with progress and a timeout, concurrent pulls of one reference are
 * shared. Reference counts per image reference (the name tasks asked for): when no task uses a
 * reference any more and image GC is on, it is removed after `delayMs` (an untag while other tags
 * of the same image remain; the image itself with its last tag; Docker refuses while a container
 * still uses it), unless a task takes it again first.
 * The counts are sets of task IDs, so that recovery can add a task again without inflating them
 * (and an agent restart rebuilds them from the TaskStore: Nomad issue 26452).
 */
import { DockerError } from '../../errors.js';
import { anySignal } from '../../util/abort.js';
import type { Logger } from '../../util/logger.js';
import { type DockerApi, bounded, destroyStream, statusOf } from './client.js';

export interface PullProgress {
  status: string;
  id?: string;
  progress?: string;
}

export interface ImageCoordinatorOptions {
  docker: DockerApi;
  callTimeoutMs: number;
  pullTimeoutMs: number;
  gc: boolean;
  delayMs: number;
  logger: Logger;
  /** The driver's lifetime: aborting it ends pulls and removal timers. */
  signal: AbortSignal;
}

interface ImageUse {
  tasks: Set<string>;
  timer?: NodeJS.Timeout;
}

export class ImageCoordinator {
  private readonly uses = new Map<string, ImageUse>();
  private readonly pulls = new Map<string, Promise<string>>();
  private readonly removing = new Set<Promise<void>>();

  constructor(private readonly o: ImageCoordinatorOptions) {}

  /** Image ID for `ref`: the local image, or a pulled one. */
  async ensure(ref: string, opts: { forcePull?: boolean; onProgress?: (p: PullProgress) => void; signal?: AbortSignal } = {}): Promise<string> {
    if (!opts.forcePull) {
      const local = await this.localId(ref, opts.signal);
      if (local) return local;
    }
    let p = this.pulls.get(ref);
    if (!p) {
      p = this.pull(ref, opts.onProgress).finally(() => this.pulls.delete(ref));
      this.pulls.set(ref, p);
    }
    return p;
  }

  /** The local image's ID, or undefined when there is none. */
  async localId(ref: string, signal?: AbortSignal): Promise<string | undefined> {
    try {
      const info = await bounded('inspect image', this.o.callTimeoutMs, anySignal(this.o.signal, signal),
        (s) => this.o.docker.getImage(ref).inspect({ abortSignal: s }));
      return info.Id;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  private async pull(ref: string, onProgress?: (p: PullProgress) => void): Promise<string> {
    this.o.logger.info('pulling image', { image: ref });
    let last = 0;
    await bounded('pull image', this.o.pullTimeoutMs, this.o.signal, (signal) => new Promise<void>((resolve, reject) => {
      this.o.docker.pull(ref, { abortSignal: signal }, (err: unknown, stream?: NodeJS.ReadableStream) => {
        if (err || !stream) return reject(err ?? new DockerError('pull image', `${ref}: the engine returned no pull stream`));
        const onAbort = () => destroyStream(stream);
        signal.addEventListener('abort', onAbort, { once: true });
        this.o.docker.modem.followProgress(stream, (err2, output) => {
          signal.removeEventListener('abort', onAbort);
          if (err2) return reject(err2);
          const bad = output.find((o) => o.error !== undefined || o.errorDetail !== undefined);
          if (bad) return reject(new DockerError('pull image', `${ref}: ${String(bad.error ?? JSON.stringify(bad.errorDetail))}`));
          resolve();
        }, (ev) => {
          if (!onProgress || typeof ev.status !== 'string') return;
          const now = Date.now();
          // Status changes always; byte-progress lines at most every 500 ms.
          if (typeof ev.progress === 'string' && now - last < 500) return;
          last = now;
          const p: PullProgress = { status: ev.status };
          if (typeof ev.id === 'string') p.id = ev.id;
          if (typeof ev.progress === 'string') p.progress = ev.progress;
          try { onProgress(p); } catch { /* a listener's error is not the pull's */ }
        });
      });
    }));
    const id = await this.localId(ref);
    if (!id) throw new DockerError('pull image', `${ref} is not present after the pull finished`);
    return id;
  }

  /** Task `taskId` uses image reference `ref`. Idempotent per task; cancels a pending removal. */
  addRef(ref: string, taskId: string): void {
    let u = this.uses.get(ref);
    if (!u) {
      u = { tasks: new Set() };
      this.uses.set(ref, u);
    }
    u.tasks.add(taskId);
    if (u.timer) {
      clearTimeout(u.timer);
      delete u.timer;
    }
  }

  /** Task `taskId` no longer uses `ref`; with GC on, an unused reference is removed after the delay. */
  release(ref: string, taskId: string): void {
    const u = this.uses.get(ref);
    if (!u || !u.tasks.delete(taskId)) return;
    if (u.tasks.size > 0) return;
    if (!this.o.gc || this.o.signal.aborted) {
      this.uses.delete(ref);
      return;
    }
    u.timer = setTimeout(() => {
      delete u.timer;
      const p = this.remove(ref, u).finally(() => this.removing.delete(p));
      this.removing.add(p);
    }, this.o.delayMs);
    u.timer.unref();
  }

  private async remove(ref: string, u: ImageUse): Promise<void> {
    if (u.tasks.size > 0 || this.uses.get(ref) !== u) return;
    this.uses.delete(ref);
    if (this.o.signal.aborted) return;
    try {
      await bounded('remove image', this.o.callTimeoutMs, this.o.signal, (s) => this.o.docker.getImage(ref).remove({ abortSignal: s }));
      this.o.logger.info('removed unused image', { image: ref });
    } catch (err) {
      const st = statusOf(err);
      if (st === 404) return;
      // 409: still used by a container that is not ours (or stopped and kept), or referenced elsewhere.
      this.o.logger[st === 409 ? 'debug' : 'warn']('image not removed', { image: ref, error: (err as Error).message });
    }
  }

  /** Tasks using each image reference (for tests and inspection). */
  usage(): Map<string, { tasks: string[]; removalScheduled: boolean }> {
    const m = new Map<string, { tasks: string[]; removalScheduled: boolean }>();
    for (const [ref, u] of this.uses) m.set(ref, { tasks: [...u.tasks], removalScheduled: u.timer !== undefined });
    return m;
  }

  /** Clears removal timers (images stay) and waits for removals in flight. */
  async close(): Promise<void> {
    for (const u of this.uses.values()) {
      if (u.timer) clearTimeout(u.timer);
      delete u.timer;
    }
    await Promise.allSettled([...this.removing, ...this.pulls.values()]);
  }
}
