/**
 * The signals `corral run` handles. SIGINT and SIGTERM stop the task (the first gracefully, the next
 * at once). SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT (and SIGWINCH with a pty) go to the task
 * unchanged; one that arrives before the task runs is delivered as soon as it does. Having a handler
 * for SIGUSR1 is also what keeps Node from opening its inspector on that signal (see guardDebugSignal).
 */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;
export const FORWARDED_SIGNALS = ['SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGCONT'] as const;

export interface RelayHooks {
  /** A stop signal; `count` is how many arrived so far (1: graceful, more: kill now); `replay` when held until the task ran. */
  onStop(sig: NodeJS.Signals, count: number, replay: boolean): void;
  /** Passes `sig` to the task; false when it cannot yet (kept until taskStarted()). */
  forward(sig: NodeJS.Signals): boolean;
}

export class SignalRelay {
  stopCount = 0;
  private readonly pending: NodeJS.Signals[] = [];
  private readonly installed: [NodeJS.Signals, () => void][] = [];

  constructor(private readonly hooks: RelayHooks, opts: { tty: boolean; install: boolean }) {
    if (!opts.install) return;
    for (const sig of STOP_SIGNALS) this.on(sig, () => hooks.onStop(sig, ++this.stopCount, false));
    const fwd: NodeJS.Signals[] = [...FORWARDED_SIGNALS, ...(opts.tty ? ['SIGWINCH' as const] : [])];
    for (const sig of fwd) this.on(sig, () => { if (!hooks.forward(sig)) this.pending.push(sig); });
  }

  private on(sig: NodeJS.Signals, f: () => void): void {
    process.on(sig, f);
    this.installed.push([sig, f]);
  }

  /** The task runs: a stop asked for before now is acted on, held signals are delivered in order. */
  taskStarted(): void {
    if (this.stopCount > 0) this.hooks.onStop('SIGTERM', this.stopCount, true);
    for (const sig of this.pending.splice(0)) this.hooks.forward(sig);
  }

  close(): void {
    for (const [sig, f] of this.installed.splice(0)) process.off(sig, f);
  }
}

/**
 * Node opens its inspector (a debugger, on 127.0.0.1:9229) when it receives SIGUSR1, unless a
 * listener for SIGUSR1 is installed: then libuv's handler replaces Node's. corral runs as root, so
 * main() installs one for the whole life of the process, as early as it can (bin/corral.js does on
 * its first line; bin/corral covers Node's own start-up before that, see the comment there).
 */
export function guardDebugSignal(): void {
  if (process.listenerCount('SIGUSR1') === 0) process.on('SIGUSR1', () => {});
}
