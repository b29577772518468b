// Environment teardown with native state live: worker threads that exit (process.exit() inside, or
// terminate() from outside) while they hold exit watches, unwatched ProcessHandles, cgroup.events
// watches, handles closed in the same turn (their uv close callbacks still pending), a delivered exit
// and a spawn in flight. The process must survive, the workers' children must be reaped, no fd may
// be left open.
//
// Under the sanitizer lane (npm run test:asan) this is the use-after-free reproduction of the old
// pidfd.cc: its uv close callbacks ran after the worker's napi_env was freed and still deleted napi
// references there (napi_delete_reference through a freed env: heap-use-after-free). Without ASan that
// bug was silent; under ASan it aborts this test's process. The addon now releases every handle's
// napi state in the env cleanup hook, while the env is alive, and the close callbacks touch no napi.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native, type ExitInfo } from '../src/native.js';
import { hostLayout } from './helpers/cgroups.js';
import { fdList, newFds, settle, until } from './helpers/loop.js';
import { sandbox } from './helpers/sandbox.js';

const n = native();
const layout = hostLayout();
const V2 = layout.unifiedMount ?? '/sys/fs/cgroup/unified';
const ADDON = process.env.CORRAL_ADDON ?? path.join(__dirname, '..', 'build', 'Release', 'corral.node');

// What each worker holds when its env goes away.
const WORKER = `
  const a = require(${JSON.stringify(ADDON)});
  const { parentPort, workerData } = require('node:worker_threads');
  const sp = (argv) => new Promise((res, rej) =>
    a.spawn({ file: argv[0], argv, envp: [], stdio: [-1, -1, -1], timeoutMs: 10000 }, (e, r) => (e ? rej(e) : res(r))));
  (async () => {
    const watched = await sp(['/bin/sleep', '100']);
    watched.process.watch(true, () => {});           // open and watching at teardown
    const idle = await sp(['/bin/sleep', '100']);     // open, never watched
    const closing = await sp(['/bin/sleep', '100']);
    closing.process.watch(true, () => {});
    const exiting = await sp(['/bin/sleep', '0.05']); // exits during the teardown
    exiting.process.watch(true, () => {});
    const done = await sp(['/bin/true']);
    await new Promise((r) => done.process.watch(true, r)); // delivered before the teardown
    const ev = a.watchEvents(workerData.events, () => {});
    const evClosing = a.watchEvents(workerData.events, () => {});
    sp(['/bin/true']).catch(() => {});               // in flight: its thread kills and reaps it
    // A group kill's steps in flight (control.cc): their threads free them once the env is gone.
    for (let i = 0; i < 8; i++) {
      a.controlRead(workerData.events, () => {});
      a.controlSignalGroup(workerData.events.replace(/cgroup\.events$/, 'cgroup.procs'), 0, () => {});
      a.controlWrite(workerData.events.replace(/cgroup\.events$/, 'cgroup.freeze'), '0', () => {});
    }
    parentPort.postMessage([watched.pid, idle.pid, closing.pid, exiting.pid]);
    // Closed in the same turn as the teardown starts: their close callbacks are still pending then.
    closing.process.close();
    evClosing.close();
    if (workerData.exit) process.exit(0);
  })();
`;

/** Kills and reaps (or waits for the background reap of) each of the worker's children. */
async function reapAll(pids: number[]): Promise<void> {
  for (const pid of pids) {
    let h;
    try { h = n.openProcess(pid); } catch { continue; } // already reaped
    try { h.signal(9); } catch { /* exited, not yet reaped */ }
    // reap: true takes the zombie of a handle closed without reaping; ECHILD (reaped in the
    // background meanwhile) is reaped: false.
    await new Promise<ExitInfo>((res) => h.watch(true, res));
  }
  await until(`the worker's children ${pids.join(' ')} to be reaped`, () => pids.every((p) => !fs.existsSync(`/proc/${p}`)));
}

for (const how of ['process.exit() in the worker', 'terminate() from outside'] as const) {
  test.serial(`a worker that exits by ${how} with watches, handles and a spawn live: the process survives, nothing is left`, async (t) => {
    const sb = sandbox(t, 'teardown');
    const group = path.join(V2, sb.parent, 'events.scope');
    fs.mkdirSync(path.dirname(group));
    fs.mkdirSync(group);
    const pids: number[] = [];
    t.teardown(() => { for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } } });
    await settle();
    const before = fdList();
    for (let round = 0; round < 3; round++) {
      const w = new Worker(WORKER, { eval: true, workerData: { events: path.join(group, 'cgroup.events'), exit: how.startsWith('process') } });
      const exited = new Promise<number>((res) => w.once('exit', res));
      const got = await new Promise<number[]>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      pids.push(...got);
      if (how.startsWith('terminate')) await w.terminate();
      await exited;
      // The worker's loop ran its close callbacks after the env was gone; a use-after-free there
      // aborts this process under ASan (and a napi call into the dead env could abort it anyway).
      t.true(fs.existsSync(`/proc/${got[0]}`), 'its children keep running after the worker is gone');
      await reapAll(got);
    }
    // Every pidfd and events fd of the workers is closed (the in-flight spawns' threads close theirs).
    await until('the workers\' fds to be closed', () => newFds(before).length === 0 || undefined);
    t.deepEqual(newFds(before), []);
  });
}
