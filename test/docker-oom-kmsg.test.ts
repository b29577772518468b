/**
 * The kernel log as the OOM kill record that survives a container's cgroup (src/drivers/docker/oom.ts):
 * record parsing on fixed strings, and a real OOM kill (a run() task over its memory limit) found by
 * its pid, while a pid the OOM killer did not kill and records older than the start are not.
 */
import test from 'ava';
import { isOomKillOf, kernelLoggedOomKill, parseKmsgRecord } from '../src/drivers/docker/oom.js';
import { run } from '../src/run.js';
import { sandbox } from './helpers/sandbox.js';

const ID = 'a7a39b0fe85014296dd24e10a4e359b0ed28da5fc5f633718d03a69f65a0db7a';

test('records: timestamp and message; kill lines matched by pid or by the container cgroup', (t) => {
  t.deepEqual(parseKmsgRecord('3,17384,12484119037,-;Memory cgroup out of memory: Killed process 2145 (sh) total-vm:14564kB\n SUBSYSTEM=x\n'),
    [12484119037, 'Memory cgroup out of memory: Killed process 2145 (sh) total-vm:14564kB']);
  t.is(parseKmsgRecord('no separator'), undefined);
  t.is(parseKmsgRecord('6,1,notanumber,-;x'), undefined);
  const kill = 'Memory cgroup out of memory: Killed process 2145 (sh) total-vm:14564kB, anon-rss:7764kB';
  t.true(isOomKillOf(kill, { containerId: 'other', pid: 2145 }));
  t.false(isOomKillOf(kill, { containerId: 'other', pid: 214 }));
  t.false(isOomKillOf(kill, { containerId: 'other', pid: 0 }));
  const summary = `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=${ID},mems_allowed=0,oom_memcg=/docker/${ID},task_memcg=/docker/${ID},task=sh,pid=2145,uid=0`;
  t.true(isOomKillOf(summary, { containerId: ID, pid: 0 }));
  t.true(isOomKillOf(summary.replace(`/docker/${ID}`, `/system.slice/docker-${ID}.scope`), { containerId: ID, pid: 0 }));
  t.false(isOomKillOf(summary, { containerId: ID.replace('a7', 'b8'), pid: 0 }));
});

test('a real OOM kill is in the kernel log under its pid, from its start on', async (t) => {
  const sb = sandbox(t, 'oom-kmsg');
  const startedAtMs = Date.now();
  const r = await run('sh', ['-c', 'echo $$; x=aaaaaaaaaaaaaaaa; while :; do x="$x$x"; done'], { cgroupParent: sb.parent, resources: { memoryBytes: 8 << 20 } });
  t.like(r, { oomKilled: true, signal: 'SIGKILL' });
  const pid = Number(r.stdout.trim());
  t.true(pid > 0, r.stdout);
  t.true(await kernelLoggedOomKill({ containerId: 'no-such-container', pid, startedAtMs }));
  // Records from before the start do not count (a pid is reused), nor a pid that was not killed.
  t.false(await kernelLoggedOomKill({ containerId: 'no-such-container', pid, startedAtMs: Date.now() + 60_000 }));
  t.false(await kernelLoggedOomKill({ containerId: 'no-such-container', pid: 2 ** 22 + 1, startedAtMs }));
});
