/**
 * Creating and starting a task's container: a stopped leftover of the same task is replaced, a
 * missing image is pulled once, transient daemon errors on start are retried (as Nomad does), and
 * the task directory is mounted at /alloc, /local and /secrets.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DockerError } from '../../errors.js';
import { sleep } from '../../util/abort.js';
import { type ContainerCreate, type ContainerInspect, statusOf } from './client.js';
import type { DockerContext } from './context.js';
import { LABEL_TASK_ID } from './reconcile_dangling.js';

const TRANSIENT_START_ERROR = /ttrpc|\bEOF\b|connection reset|broken pipe|transport is closing|temporarily unavailable|context deadline exceeded/i;
const PERMANENT_START_ERROR = /executable file not found|no such file or directory|permission denied|not permitted|invalid argument/i;

/** Creates the container; a stopped leftover of the same task with the same name is replaced. */
export async function createContainer(ctx: DockerContext, taskId: string, name: string, create: ContainerCreate, onMissingImage: () => Promise<void>): Promise<string> {
  let pulled = false;
  for (let attempt = 0; ; attempt++) {
    try {
      const c = await ctx.call('create container', (s) => ctx.docker.createContainer({ ...create, name, abortSignal: s }));
      return c.id;
    } catch (err) {
      if (statusOf(err) === 404 && /no such image/i.test((err as Error).message) && !pulled) {
        pulled = true;
        await onMissingImage();
        continue;
      }
      if (statusOf(err) !== 409 || attempt > 1) throw err;
      let old: ContainerInspect;
      try {
        old = await ctx.call('inspect container', (s) => ctx.docker.getContainer(name).inspect({ abortSignal: s }));
      } catch {
        throw err;
      }
      if (old.Config.Labels?.[LABEL_TASK_ID] !== taskId || old.State.Running) {
        throw new DockerError('create container', `a container named ${name} already exists (${old.Id.slice(0, 12)}, ${old.State.Status})`, 409);
      }
      ctx.logger.info('replacing a stopped container left by an earlier start', { name, containerId: old.Id });
      await ctx.call('remove container', (s) => ctx.docker.getContainer(old.Id).remove({ force: true, v: true, abortSignal: s }));
    }
  }
}

/**
 * Starts a created container. As in Nomad, a daemon-side failure that looks transient (the shim or
 * containerd connection dropping under load: "ttrpc: closed", "EOF", ...) is retried a few times.
 */
export async function startContainer(ctx: DockerContext, containerId: string): Promise<void> {
  const container = ctx.docker.getContainer(containerId);
  for (let attempt = 1; ; attempt++) {
    try {
      await ctx.call('start container', (s) => container.start({ abortSignal: s }));
      return;
    } catch (err) {
      const st = statusOf(err);
      if (st === 304) return; // already started
      const transient = st === 500 && TRANSIENT_START_ERROR.test((err as Error).message) && !PERMANENT_START_ERROR.test((err as Error).message);
      if (!transient || attempt >= 4 || ctx.life.aborted) throw err;
      ctx.logger.info('transient error starting a container; retrying', { containerId, attempt, error: (err as Error).message });
      if (!(await sleep(100 * 2 ** attempt, ctx.life))) throw err;
    }
  }
}

/**
 * Nomad's task directory layout inside the container: <taskDir>/alloc → /alloc, <taskDir>/local →
 * /local, <taskDir>/secrets → /secrets (created when missing), unless a volume already targets them.
 */
export function addTaskDirMounts(taskDir: string, create: { HostConfig?: { Binds?: string[] } }): void {
  const hc = (create.HostConfig ??= {});
  const binds = hc.Binds ?? [];
  const taken = new Set(binds.map((b) => path.posix.normalize(b.split(':')[1] ?? '').replace(/(.)\/+$/, '$1')));
  for (const sub of ['alloc', 'local', 'secrets']) {
    if (taken.has(`/${sub}`)) continue;
    const host = path.join(taskDir, sub);
    fs.mkdirSync(host, { recursive: true, mode: sub === 'secrets' ? 0o700 : 0o755 });
    binds.push(`${host}:/${sub}`);
  }
  hc.Binds = binds;
}
