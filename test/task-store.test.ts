import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { TaskStore } from '../src/store/task-store.js';
import { processStartTime, selfOwner } from '../src/store/owner.js';
import type { TaskHandle } from '../src/drivers/contract.js';
import { sandbox } from './helpers/sandbox.js';

/** A store in a sandbox state dir of the test's own (removed at teardown, also on failure). */
function tempStore(t: { teardown: (f: () => unknown) => void }): TaskStore {
  return new TaskStore(sandbox(t, 'store').stateDir);
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
  t.true(problems.some((p) => p.file.endsWith('foreign.json') && /not a corral task record/.test(p.reason)));
});

test('a relative state dir is refused, naming the field', (t) => {
  const err = t.throws(() => new TaskStore('state'));
  t.is((err as { code?: string }).code, 'ERR_INVALID_CONFIG');
  t.regex(err!.message, /stateDir "state"/);
});

/** A process that lived and died: its (pid, start time) names nobody now. */
async function deadProcess(): Promise<{ pid: number; startTime: number }> {
  const c = spawn('sleep', ['1000'], { stdio: 'ignore' });
  const pid = c.pid!;
  const startTime = processStartTime(pid)!;
  if (startTime === undefined) throw new Error('no start time');
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
  return { pid, startTime };
}

/** A live process (killed at teardown) to stand for another agent. */
function liveProcess(t: { teardown: (f: () => void) => void }): { pid: number; startTime: number } {
  const c = spawn('sleep', ['1000'], { stdio: 'ignore' });
  t.teardown(() => { c.kill('SIGKILL'); });
  const startTime = processStartTime(c.pid!);
  if (startTime === undefined) throw new Error('no start time');
  return { pid: c.pid!, startTime };
}

test('create is exclusive and writes a starting record owned by this process; put moves it to running', (t) => {
  const store = tempStore(t);
  store.create(handle('a'));
  const r = store.getRecord('a')!;
  t.is(r.state, 'starting');
  t.deepEqual(r.owner, selfOwner());
  t.is(r.ownerStatus, 'self');
  t.deepEqual(r.handle, handle('a'), 'the handle comes back without state/owner mixed in');
  t.throws(() => store.create(handle('a')), { code: 'ERR_TASK_EXISTS' });
  store.put(handle('a'));
  t.is(store.getRecord('a')!.state, 'running');
  t.deepEqual(fs.readdirSync(path.join(store.dir, 'tasks')), [path.basename(store.fileFor('a'))]);
});

test('the async writes (one native pool job each) keep the same rules: exclusive create, replacing put, idempotent delete, no temp file', async (t) => {
  const store = tempStore(t);
  await store.createAsync(handle('a'));
  t.like(store.getRecord('a'), { state: 'starting', ownerStatus: 'self' });
  t.deepEqual(store.getRecord('a')!.handle, handle('a'));
  await t.throwsAsync(store.createAsync(handle('a')), { code: 'ERR_TASK_EXISTS' });
  // Many creates of one id at once: exactly one wins.
  const results = await Promise.allSettled(Array.from({ length: 20 }, () => store.createAsync(handle('race'))));
  t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
  t.true(results.every((r) => r.status === 'fulfilled' || (r.reason as { code?: string }).code === 'ERR_TASK_EXISTS'));
  await store.putAsync(handle('a'));
  t.is(store.getRecord('a')!.state, 'running');
  t.is(fs.statSync(store.fileFor('a')).mode & 0o777, 0o600);
  await store.deleteAsync('a');
  await store.deleteAsync('a');
  t.is(store.get('a'), undefined);
  t.deepEqual(fs.readdirSync(path.join(store.dir, 'tasks')), [path.basename(store.fileFor('race'))]);
});

test('putAsync appends the running record as the file\'s last line (no rename over the file); readers take the last complete line and skip a tail still being written', async (t) => {
  const store = new TaskStore(fs.mkdtempSync(path.join(os.tmpdir(), 'corral-store-append-')));
  t.teardown(() => fs.rmSync(store.dir, { recursive: true, force: true }));
  await store.createAsync(handle('a'), 'starting');
  const file = store.fileFor('a');
  const ino = fs.statSync(file).ino;
  const running = { ...handle('a'), driverState: { pid: 4242 } };
  await store.putAsync(running);
  t.is(fs.statSync(file).ino, ino, 'the same file: appended to, not replaced');
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  t.is(lines.length, 3, 'two complete lines');
  t.is(store.getRecord('a')!.state, 'running');
  t.deepEqual(store.getRecord('a')!.handle, running);
  t.deepEqual(await store.getAsync('a'), running);
  t.deepEqual(store.list().handles, [running]);
  // What a reader may see while a line is being appended: a prefix without its newline.
  const tail = JSON.stringify({ ...handle('a'), driverState: { pid: 1 }, state: 'running' });
  fs.appendFileSync(file, tail.slice(0, tail.length >> 1));
  t.deepEqual(store.getRecord('a')!.handle, running, 'the incomplete tail is skipped');
  t.deepEqual(store.list().problems, []);
  // A record that was deleted meanwhile is written anew by putAsync.
  await store.deleteAsync('a');
  await store.putAsync(running);
  t.is(fs.readFileSync(file, 'utf8').split('\n').length, 2, 'one line');
  t.is(store.getRecord('a')!.state, 'running');
  // A record file written by hand as one JSON document without a newline is still read.
  fs.writeFileSync(store.fileFor('b'), JSON.stringify({ ...handle('b'), state: 'running' }));
  t.deepEqual(store.get('b'), handle('b'));
});

test('owner liveness: a live other process is alive, a dead one or a pid with another start time is dead, no owner is dead', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const live = liveProcess(t);
  const dead = await deadProcess();
  new TaskStore(dir, { owner: live }).create(handle('live'), 'running');
  new TaskStore(dir, { owner: dead }).create(handle('dead'), 'running');
  // The live process's pid with another start time: a reused pid does not count as the owner.
  new TaskStore(dir, { owner: { pid: live.pid, startTime: live.startTime + 1 } }).create(handle('reused'), 'running');
  // A record from before records had owners and states.
  const legacy = handle('legacy');
  fs.writeFileSync(new TaskStore(dir).fileFor('legacy'), JSON.stringify(legacy));
  const store = new TaskStore(dir);
  store.create(handle('mine'));
  const status = Object.fromEntries(store.records().records.map((r) => [r.taskId, [r.ownerStatus, r.state]]));
  t.deepEqual(status, {
    live: ['alive', 'running'], dead: ['dead', 'running'], reused: ['dead', 'running'], legacy: ['dead', 'running'], mine: ['self', 'starting'],
  });
});

test('adopt: refused while the owner lives (naming its pid) unless forced; a dead owner\'s record becomes ours', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const live = liveProcess(t);
  const dead = await deadProcess();
  new TaskStore(dir, { owner: live }).create(handle('live'), 'running');
  new TaskStore(dir, { owner: dead }).create(handle('dead'), 'starting');
  const store = new TaskStore(dir);
  const err = t.throws(() => store.adopt('live'));
  t.is((err as { code?: string }).code, 'ERR_TASK_OWNED');
  t.is((err as unknown as { ownerPid: number }).ownerPid, live.pid);
  t.regex(err!.message, new RegExp(`pid ${live.pid}`));
  t.is(store.getRecord('live')!.ownerStatus, 'alive', 'a refused adoption changes nothing');
  const before = store.adopt('dead');
  t.deepEqual(before.owner, dead);
  const now = store.getRecord('dead')!;
  t.is(now.ownerStatus, 'self');
  t.is(now.state, 'starting', 'adoption keeps the state');
  t.deepEqual(store.adopt('live', { force: true }).owner, live);
  t.is(store.getRecord('live')!.ownerStatus, 'self');
  t.throws(() => store.adopt('nope'), { code: 'ERR_TASK_NOT_FOUND' });
  t.deepEqual(fs.readdirSync(path.join(dir, 'tasks')).sort(), [path.basename(store.fileFor('dead')), path.basename(store.fileFor('live'))].sort());
});

test('two agent processes adopting the same dead owner\'s records at once: each record gets exactly one new owner', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dead = await deadProcess();
  const ids = Array.from({ length: 3 }, (_, i) => `t${i}`);
  const old = new TaskStore(dir, { owner: dead });
  for (const id of ids) old.create(handle(id), 'running');
  const child = path.join(__dirname, 'helpers', 'store-child.ts');
  for (const id of ids) {
    // Three agents, all started and waiting, told to adopt at the same moment; winners stay alive.
    const kids = [0, 1, 2].map(() => spawn(process.execPath, ['--import=tsx', child, 'adopt', dir, id], { stdio: ['pipe', 'pipe', 'inherit'] }));
    t.teardown(() => { for (const k of kids) k.kill('SIGKILL'); });
    const lines = kids.map((k) => {
      const got: string[] = [];
      k.stdout!.on('data', (b: Buffer) => got.push(...b.toString().split('\n').filter(Boolean)));
      return got;
    });
    const until = async (ok: () => boolean) => {
      const deadline = Date.now() + 120_000; // three tsx start-ups each round: slow on a loaded 2-core machine
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`children said ${JSON.stringify(lines)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await until(() => lines.every((l) => l.includes('ready')));
    for (const k of kids) k.stdin!.write('go\n');
    await until(() => lines.every((l) => l.length >= 2));
    const results = lines.map((l) => l[1]!).sort();
    t.is(results.filter((r) => r === 'won').length, 1, `${id}: ${results.join(',')}`);
    t.true(results.every((r) => r === 'won' || r === 'ERR_TASK_OWNED' || r === 'ERR_TASK_NOT_FOUND'), results.join(','));
    const winner = kids[lines.findIndex((l) => l[1] === 'won')]!;
    t.is(new TaskStore(dir).getRecord(id)!.owner!.pid, winner.pid!);
    const exits = kids.map((k) => new Promise((r) => k.once('exit', r)));
    for (const k of kids) k.stdin!.end();
    await Promise.all(exits);
    t.is(new TaskStore(dir).getRecord(id)!.ownerStatus, 'dead', 'the winner exited: adoptable again');
  }
  t.deepEqual(fs.readdirSync(path.join(dir, 'tasks')).filter((n) => !n.endsWith('.json')), []);
});

test('a live agent process\'s record is alive for us; once it is killed it is dead and adoptable', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = spawn(process.execPath, ['--import=tsx', path.join(__dirname, 'helpers', 'store-child.ts'), 'hold', dir, 'held'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { c.kill('SIGKILL'); });
  await new Promise<void>((resolve, reject) => {
    c.stdout!.on('data', (b: Buffer) => { if (b.toString().includes('ready')) resolve(); });
    c.once('exit', () => reject(new Error('child exited early')));
  });
  const store = new TaskStore(dir);
  t.is(store.getRecord('held')!.ownerStatus, 'alive');
  t.is(store.getRecord('held')!.owner!.pid, c.pid!);
  t.throws(() => store.adopt('held'), { code: 'ERR_TASK_OWNED' });
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
  t.is(store.getRecord('held')!.ownerStatus, 'dead');
  store.adopt('held');
  t.is(store.getRecord('held')!.ownerStatus, 'self');
});

test('listing removes temp files and puts back adoption claims of processes that died; a live claimer owns its claim', async (t) => {
  const store = tempStore(t);
  const dead = await deadProcess();
  const live = liveProcess(t);
  store.put(handle('keep'));
  const tasks = path.join(store.dir, 'tasks');
  const deadTmp = `${store.fileFor('x')}.${dead.pid}-${dead.startTime}.1.tmp`;
  const liveTmp = `${store.fileFor('y')}.${live.pid}-${live.startTime}.1.tmp`;
  fs.writeFileSync(deadTmp, '{"partial');
  fs.writeFileSync(liveTmp, '{"partial');
  // A claim by a dead adopter (crashed mid-adoption) and one by a live adopter.
  new TaskStore(store.dir, { owner: dead }).create(handle('c1'), 'running');
  fs.renameSync(store.fileFor('c1'), `${store.fileFor('c1')}.claim.${dead.pid}.${dead.startTime}`);
  store.create(handle('c2'), 'running');
  fs.renameSync(store.fileFor('c2'), `${store.fileFor('c2')}.claim.${live.pid}.${live.startTime}`);
  const { records, problems } = store.records();
  t.deepEqual(problems, []);
  const by = Object.fromEntries(records.map((r) => [r.taskId, r.ownerStatus]));
  t.deepEqual(by, { keep: 'self', c1: 'dead', c2: 'alive' });
  t.is(records.find((r) => r.taskId === 'c2')!.owner!.pid, live.pid);
  t.false(fs.existsSync(deadTmp));
  t.true(fs.existsSync(liveTmp), 'a live writer\'s temp file is left to it');
  t.true(fs.existsSync(store.fileFor('c1')), 'the dead adopter\'s claim is the record again');
  t.is(fs.readdirSync(tasks).filter((n) => n.includes('.claim.')).length, 1);
});

test('ENOSPC on a tiny tmpfs state dir: the write fails with ENOSPC, no temp file is left, the previous record is intact', async (t) => {
  if (process.getuid?.() !== 0) return t.pass('needs root to mount a tmpfs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-enospc-'));
  t.teardown(() => {
    try { execFileSyncQuiet('umount', [dir]); } catch { /* not mounted */ }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  execFileSyncQuiet('mount', ['-t', 'tmpfs', '-o', 'size=16k,mode=0700', 'tmpfs', dir]);
  const store = new TaskStore(dir);
  store.put(handle('small'));
  const big = handle('small');
  big.config.env = { BIG: 'x'.repeat(64 * 1024) };
  const e1 = t.throws(() => store.put(big));
  t.is((e1 as NodeJS.ErrnoException).code, 'ENOSPC');
  const e2 = t.throws(() => store.create({ ...big, taskId: 'other' }));
  t.is((e2 as NodeJS.ErrnoException).code, 'ENOSPC');
  t.deepEqual(fs.readdirSync(path.join(dir, 'tasks')), [path.basename(store.fileFor('small'))]);
  t.deepEqual(store.get('small'), handle('small'));
  // The async paths the drivers use: the same error, no temp file, the record intact.
  const before = fs.readFileSync(store.fileFor('small'), 'utf8');
  t.is((await t.throwsAsync(store.putAsync(big)) as NodeJS.ErrnoException).code, 'ENOSPC');
  t.is(fs.readFileSync(store.fileFor('small'), 'utf8'), before, 'a short append is cut back off');
  t.is((await t.throwsAsync(store.createAsync({ ...big, taskId: 'other' })) as NodeJS.ErrnoException).code, 'ENOSPC');
  t.deepEqual(fs.readdirSync(path.join(dir, 'tasks')), [path.basename(store.fileFor('small'))]);
  t.deepEqual(store.get('small'), handle('small'));
  // Space again: writes work again.
  store.delete('small');
  store.put(handle('after'));
  t.is(store.getRecord('after')!.state, 'running');
});

function execFileSyncQuiet(file: string, args: string[]): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('node:child_process').execFileSync(file, args, { stdio: 'ignore' });
}
