/**
 * Where a RawExecDriver start→wait→destroy spends its time, for the lifecycle bench's notes: the
 * driver's sequential lifecycle timed again with the store's methods, the native spawn and the
 * group's create/destroy wrapped (in this bench process only, undone afterwards). What is left is the
 * driver's own JS (validation, command resolution, the handle copy, events) and the turns of the event
 * loop between the steps. raw_exec's record rides in the group's batches (its create before the mkdirs,
 * its unlink after the last rmdir) and its running line in the spawn: those are in those phases.
 */
import { randomUUID } from 'node:crypto';
import { TaskStore } from '../../src/store/task-store.js';
import type { NativeAddon } from '../../src/native.js';
import type { CgroupManager } from '../../src/cgroups/types.js';
import type { TaskDriver } from '../../src/drivers/contract.js';

type Fn = (...a: any[]) => any;

const CREATE = 'cgroup create (with the record\'s create)';
const DESTROY = 'cgroup destroy (with the record\'s unlink)';

export async function driverPhases(driver: TaskDriver, mgr: CgroupManager, addon: NativeAddon, n: number): Promise<string> {
  const acc = new Map<string, number>();
  const add = (k: string, t0: bigint) => acc.set(k, (acc.get(k) ?? 0) + Number(process.hrtime.bigint() - t0) / 1e3);
  const undo: Array<() => void> = [];
  const wrap = (obj: any, name: string, label: string, async = false) => {
    const orig = obj[name] as Fn;
    obj[name] = async
      ? async function (this: unknown, ...a: unknown[]) { const t = process.hrtime.bigint(); try { return await orig.apply(this, a); } finally { add(label, t); } }
      : function (this: unknown, ...a: unknown[]) { const t = process.hrtime.bigint(); try { return orig.apply(this, a); } finally { add(label, t); } };
    undo.push(() => { obj[name] = orig; });
  };
  for (const m of ['get', 'create', 'put', 'delete']) {
    wrap(TaskStore.prototype, m, `store.${m}`);
    if (`${m}Async` in TaskStore.prototype) wrap(TaskStore.prototype, `${m}Async`, `store.${m}`, true);
  }
  const a = addon as unknown as { spawn: Fn };
  const spawn = a.spawn;
  a.spawn = function (this: unknown, opts: unknown, cb: Fn) {
    const t = process.hrtime.bigint();
    try {
      return spawn.call(this, opts, (e: unknown, r: unknown) => { add('native spawn, call → result (off the loop)', t); cb(e, r); });
    } finally { add('native spawn, synchronous part (on the loop)', t); }
  };
  undo.push(() => { a.spawn = spawn; });
  const m = mgr as unknown as { create: Fn; createAsync?: Fn };
  const create = m.create;
  m.create = function (this: unknown, ...args: unknown[]) {
    const t = process.hrtime.bigint();
    const g = create.apply(this, args);
    add(CREATE, t);
    wrap(g, 'destroy', DESTROY, true);
    return g;
  };
  undo.push(() => { m.create = create; });
  const createAsync = m.createAsync;
  if (createAsync) {
    m.createAsync = async function (this: unknown, ...args: unknown[]) {
      const t = process.hrtime.bigint();
      const g = await createAsync.apply(this, args);
      add(CREATE, t);
      wrap(g, 'destroy', DESTROY, true);
      return g;
    };
    undo.push(() => { m.createAsync = createAsync; });
  }
  const t0 = process.hrtime.bigint();
  try {
    for (let i = 0; i < n; i++) {
      const id = `phases-${process.pid}-${i}`;
      let t = process.hrtime.bigint();
      await driver.startTask({ id, allocId: randomUUID(), name: 't', driver: { command: '/bin/true', args: [] } });
      add('startTask', t);
      t = process.hrtime.bigint();
      await driver.waitTask(id);
      add('waitTask (the process runs, exits, is reaped)', t);
      t = process.hrtime.bigint();
      await driver.destroyTask(id);
      add('destroyTask', t);
    }
  } finally {
    for (const u of undo.reverse()) u();
  }
  const total = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  const per = (k: string) => (acc.get(k) ?? 0) / n;
  const store = ['get', 'create', 'put', 'delete'].reduce((s, k) => s + per(`store.${k}`), 0);
  const own = per('startTask') + per('destroyTask') - store - per('native spawn, call → result (off the loop)') - per(CREATE) - per(DESTROY);
  const parts = [...acc.keys()].map((k) => `${k} ${per(k).toFixed(0)}`).join(', ');
  return `driver phases (${n} sequential lifecycles, ${total.toFixed(0)} µs each, state dir on disk), µs per task: ${parts}. ` +
    `The task store's own calls take ${store.toFixed(0)} µs (${((100 * store) / total).toFixed(0)}%), the driver's own work and loop turns ${own.toFixed(0)} µs (${((100 * own) / total).toFixed(0)}%, the native spawn's synchronous part included).`;
}
