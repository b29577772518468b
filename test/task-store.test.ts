import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TaskStore } from '../src/store/task-store.js';
import type { TaskHandle } from '../src/drivers/contract.js';

function tempStore(t: { teardown: (f: () => void) => void }): TaskStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return new TaskStore(dir);
}

function handle(taskId: string, driver = 'raw_exec'): TaskHandle {
  return {
    version: 1, driver, taskId, allocId: '6c1f7f0e-5d2b-4a53-9d59-2f0c3b7a1e11', taskName: 'web',
    startedAt: new Date(0).toISOString(), config: { id: taskId, allocId: 'a', name: 'web', driver: {} }, driverState: { pid: 1 },
  };
}

test('put, get, list by driver and delete round-trip; nothing but the handle files is left', (t) => {
  const store = tempStore(t);
  store.put(handle('a'));
  store.put(handle('b/../../etc', 'docker'));
  t.deepEqual(store.get('a'), handle('a'));
  t.deepEqual(store.list('docker').handles.map((h) => h.taskId), ['b/../../etc']);
  t.is(store.list().handles.length, 2);
  t.true(path.dirname(store.fileFor('b/../../etc')).endsWith(path.join('tasks')), 'any id maps into the tasks dir');
  t.deepEqual(fs.readdirSync(path.join(store.dir, 'tasks')).filter((n) => n.endsWith('.tmp')), []);
  store.delete('a');
  t.is(store.get('a'), undefined);
  store.delete('a');
});

test('a corrupt or foreign file is reported and skipped, never thrown', (t) => {
  const store = tempStore(t);
  store.put(handle('good'));
  fs.writeFileSync(path.join(store.dir, 'tasks', 'bad.json'), '{ not json');
  fs.writeFileSync(path.join(store.dir, 'tasks', 'foreign.json'), JSON.stringify({ hello: 'world' }));
  fs.writeFileSync(path.join(store.dir, 'tasks', 'README'), 'x');
  const { handles, problems } = store.list();
  t.deepEqual(handles.map((h) => h.taskId), ['good']);
  t.is(problems.length, 3);
  t.true(problems.some((p) => p.file.endsWith('bad.json') && /corrupt JSON/.test(p.reason)));
  t.true(problems.some((p) => p.file.endsWith('foreign.json') && /not a corral task handle/.test(p.reason)));
});

test('a relative state dir is refused, naming the field', (t) => {
  const err = t.throws(() => new TaskStore('state'));
  t.is((err as { code?: string }).code, 'ERR_INVALID_CONFIG');
  t.regex(err!.message, /stateDir "state"/);
});
