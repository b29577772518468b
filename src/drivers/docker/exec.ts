/**
 * execTask for docker: a command run in the container through the Engine's exec API, stdout and
 * stderr demuxed and captured (up to MAX_EXEC_OUTPUT each), bounded by a timeout. Docker has no
 * "kill exec": on timeout or shutdown its process tree is killed on the host (dockerd runs here).
 */
import { PassThrough } from 'node:stream';
import { AbortError, ExecTimeoutError } from '../../errors.js';
import { anySignal, sleep } from '../../util/abort.js';
import type { ExecTaskResult } from '../contract.js';
import { killTree } from '../../util/proc.js';
import { MAX_EXEC_OUTPUT } from '../core/task-config.js';
import { type DockerExec, type ExecInspect, bounded, destroyStream } from './client.js';
import type { DockerContext } from './context.js';
import type { DockerTask } from './task.js';

function collector(): { sink: PassThrough; text: () => string } {
  const chunks: Buffer[] = [];
  let size = 0;
  const sink = new PassThrough();
  sink.on('data', (c: Buffer) => {
    if (size < MAX_EXEC_OUTPUT) {
      chunks.push(c);
      size += c.length;
    }
  });
  return { sink, text: () => Buffer.concat(chunks).subarray(0, MAX_EXEC_OUTPUT).toString('utf8') };
}

/** Runs `cmd` (validated) in the task's container; `signal` is the driver's life. */
export async function execInContainer(ctx: DockerContext, task: DockerTask, cmd: string[], timeoutMs: number, signal: AbortSignal): Promise<ExecTaskResult> {
  const container = ctx.docker.getContainer(task.containerId);
  const exec = await ctx.call('create exec', (s) => container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, abortSignal: s }));
  const ac = new AbortController();
  const stream = await ctx.call('start exec', (s) => exec.start({ hijack: true, stdin: false, abortSignal: s }), { signal: anySignal(signal, ac.signal)! });
  const out = collector();
  const err = collector();
  ctx.docker.modem.demuxStream(stream, out.sink, err.sink);
  const ended = new Promise<void>((resolve) => {
    stream.on('end', () => resolve());
    stream.on('close', () => resolve());
    stream.on('error', () => resolve());
  });
  const onShutdown = () => ac.abort();
  signal.addEventListener('abort', onShutdown, { once: true });
  const finished = await Promise.race([ended.then(() => true), sleep(timeoutMs, ac.signal).then(() => false)]);
  signal.removeEventListener('abort', onShutdown);
  ac.abort(); // clears the timer of the race
  if (!finished || signal.aborted) {
    destroyStream(stream);
    await killExec(ctx, exec);
    if (signal.aborted) throw new AbortError('execTask (the driver was shut down)');
    throw new ExecTimeoutError(cmd, timeoutMs);
  }
  let info: ExecInspect | undefined;
  for (let i = 0; i < 20; i++) {
    info = await ctx.call('inspect exec', (s) => exec.inspect({ abortSignal: s }));
    if (!info.Running) break;
    await sleep(50);
  }
  return { stdout: out.text(), stderr: err.text(), exitResult: { exitCode: info?.ExitCode ?? null, signal: null, oomKilled: false } };
}

/** Kills the exec's process tree on the host, best effort. Under load the exec may not have begun: look until it runs or has ended. */
async function killExec(ctx: Pick<DockerContext, 'callTimeoutMs'>, exec: DockerExec): Promise<void> {
  for (let i = 0; i < 30; i++) {
    let info: ExecInspect;
    try {
      // Not on the driver's life: a shutdown must still kill what the exec started.
      info = await bounded('inspect exec', ctx.callTimeoutMs, undefined, (s) => exec.inspect({ abortSignal: s }));
    } catch {
      return; // gone already, or a daemon we cannot reach
    }
    if (info.Running && info.Pid > 0) {
      await killTree(info.Pid, 5000).catch(() => {});
      return;
    }
    if (info.ExitCode !== null && info.ExitCode !== undefined) return;
    await sleep(100);
  }
}
