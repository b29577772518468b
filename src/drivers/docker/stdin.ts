/**
 * A docker task's stdin (driver.stdin, a readable stream of the caller's): the container is created
 * with OpenStdin and StdinOnce, we attach to its stdin before it starts (so nothing written early is
 * lost), copy the stream into the attach connection, and half-close the connection at the stream's
 * end: with StdinOnce, dockerd then closes the container's stdin, so the task reads EOF (as with
 * `docker run -i`). The stream is never persisted: a recovered task has no stdin.
 */
import { InvalidConfigError } from '../../errors.js';
import { destroyStream } from './client.js';
import type { DockerContext } from './context.js';

/** A readable stream, as far as pipe() needs one. */
export function isReadableStream(v: unknown): v is NodeJS.ReadableStream {
  const s = v as { pipe?: unknown; on?: unknown; unpipe?: unknown } | null;
  return typeof s === 'object' && s !== null && typeof s.pipe === 'function' && typeof s.on === 'function' && typeof s.unpipe === 'function';
}

export function optStdin(v: unknown): NodeJS.ReadableStream | undefined {
  if (v === undefined) return undefined;
  if (!isReadableStream(v)) throw new InvalidConfigError('driver.stdin', v, 'must be a readable stream (e.g. process.stdin)');
  return v;
}

/** The task config as it is persisted: without the stdin stream (it cannot be stored, nor recovered). */
export function withoutStdin<C extends { driver: object }>(cfg: C): C {
  if (!('stdin' in cfg.driver)) return cfg;
  const { stdin: _dropped, ...driver } = cfg.driver as Record<string, unknown>;
  return { ...cfg, driver };
}

export class StdinAttachment {
  private source: NodeJS.ReadableStream | undefined;
  private closed = false;
  private readonly onAbort = () => this.close();

  private constructor(private readonly sock: NodeJS.ReadWriteStream, private readonly life: AbortSignal) {
    sock.on('error', () => { /* the container is gone: pipe() unpipes the source on close */ });
    sock.on('close', () => this.close());
    sock.resume(); // nothing comes back (stdout/stderr are not attached) but the end must be read
    life.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Attaches to a created (not yet started) container's stdin. Ends with the driver, the container, or close(). */
  static async open(ctx: DockerContext, containerId: string): Promise<StdinAttachment> {
    const sock = await ctx.call('attach container stdin', (s) => ctx.docker.getContainer(containerId).attach({
      stream: true, stdin: true, stdout: false, stderr: false, hijack: true, abortSignal: s,
    }));
    return new StdinAttachment(sock, ctx.life);
  }

  /** Copies `src` into the container's stdin; its end becomes the task's EOF. */
  pipeFrom(src: NodeJS.ReadableStream): void {
    if (this.closed) return;
    this.source = src;
    src.pipe(this.sock, { end: true });
  }

  /** Stops copying (the source is left paused, not destroyed: it is the caller's) and drops the connection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.life.removeEventListener('abort', this.onAbort);
    this.source?.unpipe(this.sock);
    this.source = undefined;
    destroyStream(this.sock);
  }
}
