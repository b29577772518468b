/**
 * `corral reconcile` (src/cli/reconcile.ts) against the real dockerd. Every run is scoped with
 * --label corral-test.file=<this file> so it never touches another test's containers.
 */
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { reconcileCommand } from '../src/cli/reconcile.js';
import { TaskStore } from '../src/store/task-store.js';
import { LABEL_AGENT_ID, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME } from '../src/drivers/docker/reconcile_dangling.js';
import { FILE_LABEL, createRawContainer, ensureDockerUp, eventually, exists, fileId, randomUUID, removeContainersOf } from './helpers/docker.js';
import { sandbox } from './helpers/sandbox.js';

/**
 * The label value of the running test's containers: each serial test (rtest) gets its own sandbox,
 * whose teardown removes them even when the test fails, so one test's leftovers never show up in
 * another test's passes.
 */
let FID = fileId('reconcile-cli');
const AGENT = `agent-cli-${randomUUID()}`;
const scope = (): string[] => ['--label', `${FILE_LABEL}=${FID}`];
const dirs: string[] = [];

test.before(async () => { await ensureDockerUp(); });
test.after.always(async () => {
  await removeContainersOf(FID);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function rtest(title: string, fn: (t: ExecutionContext) => Promise<void>): void {
  test.serial(title, async (t) => {
    FID = sandbox(t, 'reconcile-cli').name;
    await fn(t);
  });
}

function stateDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-reconcile-cli-'));
  dirs.push(d);
  return d;
}

async function run(argv: string[], signal?: AbortSignal): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (c) => { stdout += c; });
  err.on('data', (c) => { stderr += c; });
  const code = await reconcileCommand(argv, { stdout: out, stderr: err, ...(signal ? { signal } : {}) });
  return { code, stdout, stderr };
}

function labels(agent = AGENT): Record<string, string> {
  return { [LABEL_ALLOC_ID]: randomUUID(), [LABEL_TASK_NAME]: 'web', [LABEL_TASK_ID]: `t-${randomUUID()}`, [LABEL_AGENT_ID]: agent };
}

function storeHandle(dir: string, taskId: string, containerId: string): void {
  new TaskStore(dir).put({
    version: 1, driver: 'docker', taskId, allocId: randomUUID(), taskName: 'web', startedAt: new Date().toISOString(),
    config: { id: taskId, allocId: randomUUID(), name: 'web', driver: { image: 'x' } },
    driverState: { containerId, containerName: 'web', image: 'x', imageId: 'sha256:x', agentId: AGENT },
  });
}

rtest('--once --json: removes the untracked container, keeps the one the state dir tracks and other agents\' ones', async (t) => {
  const dir = stateDir();
  const dangling = await createRawContainer({ fileId: FID, labels: labels() });
  const tracked = await createRawContainer({ fileId: FID, labels: labels() });
  const foreign = await createRawContainer({ fileId: FID, labels: labels(`agent-else-${randomUUID()}`) });
  storeHandle(dir, 'tracked-task', tracked.id);
  const dry = await run(['--once', '--dry-run', '--creation-grace', '0', '--state-dir', dir, '--agent-id', AGENT, ...scope()]);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, new RegExp(`would remove ${dangling.id.slice(0, 12)}`));
  t.regex(dry.stdout, /dry run: nothing removed/);
  t.true(await exists(dangling.id));
  const r = await run(['--once', '--json', '--creation-grace', '0', '--state-dir', dir, '--agent-id', AGENT, ...scope()]);
  t.is(r.code, 0, r.stderr);
  const pass = JSON.parse(r.stdout.trim());
  t.true(pass.ran);
  t.is(pass.listed, 3);
  t.deepEqual(pass.removed.map((d: { id: string }) => d.id), [dangling.id]);
  t.false(await exists(dangling.id));
  t.true(await exists(tracked.id));
  t.true(await exists(foreign.id));
  // Grace: a 1h grace keeps everything.
  const young = await createRawContainer({ fileId: FID, labels: labels() });
  const g = await run(['--once', '--json', '--creation-grace', '1h', '--state-dir', dir, '--agent-id', AGENT, ...scope()]);
  t.deepEqual(JSON.parse(g.stdout).dangling, []);
  t.true(await exists(young.id));
  for (const c of [tracked, foreign, young]) await c.remove({ force: true });
});

rtest('the agent id comes from <state-dir>/agent-id', async (t) => {
  const dir = stateDir();
  fs.writeFileSync(path.join(dir, 'agent-id'), `${AGENT}-file\n`);
  const mine = await createRawContainer({ fileId: FID, labels: labels(`${AGENT}-file`) });
  const r = await run(['--once', '--json', '--creation-grace', '0', '--state-dir', dir, ...scope()]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout).removed.map((d: { id: string }) => d.id), [mine.id]);
});

rtest('loop mode: passes every period until the signal', async (t) => {
  const dir = stateDir();
  const c = await createRawContainer({ fileId: FID, labels: labels() });
  const ac = new AbortController();
  const p = run(['--period', '100ms', '--creation-grace', '0', '--json', '--state-dir', dir, '--agent-id', AGENT, ...scope()], ac.signal);
  await eventually(async () => !(await exists(c.id)), 10_000, 50);
  ac.abort();
  const r = await p;
  t.is(r.code, 0);
  const passes = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.true(passes.some((x) => x.removed.some((d: { id: string }) => d.id === c.id)));
});

rtest('the two unsafe rules: off by default (their matches listed as left alone), each turned on by its own flag', async (t) => {
  const dir = stateDir();
  const allocOnly = await createRawContainer({ fileId: FID, labels: { [LABEL_ALLOC_ID]: randomUUID(), [LABEL_TASK_NAME]: 'web' } });
  const nomadish = await createRawContainer({ fileId: FID, name: `web-${randomUUID()}`, volumes: ['/alloc', '/local', '/secrets'] });
  const base = ['--once', '--creation-grace', '0', '--state-dir', dir, '--agent-id', AGENT, ...scope()];
  const off = await run(base);
  t.is(off.code, 0, off.stderr);
  t.regex(off.stdout, new RegExp(`left alone ${allocOnly.id.slice(0, 12)} .*alloc-id-only.*: only --unsafe-match-alloc-id-only would remove it`));
  t.regex(off.stdout, new RegExp(`left alone ${nomadish.id.slice(0, 12)} .*heuristic.*: only --unsafe-match-nomad-shaped would remove it`));
  t.regex(off.stdout, /0 dangling, 0 removed/);
  t.true(await exists(allocOnly.id));
  t.true(await exists(nomadish.id));
  const a = JSON.parse((await run([...base, '--json', '--unsafe-match-alloc-id-only'])).stdout) as { removed: { id: string; matchedBy: string }[]; optInMatches: { id: string }[] };
  t.deepEqual(a.removed.map((d) => [d.id, d.matchedBy]), [[allocOnly.id, 'alloc-id-only']]);
  t.deepEqual(a.optInMatches.map((d) => d.id), [nomadish.id]);
  t.false(await exists(allocOnly.id));
  t.true(await exists(nomadish.id));
  const n = JSON.parse((await run([...base, '--json', '--unsafe-match-nomad-shaped'])).stdout) as { removed: { id: string; matchedBy: string }[] };
  t.deepEqual(n.removed.map((d) => [d.id, d.matchedBy]), [[nomadish.id, 'heuristic']]);
  t.false(await exists(nomadish.id));
  const h = await run(['--help']);
  t.regex(h.stdout, /--unsafe-match-alloc-id-only +also containers with io\.corral\.alloc_id but no agent id/);
  t.regex(h.stdout, /--unsafe-match-nomad-shaped +also unlabelled containers that mount \/alloc/);
  t.notRegex(h.stdout, /or no agent id at all\), or/); // the old rules are gone from the help
});

test('usage errors: one line on stderr, exit 125 (a failure of corral itself); unreachable Docker: exit 1', async (t) => {
  for (const argv of [['--period', 'soon'], ['--creation-grace', '-1s'], ['--bogus'], ['--period', '0'], ['extra'], ['--label', '=x'], ['--state-dir', 'relative'], ['--unsafe-match-nomad-shaped=yes']]) {
    const r = await run(argv);
    t.is(r.code, 125, `${argv.join(' ')}: ${r.stderr}`);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  const dir = stateDir();
  const r = await run(['--once', '--state-dir', dir, '--agent-id', AGENT, '--endpoint', `unix://${dir}/none.sock`]);
  t.is(r.code, 1);
  t.regex(r.stderr, /not reachable/);
  const h = await run(['--help']);
  t.is(h.code, 0);
  t.regex(h.stdout, /Usage: corral reconcile/);
});
