/**
 * Resource usage of a docker task: Docker's stats stream (one JSON document per second), mapped to
 * the contract's TaskResourceUsage and thinned to the caller's interval. Ends when the task exits,
 * the caller aborts or the driver shuts down.
 */
import type { TaskResourceUsage } from '../contract.js';
import { destroyStream } from './client.js';
import type { DockerContext } from './context.js';
import type { DockerTask } from './task.js';

/** The fields of Docker's stats JSON corral reads. */
export interface DockerStats {
  read?: string;
  preread?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number; usage_in_usermode?: number; usage_in_kernelmode?: number }; system_cpu_usage?: number; online_cpus?: number; throttling_data?: { throttled_time?: number } };
  precpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: { usage?: number; max_usage?: number; stats?: Record<string, number> };
}

export async function* containerStats(ctx: DockerContext, task: DockerTask, intervalMs: number, signal: AbortSignal): AsyncIterable<TaskResourceUsage> {
  if (signal.aborted || task.exitResult) return;
  const ac = new AbortController();
  const stop = () => ac.abort();
  const watchEnded = task.watchCtl.signal;
  signal.addEventListener('abort', stop, { once: true });
  watchEnded.addEventListener('abort', stop, { once: true });
  void task.exited.then(stop);
  let stream: NodeJS.ReadableStream | undefined;
  try {
    try {
      stream = await ctx.call('stats', () => ctx.docker.getContainer(task.containerId).stats({ stream: true, abortSignal: ac.signal }), { signal: ac.signal });
    } catch (err) {
      if (ac.signal.aborted) return;
      throw err;
    }
    if (ac.signal.aborted) return;
    const s = stream;
    ac.signal.addEventListener('abort', () => destroyStream(s), { once: true });
    let buf = '';
    let lastEmit = 0;
    let prev: { t: number; total: number } | undefined;
    try {
      for await (const chunk of s as AsyncIterable<Buffer | string>) {
        buf += chunk.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          let raw: DockerStats;
          try { raw = JSON.parse(line) as DockerStats; } catch { continue; }
          const u = mapStats(task.id, raw, prev);
          if (!u) continue;
          prev = { t: u.timestamp, total: u.cpu.totalNs };
          if (lastEmit !== 0 && u.timestamp - lastEmit < intervalMs - 50) continue;
          lastEmit = u.timestamp;
          yield u;
          if (ac.signal.aborted) return;
        }
      }
    } catch (err) {
      if (ac.signal.aborted) return;
      throw err;
    }
  } finally {
    ac.abort();
    signal.removeEventListener('abort', stop);
    watchEnded.removeEventListener('abort', stop);
    if (stream) destroyStream(stream);
  }
}

/** Docker's stats JSON → TaskResourceUsage; undefined for an empty sample (container not running). */
export function mapStats(taskId: string, s: DockerStats, prev: { t: number; total: number } | undefined): TaskResourceUsage | undefined {
  const t = Date.parse(s.read ?? '');
  if (!Number.isFinite(t) || (s.read ?? '').startsWith('0001-')) return undefined;
  const cu = s.cpu_stats?.cpu_usage ?? {};
  const total = cu.total_usage ?? 0;
  let percent = 0;
  if (prev && t > prev.t) {
    percent = ((total - prev.total) / ((t - prev.t) * 1e6)) * 100;
  } else {
    const pt = Date.parse(s.preread ?? '');
    const ptotal = s.precpu_stats?.cpu_usage?.total_usage;
    if (Number.isFinite(pt) && !(s.preread ?? '').startsWith('0001-') && t > pt && ptotal !== undefined) {
      percent = ((total - ptotal) / ((t - pt) * 1e6)) * 100;
    }
  }
  const ms = s.memory_stats ?? {};
  const st = ms.stats ?? {};
  const v2 = st.anon !== undefined && st.rss === undefined;
  const usage: TaskResourceUsage = {
    taskId,
    timestamp: t,
    cpu: {
      userNs: cu.usage_in_usermode ?? 0,
      systemNs: cu.usage_in_kernelmode ?? 0,
      totalNs: total,
      percent: Math.max(0, Math.round(percent * 100) / 100),
      throttledNs: s.cpu_stats?.throttling_data?.throttled_time ?? 0,
    },
    memory: {
      usageBytes: ms.usage ?? 0,
      rssBytes: st.rss ?? st.anon ?? 0,
      cacheBytes: st.cache ?? st.file ?? 0,
      maxUsageBytes: ms.max_usage ?? 0,
    },
    source: 'docker',
  };
  if (v2 || ms.max_usage === undefined) usage.unavailable = { 'memory.maxUsageBytes': 'Docker does not report max usage on cgroups v2' };
  return usage;
}
