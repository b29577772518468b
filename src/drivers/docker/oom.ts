/**
 * The kernel's own record of an OOM kill in a container, for when Docker's State.OOMKilled misses it.
 *
 * Docker sets OOMKilled from containerd's TaskOOM event. On cgroup v1 the shim learns of an OOM
 * through an eventfd on the container's memory.oom_control, and when its watcher wakes only after
 * the cgroup was removed (runc delete, right after the exit) it takes the wake-up for the removal
 * notification and publishes nothing (containerd pkg/oom/v1: `cg.State() == cgroups.Deleted`). On a
 * loaded host a container killed by its memory limit then ends with OOMKilled false for good (1 in
 * 40 here with three CPU hogs beside four concurrent OOM containers), and the cgroup whose
 * `oom_kill` counter would tell is gone by the time the exit is known.
 *
 * What survives the cgroup is the kernel log: `Memory cgroup out of memory: Killed process <pid>
 * (<comm>) ...` (printed for every kill, before the victim can exit) and, rate-limited, the summary
 * `oom-kill:...,task_memcg=<cgroup path ending in the container ID>,...`. /dev/kmsg hands out one
 * record per read; a non-blocking descriptor makes each read a copy from the ring buffer, done in
 * chunks with a loop turn between them. This is how cAdvisor/kubelet report OOM kills, too.
 */
import * as fs from 'node:fs';

const KMSG = '/dev/kmsg';
/** Records read per loop turn (each read is one non-blocking copy of a record). */
const CHUNK = 256;
/** Clock skew allowed between the kernel's boot clock and the container's StartedAt. */
const SKEW_MS = 2000;

export interface OomQuery {
  /** The full container ID (the summary line's task_memcg ends in it). */
  containerId: string;
  /** Host pid of the container's main process while it ran (0: unknown). */
  pid: number;
  /** Wall-clock start of the container (ms since the epoch): older records are ignored. */
  startedAtMs: number;
}

/** Milliseconds since the epoch at which the kernel's record timestamps are 0. */
function bootWallMs(): number {
  const up = Number.parseFloat(fs.readFileSync('/proc/uptime', 'utf8'));
  return Date.now() - up * 1000;
}

/**
 * One /dev/kmsg record ("prio,seq,usec,flags;message\n KEY=value...") → [µs since boot, message], or
 * undefined for a malformed one.
 */
export function parseKmsgRecord(rec: string): [number, string] | undefined {
  const semi = rec.indexOf(';');
  if (semi < 0) return undefined;
  const usec = Number(rec.slice(0, semi).split(',')[2]);
  if (!Number.isFinite(usec)) return undefined;
  const nl = rec.indexOf('\n', semi);
  return [usec, rec.slice(semi + 1, nl < 0 ? undefined : nl)];
}

/** True when `message` says the OOM killer killed the query's process or a process of its container. */
export function isOomKillOf(message: string, q: Pick<OomQuery, 'containerId' | 'pid'>): boolean {
  if (q.pid > 0) {
    const m = /\bKilled process (\d+) \(/.exec(message);
    if (m && Number(m[1]) === q.pid) return true;
  }
  const memcg = /\btask_memcg=([^,\s]*)/.exec(message);
  return memcg !== null && memcg[1]!.includes(q.containerId);
}

/**
 * Whether the kernel log records an OOM kill of the container's main process (or of any process
 * of its memory cgroup) since it started. undefined when the log cannot be read (no /dev/kmsg, no
 * CAP_SYSLOG): the caller then has no evidence either way.
 */
export async function kernelLoggedOomKill(q: OomQuery, signal?: AbortSignal): Promise<boolean | undefined> {
  let fd: number;
  let since: number;
  try {
    since = (q.startedAtMs - bootWallMs() - SKEW_MS) * 1000;
    fd = fs.openSync(KMSG, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const buf = Buffer.alloc(8192);
  try {
    for (;;) {
      for (let i = 0; i < CHUNK; i++) {
        let n: number;
        try {
          n = fs.readSync(fd, buf, 0, buf.length, null);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EPIPE') continue; // records overwritten while reading: go on with the next one
          if (code === 'EAGAIN') return false; // the end of the log
          return undefined;
        }
        if (n === 0) return false;
        const r = parseKmsgRecord(buf.toString('utf8', 0, n));
        if (r && r[0] >= since && isOomKillOf(r[1], q)) return true;
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (signal?.aborted) return undefined;
    }
  } finally {
    fs.closeSync(fd);
  }
}
