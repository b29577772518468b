/**
 * `corral run --tty`: the task gets a pseudo-terminal as its controlling terminal. We copy our stdin
 * to the pty's master and its output to our stdout, put our own terminal in raw mode (so Ctrl-C,
 * Ctrl-Z and the like reach the task's line discipline, as with ssh -t or docker run -t), follow our
 * window size, and restore the terminal on every way out (including process exit).
 */
import * as fs from 'node:fs';
import * as tty from 'node:tty';
import { ptyNative } from '../native.js';

export class PtySession {
  /** The slave end: the task's stdin/stdout/stderr. Closed by us once the task runs. */
  slave: number;
  private readonly master: tty.ReadStream;
  /** Writes to the master go through the threadpool in order: libuv would write a pty master blocking, on the loop. */
  private writing: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly masterFd: number;
  private readonly stdin: NodeJS.ReadStream;
  private readonly out: NodeJS.WritableStream;
  private rawSet = false;
  private bytesOut = 0;
  private readonly ended: Promise<void>;
  private readonly onResize = () => this.resize();
  private readonly onInput = (d: Buffer) => this.write(d);
  private readonly onInputEnd = () => this.write(Buffer.from([4])); // ^D: EOF for a canonical-mode reader
  private readonly restoreOnExit = () => this.restore();

  constructor(out: NodeJS.WritableStream, stdin: NodeJS.ReadStream = process.stdin) {
    this.stdin = stdin;
    this.out = out;
    const { rows, cols } = size();
    const p = ptyNative().openPty(rows, cols);
    this.slave = p.slave;
    this.masterFd = p.master;
    this.master = new tty.ReadStream(p.master);
    this.master.on('data', (d: Buffer) => { this.bytesOut += d.length; out.write(d); });
    this.ended = new Promise((resolve) => {
      // When the last holder of the slave closes, reads on the master fail with EIO: that is the end.
      this.master.on('error', () => resolve());
      this.master.on('end', () => resolve());
      this.master.on('close', () => resolve());
    });
  }

  /** Starts copying our input and following the window size; raw mode when our stdin is a terminal. */
  start(): void {
    this.closeSlave();
    if (this.stdin.isTTY) {
      (this.stdin as tty.ReadStream).setRawMode(true);
      this.rawSet = true;
      process.on('exit', this.restoreOnExit);
    }
    process.on('SIGWINCH', this.onResize);
    if (!stdinClosed()) {
      this.stdin.on('data', this.onInput);
      this.stdin.on('end', this.onInputEnd);
      this.stdin.resume();
    }
  }

  private write(d: Buffer): void {
    this.writing = this.writing.then(() => new Promise<void>((resolve) => {
      if (this.closed) return resolve();
      fs.write(this.masterFd, d, 0, d.length, null, () => resolve()); // a failed write: the task's side is gone
    }));
  }

  resize(): void {
    const { rows, cols } = size();
    try {
      ptyNative().resizePty(this.masterFd, rows, cols);
    } catch {
      /* the pty is gone */
    }
  }

  closeSlave(): void {
    if (this.slave >= 0) {
      try {
        fs.closeSync(this.slave);
      } catch {
        /* closed */
      }
      this.slave = -1;
    }
  }

  restore(): void {
    if (this.rawSet) {
      try {
        (this.stdin as tty.ReadStream).setRawMode(false);
      } catch {
        /* no terminal any more */
      }
      this.rawSet = false;
    }
  }

  /**
   * After the bound: the loop polls I/O once more per turn, so while a turn still brings output,
   * take another (at most 100). The master is a blocking fd (libuv keeps a pty master it cannot
   * reopen in blocking mode), so it is never read here directly.
   */
  private async drainPolled(ended: () => boolean): Promise<void> {
    for (let i = 0; i < 100 && !ended(); i++) {
      const before = this.bytesOut;
      await new Promise<void>((r) => setImmediate(r));
      if (this.bytesOut === before) return;
    }
  }

  /** Waits (bounded) until the task's side is closed and its output drained, then releases everything. */
  async close(drainMs: number): Promise<void> {
    this.closeSlave();
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    await Promise.race([this.ended.then(() => { ended = true; }), new Promise<void>((r) => { timer = setTimeout(r, drainMs); })]);
    clearTimeout(timer);
    // The bound ran out first. After a loop stall longer than drainMs (a loaded host), the timer runs
    // before the poll phase that would read the task's last output: give that phase its turn.
    if (!ended) await this.drainPolled(() => ended);
    process.off('SIGWINCH', this.onResize);
    this.stdin.off('data', this.onInput);
    this.stdin.off('end', this.onInputEnd);
    this.stdin.pause();
    this.restore();
    process.off('exit', this.restoreOnExit);
    this.closed = true;
    this.master.destroy();
    await new Promise<void>((r) => { this.out.write('', () => r()); });
  }
}

function size(): { rows: number; cols: number } {
  const s = process.stdout.isTTY ? process.stdout : process.stderr.isTTY ? process.stderr : undefined;
  return { rows: s?.rows || 24, cols: s?.columns || 80 };
}

function stdinClosed(): boolean {
  try {
    fs.fstatSync(0);
    return false;
  } catch {
    return true;
  }
}
