/**
 * Image pull progress for `corral run --driver docker`: on a terminal, one line per pull, rewritten
 * in place as Docker reports progress; not on a terminal, nothing (logs stay clean).
 */
import type { TaskDriver } from '../drivers/contract.js';

export async function showPullProgress(driver: TaskDriver, taskId: string, out: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  if (!(out as NodeJS.WriteStream).isTTY) return;
  const width = Math.max(20, ((out as NodeJS.WriteStream).columns || 80) - 1);
  let drawn = false;
  try {
    for await (const ev of driver.taskEvents({ signal })) {
      if (ev.taskId !== taskId || ev.type !== 'image-pull') continue;
      out.write(`\r\x1b[K${`pulling ${ev.message}`.slice(0, width)}`);
      drawn = true;
    }
  } catch {
    /* the stream ends with the signal */
  } finally {
    if (drawn) out.write('\n');
  }
}
