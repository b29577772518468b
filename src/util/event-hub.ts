/**
 * Fan-out of events to any number of consumers: every consumer gets every event published
 * after it subscribed. A consumer ends when its AbortSignal fires or the hub closes, and then
 * holds no listener, timer or buffer.
 */
export class EventHub<T> {
  private readonly subscribers = new Set<Subscriber<T>>();
  private closed = false;

  publish(event: T): void {
    for (const s of this.subscribers) s.push(event);
  }

  get size(): number {
    return this.subscribers.size;
  }

  /** Ends every consumer; later subscriptions end at once. */
  close(): void {
    this.closed = true;
    for (const s of [...this.subscribers]) s.end();
  }

  subscribe(opts: { signal?: AbortSignal } = {}): AsyncIterableIterator<T> {
    const sub = new Subscriber<T>(() => this.subscribers.delete(sub));
    if (this.closed || opts.signal?.aborted) {
      sub.end();
    } else {
      this.subscribers.add(sub);
      if (opts.signal) sub.bindSignal(opts.signal);
    }
    return sub;
  }
}

class Subscriber<T> implements AsyncIterableIterator<T> {
  private queue: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | undefined;
  private done = false;
  private unbind: (() => void) | undefined;

  constructor(private readonly detach: () => void) {}

  bindSignal(signal: AbortSignal): void {
    const onAbort = () => this.end();
    signal.addEventListener('abort', onAbort, { once: true });
    this.unbind = () => signal.removeEventListener('abort', onAbort);
  }

  push(v: T): void {
    if (this.done) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: v, done: false });
    } else {
      this.queue.push(v);
    }
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    this.detach();
    this.unbind?.();
    this.unbind = undefined;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<T>> {
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift() as T, done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => { this.waiting = resolve; });
  }

  return(): Promise<IteratorResult<T>> {
    this.queue = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
