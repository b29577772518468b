/**
 * Isolation for every test that touches the host: its own cgroup parent, state dir and container
 * label, all derived from one run id, and a teardown that removes everything under them, registered
 * before the test's first assertion (so a failing or timed-out test cleans up too, and one failing
 * test never fails another).
 *
 *   const sb = sandbox(t, 'stats');          // first line of the test
 *   const m = new CgroupV1Manager({ layout, parentName: sb.parent });
 *   const d = new RawExecDriver({ stateDir: sb.stateDir, cgroupParent: sb.parent });
 *   corral(['run', ...sb.cliArgs, '--', 'true']);
 *   await waitFor(() => ..., { what: '...', timeoutMs: bound(5000) });
 *
 * Names: `corral-test-<run>-<tag>-<pid>-<n>` (v2 drivers/managers add `.slice`); the run id comes from
 * CORRAL_TEST_RUN_ID (scripts/test.sh sets one per run, so scripts/check-leftovers.sh can look at this
 * run's names only) or is random per worker. Nothing here ever names the defaults (`corral`,
 * `corral.slice`, /var/lib/corral): a live corral agent on the host is never touched.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ExecutionContext } from 'ava';
import { cleanupParent } from './cgroups.js';
import { RUN_ID, SLOWDOWN, TEST_PREFIX, bound, uniqueName, within } from './names.js';

export { RUN_ID, SLOWDOWN, TEST_PREFIX, bound, uniqueName, within };

/** Docker label carried by every container the suite creates (value: the sandbox's name). */
export const TEST_LABEL = 'corral-test.file';
/** Docker label with the run id. */
export const RUN_LABEL = 'corral-test.run';

export interface Sandbox {
  /** The base name (`corral-test-...`): v1 parent, container label value, state dir name. */
  readonly name: string;
  /** The cgroup parent for v1 managers and for drivers (which add `.slice` on v2 themselves). */
  readonly parent: string;
  /** The cgroup parent for a v2 manager (`<name>.slice`). */
  readonly slice: string;
  /** The parent for a manager of this version. */
  parentFor(version: 'v1' | 'v2'): string;
  /** An empty state dir of its own (created now, removed at teardown). */
  readonly stateDir: string;
  /** Labels every container of this test must carry (createRawContainer / driver config labels). */
  readonly labels: Record<string, string>;
  /** `--state-dir <dir> --cgroup-parent <parent>` for `corral run` (and commands that take them). */
  readonly cliArgs: string[];
  /**
   * Registers a clean-up to run at teardown before the sandbox's own (last registered first): driver
   * shutdown, processes started outside the sandbox's groups, files outside its state dir.
   */
  defer(fn: () => unknown): void;
}

/**
 * Registered by the docker helper when a test file uses docker: removes the containers carrying a
 * label, and containers by id.
 */
let containerSweeper: ((label: string, value: string) => Promise<unknown>) | undefined;
let containerRemover: ((ids: string[]) => Promise<unknown>) | undefined;
export function setContainerSweeper(byLabel: (label: string, value: string) => Promise<unknown>, byId?: (ids: string[]) => Promise<unknown>): void {
  containerSweeper = byLabel;
  containerRemover = byId;
}

/**
 * Containers the docker driver recorded in a state dir (tasks/*.json): a `corral run --driver docker`
 * whose container carries no test label is still removed when its test fails.
 */
function recordedContainers(stateDir: string): string[] {
  const ids: string[] = [];
  let files: string[];
  try { files = fs.readdirSync(path.join(stateDir, 'tasks')); } catch { return ids; }
  for (const f of files) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(stateDir, 'tasks', f), 'utf8').trim().split('\n').pop()!) as { driver?: string; driverState?: { containerId?: unknown } };
      if (r.driver === 'docker' && typeof r.driverState?.containerId === 'string') ids.push(r.driverState.containerId);
    } catch { /* not a record */ }
  }
  return ids;
}

/** A clean-up step that may not hang the teardown: bounded, errors collected rather than thrown. */
async function bounded(what: string, fn: () => unknown, ms: number, errors: string[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.resolve().then(fn),
      new Promise((_res, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms`)), ms); }),
    ]);
  } catch (err) {
    errors.push(`${what}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Creates the test's sandbox and registers its teardown on `t` at once: call it before anything
 * the test asserts or starts. Teardown (also after a failure or a timeout): the deferred clean-ups
 * (last first), then every process and group under both parents killed and removed, the sandbox's
 * containers removed, the state dir deleted. What cannot be removed fails the test, naming it.
 */
export function sandbox(t: Pick<ExecutionContext, 'teardown'>, tag = 'test'): Sandbox {
  const name = uniqueName(tag);
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  const deferred: Array<() => unknown> = [];
  t.teardown(async () => {
    const errors: string[] = [];
    for (const fn of deferred.reverse()) await bounded('deferred clean-up', fn, bound(30_000), errors);
    // Containers first: on v2 their processes live under the sandbox's slice.
    const recorded = recordedContainers(stateDir);
    if (containerRemover && recorded.length > 0) await bounded('recorded container removal', () => containerRemover!(recorded), bound(60_000), errors);
    if (containerSweeper) await bounded('container removal', () => containerSweeper!(TEST_LABEL, name), bound(60_000), errors);
    for (const p of [name, `${name}.slice`]) {
      const left = await cleanupParent(p, bound(10_000));
      if (left.length > 0) errors.push(`could not remove ${left.join(', ')}`);
    }
    try { fs.rmSync(stateDir, { recursive: true, force: true }); } catch (err) { errors.push(`state dir ${stateDir}: ${(err as Error).message}`); }
    if (errors.length > 0) throw new Error(`sandbox ${name} teardown: ${errors.join('; ')}`);
  });
  return {
    name,
    parent: name,
    slice: `${name}.slice`,
    parentFor: (v) => (v === 'v2' ? `${name}.slice` : name),
    stateDir,
    labels: { [TEST_LABEL]: name, [RUN_LABEL]: RUN_ID },
    cliArgs: ['--state-dir', stateDir, '--cgroup-parent', name],
    defer: (fn) => { deferred.push(fn); },
  };
}

/**
 * A sandbox for a whole file (tests sharing one driver or manager): teardown in test.after.always.
 * Prefer sandbox(t) per test; use this only where the tests must share state.
 */
export function fileSandbox(after: { always: (fn: () => Promise<void>) => void }, tag: string): Sandbox {
  let teardown: (() => unknown) | undefined;
  const sb = sandbox({ teardown: (fn) => { teardown = fn; } }, tag);
  after.always(async () => { await teardown?.(); });
  return sb;
}
