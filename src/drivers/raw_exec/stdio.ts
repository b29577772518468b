/**
 * The task's stdout/stderr: appended to files, or written into FIFOs. A FIFO is opened read-write
 * (O_RDWR never waits for a peer), so opening it never blocks the event loop.
 */
import * as fs from 'node:fs';

// libuv opens every fd O_CLOEXEC; the native spawn dup2s the ones the child gets.
const { O_WRONLY, O_RDWR, O_APPEND, O_CREAT } = fs.constants;

/** Opens an output path for the child: append to a file (created 0644), or read-write for a FIFO or device. */
export function openOutput(p: string): number {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(p);
  } catch {
    st = undefined;
  }
  if (st && st.isFIFO()) {
    // O_RDWR ('r+') succeeds at once on Linux even without a reader (O_WRONLY would wait for one),
    // and stays a blocking description so the task's writes behave as on any pipe.
    return fs.openSync(p, O_RDWR);
  }
  if (st && st.isCharacterDevice()) return fs.openSync(p, O_WRONLY | O_APPEND);
  return fs.openSync(p, O_WRONLY | O_APPEND | O_CREAT, 0o644);
}

/** Holds the fds opened for one spawn and closes them all, once. */
export class FdSet {
  private fds: number[] = [];
  add(fd: number): number {
    this.fds.push(fd);
    return fd;
  }
  closeAll(): void {
    for (const fd of this.fds.splice(0)) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already closed */
      }
    }
  }
}
