/**
 * DanglingContainerReconciler: Nomad's `gc.dangling_containers`. Docker can create and start a
 * container while the API call that asked for it fails (network error, timeout, agent crash); such
 * a container runs with nobody tracking it. Each pass, while the driver is healthy, lists running
 * containers and removes (force) those that are ours, untracked, and created before now − grace.
 *
 * "Ours" by default means provably this agent's: io.corral.alloc_id with this agent's
 * io.corral.agent_id (two agents sharing one dockerd never reap each other's: Nomad issue 7792).
 * corral has always labelled its containers with its agent id, so the two looser rules below never
 * protect a corral container; they only endanger someone else's, and are off by default:
 *  - `unsafeMatchAllocIdOnly`: io.corral.alloc_id without any agent id;
 *  - `unsafeMatchNomadShaped`: unlabelled, mounts /alloc, /local and /secrets, name ends in -<uuid>
 *    (Nomad's heuristic; exactly what a Nomad client sharing the dockerd creates).
 * Every pass reports in `optInMatches` the dangling candidates that a rule which is off would have
 * matched, so an operator can see what turning it on would remove.
 *
 * One pass = one list call + one remove call per removal; nothing else talks to Docker.
 */
import { InvalidConfigError } from '../../errors.js';
import { type Logger, stderrLogger } from '../../util/logger.js';
import { optMs } from '../../util/validate.js';
import { bounded, type ContainerInfo } from './client.js';

export const LABEL_ALLOC_ID = 'io.corral.alloc_id';
export const LABEL_TASK_NAME = 'io.corral.task_name';
export const LABEL_TASK_ID = 'io.corral.task_id';
export const LABEL_AGENT_ID = 'io.corral.agent_id';
export const RESERVED_LABEL_PREFIX = 'io.corral.';

export const DEFAULT_RECONCILE_PERIOD_MS = 5 * 60_000;
export const DEFAULT_CREATION_GRACE_MS = 5 * 60_000;
/** Floor of the bound on each Docker call of a pass (the bound is max(floor, period)). */
export const DEFAULT_CALL_TIMEOUT_FLOOR_MS = 30_000;

export interface DanglingContainersConfig {
  /** Default true. */
  enabled?: boolean;
  /** Only log what would be removed. Default false. */
  dryRun?: boolean;
  /** Between passes. Default 5 min. */
  periodMs?: number;
  /** Containers younger than this are left alone (a start may be in flight). Any value ≥ 0; default 5 min. */
  creationGraceMs?: number;
  /**
   * DANGEROUS: also remove containers labelled io.corral.alloc_id without any io.corral.agent_id.
   * corral never made such containers; anything else copying corral's labels would lose its
   * containers. Default false.
   */
  unsafeMatchAllocIdOnly?: boolean;
  /**
   * DANGEROUS: also remove unlabelled containers that mount /alloc, /local and /secrets and whose
   * name ends in -<uuid> (Nomad's heuristic). A Nomad client sharing this dockerd makes exactly
   * such containers, and they would be removed. Default false.
   */
  unsafeMatchNomadShaped?: boolean;
}

/** Which rule made a container this agent's: its agent id, or one of the opt-in rules. */
export type OwnershipRule = 'label' | 'alloc-id-only' | 'heuristic';

/** The part of dockerode the reconciler uses (a wrapper may count or fail calls). */
export interface ReconcilerDockerClient {
  listContainers(opts: { all?: boolean; filters?: { label?: string[] }; abortSignal?: AbortSignal }): Promise<ContainerInfo[]>;
  getContainer(id: string): { remove(opts: { force?: boolean; v?: boolean; abortSignal?: AbortSignal }): Promise<unknown> };
}

/** Time source and timers (injectable for tests). */
export interface ReconcilerClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: ReconcilerClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface DanglingContainerReconcilerOptions extends DanglingContainersConfig {
  docker: ReconcilerDockerClient;
  /** This agent's id; containers labelled with another agent id are never touched. */
  agentId: string;
  /** Container IDs the agent tracks (its tasks); called once per pass. */
  trackedContainers: () => Iterable<string> | Promise<Iterable<string>>;
  /** Passes run only while this says true. Default: always healthy. */
  isDriverHealthy?: () => boolean | Promise<boolean>;
  logger?: Logger;
  clock?: ReconcilerClock;
  /** Stops the loop (and any pass in flight) for good. */
  signal?: AbortSignal;
  /** Floor of each call's bound; default 30 s (tests lower it). */
  callTimeoutFloorMs?: number;
  /** Only consider containers with these labels (`key` or `key=value`), filtered by Docker in the one list call. */
  labelFilter?: string[];
  /** Removals in flight at once during a pass (default 4; each is still one call). */
  removeConcurrency?: number;
  /** Called after every pass of the loop that ran (not for runOnce calls made by others). */
  onPass?: (r: ReconcilePassResult) => void;
}

export interface DanglingContainer {
  id: string;
  name: string;
  /** Creation time, ms since the epoch. */
  createdAt: number;
  image: string;
  /** The rule that matched (in `optInMatches`: the rule, off, that would have matched). */
  matchedBy: OwnershipRule;
  allocId?: string;
  taskName?: string;
  taskId?: string;
  agentId?: string;
}

export interface ReconcilePassResult {
  /** False when the pass was skipped (driver unhealthy, reconciler stopped). */
  ran: boolean;
  skippedReason?: string;
  dryRun: boolean;
  /** Containers that were listed. */
  listed: number;
  /** Ours, untracked and older than the grace: removed, or (dry run) would be. */
  dangling: DanglingContainer[];
  removed: DanglingContainer[];
  failed: Array<{ container: DanglingContainer; error: string }>;
  /**
   * Untracked containers older than the grace that only an opt-in rule which is off would have
   * matched: left alone, reported so that an operator sees what enabling the rule would remove.
   */
  optInMatches: DanglingContainer[];
}

const UUID_SUFFIX = /-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function hasMount(c: ContainerInfo, dest: string): boolean {
  return (c.Mounts ?? []).some((m) => m.Destination === dest);
}

/**
 * The rule under which a listed container would be this agent's, whether or not that rule is on
 * (see `ownership` for the decision), or undefined when no rule matches it.
 */
export function matchingRule(c: ContainerInfo, agentId: string): OwnershipRule | undefined {
  const labels = c.Labels ?? {};
  const owner = labels[LABEL_AGENT_ID];
  if (Object.prototype.hasOwnProperty.call(labels, LABEL_ALLOC_ID)) {
    if (owner === undefined || owner === '') return 'alloc-id-only';
    return owner === agentId ? 'label' : undefined;
  }
  // Any corral agent label without an alloc id is not a Nomad-era container either.
  if (owner !== undefined) return undefined;
  if (!hasMount(c, '/alloc') || !hasMount(c, '/local') || !hasMount(c, '/secrets')) return undefined;
  return (c.Names ?? []).some((n) => UUID_SUFFIX.test(n)) ? 'heuristic' : undefined;
}

/** The opt-in rules an agent has turned on (both off by default). */
export interface OwnershipOptions {
  unsafeMatchAllocIdOnly?: boolean;
  unsafeMatchNomadShaped?: boolean;
}

/** How a listed container is this agent's under the rules that are on, or undefined when it is not. */
export function ownership(c: ContainerInfo, agentId: string, opts: OwnershipOptions = {}): OwnershipRule | undefined {
  const rule = matchingRule(c, agentId);
  if (rule === 'alloc-id-only' && !opts.unsafeMatchAllocIdOnly) return undefined;
  if (rule === 'heuristic' && !opts.unsafeMatchNomadShaped) return undefined;
  return rule;
}

/** A duration option (whole milliseconds, at least `min`). */
function checkDuration(field: string, v: unknown, dflt: number, min: number): number {
  return Math.floor(optMs(field, v, dflt, min));
}

export class DanglingContainerReconciler {
  readonly enabled: boolean;
  readonly dryRun: boolean;
  readonly periodMs: number;
  readonly creationGraceMs: number;
  readonly agentId: string;
  readonly unsafeMatchAllocIdOnly: boolean;
  readonly unsafeMatchNomadShaped: boolean;
  /** Bound on each Docker call of a pass: max(floor, period). */
  readonly callTimeoutMs: number;

  private readonly docker: ReconcilerDockerClient;
  private readonly tracked: DanglingContainerReconcilerOptions['trackedContainers'];
  private readonly healthy: () => boolean | Promise<boolean>;
  private readonly logger: Logger;
  private readonly clock: ReconcilerClock;
  private readonly signal: AbortSignal | undefined;
  private readonly labelFilter: string[] | undefined;
  private readonly removeConcurrency: number;
  private readonly onPass: ((r: ReconcilePassResult) => void) | undefined;

  private started = false;
  private stopped = false;
  private timer: unknown;
  private readonly passAborts = new Set<AbortController>();
  private lastPassSucceeded = true;
  private onAbort: (() => void) | undefined;
  private passes = 0;

  constructor(opts: DanglingContainerReconcilerOptions) {
    if (typeof opts.agentId !== 'string' || opts.agentId === '') throw new InvalidConfigError('agentId', opts.agentId, 'must be a non-empty string');
    this.enabled = opts.enabled ?? true;
    this.dryRun = opts.dryRun ?? false;
    if (typeof this.enabled !== 'boolean') throw new InvalidConfigError('gc.danglingContainers.enabled', opts.enabled, 'must be a boolean');
    if (typeof this.dryRun !== 'boolean') throw new InvalidConfigError('gc.danglingContainers.dryRun', opts.dryRun, 'must be a boolean');
    this.unsafeMatchAllocIdOnly = opts.unsafeMatchAllocIdOnly ?? false;
    this.unsafeMatchNomadShaped = opts.unsafeMatchNomadShaped ?? false;
    for (const k of ['unsafeMatchAllocIdOnly', 'unsafeMatchNomadShaped'] as const) {
      if (typeof this[k] !== 'boolean') throw new InvalidConfigError(`gc.danglingContainers.${k}`, opts[k], 'must be a boolean');
    }
    this.periodMs = checkDuration('gc.danglingContainers.periodMs', opts.periodMs ?? undefined, DEFAULT_RECONCILE_PERIOD_MS, 1);
    this.creationGraceMs = checkDuration('gc.danglingContainers.creationGraceMs', opts.creationGraceMs ?? undefined, DEFAULT_CREATION_GRACE_MS, 0);
    const floor = checkDuration('callTimeoutFloorMs', opts.callTimeoutFloorMs ?? undefined, DEFAULT_CALL_TIMEOUT_FLOOR_MS, 1);
    this.callTimeoutMs = Math.max(floor, this.periodMs);
    this.agentId = opts.agentId;
    this.docker = opts.docker;
    this.tracked = opts.trackedContainers;
    this.healthy = opts.isDriverHealthy ?? (() => true);
    this.logger = opts.logger ?? stderrLogger;
    this.clock = opts.clock ?? systemClock;
    this.signal = opts.signal;
    if (opts.labelFilter !== undefined) {
      if (!Array.isArray(opts.labelFilter) || opts.labelFilter.some((l) => typeof l !== 'string' || l === '' || l.startsWith('='))) {
        throw new InvalidConfigError('labelFilter', opts.labelFilter, 'must be an array of "key" or "key=value" strings');
      }
      this.labelFilter = [...opts.labelFilter];
    }
    this.onPass = opts.onPass;
    const rc = opts.removeConcurrency ?? 4;
    if (typeof rc !== 'number' || !Number.isInteger(rc) || rc < 1) throw new InvalidConfigError('removeConcurrency', rc, 'must be a positive integer');
    this.removeConcurrency = rc;
  }

  /** Delay before the first pass: max(period, grace), leaving a restarted agent time to recover its tasks. */
  get initialDelayMs(): number {
    return Math.max(this.periodMs, this.creationGraceMs);
  }

  /** True while the periodic loop is scheduled. */
  get running(): boolean {
    return this.started && !this.stopped;
  }

  /** Number of passes the loop has attempted (skipped ones included). */
  get passCount(): number {
    return this.passes;
  }

  /** Starts the periodic loop (first pass after max(period, grace)). Idempotent; no-op when disabled or stopped. */
  start(): void {
    if (!this.enabled) {
      this.logger.debug('dangling container reconciler is disabled');
      return;
    }
    if (this.started || this.stopped) return;
    if (this.signal?.aborted) {
      this.stopped = true;
      return;
    }
    this.started = true;
    if (this.signal) {
      this.onAbort = () => this.stop();
      this.signal.addEventListener('abort', this.onAbort, { once: true });
    }
    this.schedule(this.initialDelayMs);
  }

  /** Stops the loop for good: clears the timer, aborts a pass in flight, drops the signal listener. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    for (const ac of this.passAborts) ac.abort();
    this.passAborts.clear();
    if (this.onAbort) this.signal?.removeEventListener('abort', this.onAbort);
    this.onAbort = undefined;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    const h = this.clock.setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, ms);
    (h as { unref?: () => void })?.unref?.();
    this.timer = h;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.passes++;
    try {
      const r = await this.runOnce();
      if (r.ran) this.lastPassSucceeded = true;
      if (r.ran && this.onPass) {
        try { this.onPass(r); } catch { /* the listener's problem */ }
      }
    } catch (err) {
      if (!this.stopped) {
        if (this.lastPassSucceeded) {
          this.logger.warn('failed to remove dangling containers', { error: (err as Error)?.message ?? String(err) });
        } else {
          this.logger.debug('dangling container pass failed again', { error: (err as Error)?.message ?? String(err) });
        }
        this.lastPassSucceeded = false;
      }
    }
    this.schedule(this.periodMs);
  }

  /**
   * One pass now. Skipped (ran: false) when the driver is not healthy. Rejects when listing fails;
   * a failed removal is reported in `failed` and does not fail the pass.
   */
  async runOnce(): Promise<ReconcilePassResult> {
    const result: ReconcilePassResult = { ran: false, dryRun: this.dryRun, listed: 0, dangling: [], removed: [], failed: [], optInMatches: [] };
    if (this.stopped && this.started) return { ...result, skippedReason: 'reconciler stopped' };
    let healthy: boolean;
    try {
      healthy = await this.healthy();
    } catch (err) {
      healthy = false;
      this.logger.debug('driver health check failed', { error: String((err as Error)?.message ?? err) });
    }
    if (!healthy) {
      this.logger.debug('skipping dangling container pass: driver is not healthy');
      return { ...result, skippedReason: 'driver is not healthy' };
    }
    const ac = new AbortController();
    this.passAborts.add(ac);
    try {
      const cutoff = this.clock.now() - this.creationGraceMs;
      const tracked = new Set(await this.tracked());
      const list = await bounded('list containers', this.callTimeoutMs, ac.signal,
        (signal) => this.docker.listContainers(this.labelFilter
          ? { all: false, filters: { label: this.labelFilter }, abortSignal: signal }
          : { all: false, abortSignal: signal }));
      result.ran = true;
      result.listed = list.length;
      for (const c of list) {
        if (tracked.has(c.Id)) continue;
        const createdAt = (c.Created ?? 0) * 1000;
        if (createdAt > cutoff) continue;
        const rule = matchingRule(c, this.agentId);
        if (!rule) continue;
        const how = ownership(c, this.agentId, this);
        const labels = c.Labels ?? {};
        const d: DanglingContainer = {
          id: c.Id,
          name: (c.Names?.[0] ?? '').replace(/^\//, ''),
          createdAt,
          image: c.Image,
          matchedBy: rule,
        };
        if (labels[LABEL_ALLOC_ID] !== undefined) d.allocId = labels[LABEL_ALLOC_ID];
        if (labels[LABEL_TASK_NAME] !== undefined) d.taskName = labels[LABEL_TASK_NAME];
        if (labels[LABEL_TASK_ID] !== undefined) d.taskId = labels[LABEL_TASK_ID];
        if (labels[LABEL_AGENT_ID] !== undefined) d.agentId = labels[LABEL_AGENT_ID];
        (how ? result.dangling : result.optInMatches).push(d);
      }
      if (result.optInMatches.length > 0) {
        this.logger[this.dryRun ? 'info' : 'debug']('untracked containers left alone: only an opt-in ownership rule that is off would match them', {
          containers: result.optInMatches.map((d) => `${d.id.slice(0, 12)} ${d.name} (${d.matchedBy})`),
        });
      }
      if (result.dangling.length === 0) return result;
      if (this.dryRun) {
        this.logger.info('detected untracked containers (dry run, not removed)', { containers: result.dangling.map((d) => `${d.id.slice(0, 12)} ${d.name}`) });
        return result;
      }
      let next = 0;
      const worker = async () => {
        while (next < result.dangling.length && !ac.signal.aborted) {
          const d = result.dangling[next++]!;
          try {
            await bounded('remove container', this.callTimeoutMs, ac.signal,
              (signal) => this.docker.getContainer(d.id).remove({ force: true, v: true, abortSignal: signal }));
            result.removed.push(d);
            this.logger.info('removed untracked container', { containerId: d.id, name: d.name, matchedBy: d.matchedBy });
          } catch (err) {
            const msg = (err as Error)?.message ?? String(err);
            result.failed.push({ container: d, error: msg });
            this.logger.warn('failed to remove untracked container', { containerId: d.id, name: d.name, error: msg });
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.removeConcurrency, result.dangling.length) }, worker));
      return result;
    } finally {
      this.passAborts.delete(ac);
    }
  }
}
