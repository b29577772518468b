/**
 * `corral reconcile`: finds running docker containers that are provably this agent's (its
 * io.corral.agent_id; two looser rules only when asked for), that no task in the state dir tracks,
 * and that are older than the creation grace; removes them (or, with --dry-run, only lists them).
 */
import { DEFAULT_STATE_DIR, TaskStore } from '../store/task-store.js';
import { parseDurationMs } from '../util/units.js';
import { createDockerClient } from '../drivers/docker/client.js';
import { loadOrCreateAgentId } from '../util/agent-id.js';
import type { Logger } from '../util/logger.js';
import {
  DanglingContainerReconciler, DEFAULT_CREATION_GRACE_MS, DEFAULT_RECONCILE_PERIOD_MS, type DanglingContainer, type ReconcilePassResult,
} from '../drivers/docker/reconcile_dangling.js';
import { parseCommand } from './argv.js';
import { reportError, UsageError } from './errors.js';

export const RECONCILE_HELP = `Usage: corral reconcile [--once] [--dry-run] [--period 5m] [--creation-grace 5m] [--json]
                       [--state-dir DIR] [--agent-id ID] [--endpoint URL] [--label K[=V]]...
                       [--unsafe-match-alloc-id-only] [--unsafe-match-nomad-shaped]

Removes docker containers that are this agent's but that no task in the state directory tracks
(Nomad's dangling-container reconciler). A container is this agent's when it carries
io.corral.alloc_id and io.corral.agent_id = this agent's id (corral has always set both). Only
running containers created more than --creation-grace ago are considered. Containers of other
agents are never touched.

Two looser rules are off unless asked for, because another orchestrator sharing this dockerd makes
exactly the containers they match; without them, such containers are listed as "left alone" (in
JSON: optInMatches, with the rule in matchedBy), so you can see what a rule would remove first:
  --unsafe-match-alloc-id-only  also containers with io.corral.alloc_id but no agent id at all
  --unsafe-match-nomad-shaped   also unlabelled containers that mount /alloc, /local and /secrets
                                and whose name ends in -<uuid> (Nomad's heuristic: a Nomad client
                                on this dockerd creates exactly those)

Without --once it runs until SIGINT/SIGTERM: the first pass after max(period, grace), then one
pass every period, each only while Docker answers.

Options:
  --once                one pass now, then exit (0: done, 1: Docker unreachable or a removal failed)
  --dry-run             list what would be removed, remove nothing
  --period DUR          time between passes (default 5m)
  --creation-grace DUR  leave containers younger than this alone (default 5m; 0 = none)
  --json                one JSON object per pass on stdout
  --state-dir DIR       state directory whose tasks count as tracked (default ${DEFAULT_STATE_DIR});
                        its agent-id file gives this agent's id
  --agent-id ID         this agent's id (instead of <state-dir>/agent-id)
  --endpoint URL        Docker endpoint (default DOCKER_HOST, else unix:///var/run/docker.sock)
  --label K[=V]         only consider containers with this label (repeatable)
  --unsafe-match-alloc-id-only, --unsafe-match-nomad-shaped   see above (DANGEROUS; default off)
  -h, --help            this help
`;

export interface ReconcileIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Ends the loop (default: SIGINT/SIGTERM). */
  signal?: AbortSignal;
}

const CALL_TIMEOUT_MS = 30_000;

function duration(flag: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const ms = parseDurationMs(v);
  if (ms === undefined || ms < min) throw new UsageError(`${flag} must be ${min > 0 ? 'a positive duration like 30s, 5m, 1h' : 'a duration like 30s, 5m, 1h, or 0'}, not ${JSON.stringify(v)}`);
  return ms;
}

function describe(d: DanglingContainer): string {
  return `${d.id.slice(0, 12)} ${d.name} (${d.matchedBy}${d.allocId ? `, alloc ${d.allocId}` : ''}, created ${new Date(d.createdAt).toISOString()})`;
}

function printPass(io: ReconcileIo, r: ReconcilePassResult, json: boolean): void {
  if (json) {
    io.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...r }) + '\n');
    return;
  }
  if (!r.ran) {
    io.stdout.write(`reconcile: skipped: ${r.skippedReason ?? 'not run'}\n`);
    return;
  }
  for (const d of r.optInMatches) io.stdout.write(`left alone ${describe(d)}: only --unsafe-match-${d.matchedBy === 'heuristic' ? 'nomad-shaped' : 'alloc-id-only'} would remove it\n`);
  if (r.dryRun) {
    for (const d of r.dangling) io.stdout.write(`would remove ${describe(d)}\n`);
  } else {
    for (const d of r.removed) io.stdout.write(`removed ${describe(d)}\n`);
    for (const f of r.failed) io.stdout.write(`failed to remove ${describe(f.container)}: ${f.error.split('\n')[0]}\n`);
  }
  io.stdout.write(`reconcile: ${r.listed} running container(s) listed, ${r.dangling.length} dangling, ` +
    (r.dryRun ? 'dry run: nothing removed\n' : `${r.removed.length} removed${r.failed.length ? `, ${r.failed.length} failed` : ''}\n`));
}

export async function reconcileCommand(argv: string[], io: ReconcileIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    const parsed = parseCommand(argv, {
      once: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, period: { type: 'string' }, 'creation-grace': { type: 'string' },
      json: { type: 'boolean' }, 'state-dir': { type: 'string' }, 'agent-id': { type: 'string' }, endpoint: { type: 'string' },
      label: { type: 'string', multiple: true }, 'unsafe-match-alloc-id-only': { type: 'boolean' }, 'unsafe-match-nomad-shaped': { type: 'boolean' },
    }, RECONCILE_HELP, io);
    if (!parsed) return 0;
    const v = parsed.values;
    const periodMs = duration('--period', v.period, DEFAULT_RECONCILE_PERIOD_MS, 1);
    const graceMs = duration('--creation-grace', v['creation-grace'], DEFAULT_CREATION_GRACE_MS, 0);
    const labels = v.label ?? [];
    for (const l of labels) if (l === '' || l.startsWith('=')) throw new UsageError(`--label must be KEY or KEY=VALUE, not ${JSON.stringify(l)}`);
    const stateDir = v['state-dir'] ?? DEFAULT_STATE_DIR;
    const store = new TaskStore(stateDir);
    if (v['agent-id'] !== undefined && v['agent-id'].trim() === '') throw new UsageError('--agent-id must not be empty');
    const agentId = v['agent-id'] ?? loadOrCreateAgentId(stateDir);
    const docker = createDockerClient(v.endpoint);
    const json = !!v.json;

    const logger: Logger = {
      debug() {},
      info() {},
      warn: (msg, f) => { io.stderr.write(`corral reconcile: ${msg}${f && f.error ? `: ${String(f.error).split('\n')[0]}` : ''}\n`); },
      error: (msg, f) => { io.stderr.write(`corral reconcile: ${msg}${f && f.error ? `: ${String(f.error).split('\n')[0]}` : ''}\n`); },
    };
    const tracked = () => {
      const ids = new Set<string>();
      const { handles, problems } = store.list('docker');
      for (const h of handles) {
        const id = (h.driverState as { containerId?: unknown }).containerId;
        if (typeof id === 'string') ids.add(id);
      }
      for (const p of problems) logger.warn(`unreadable task handle ${p.file} (${p.reason}); its container, if any, is not protected`);
      return ids;
    };
    let unhealthyReason = '';
    const healthy = async () => {
      try {
        const ac = new AbortController();
        const t = setTimeout(() => ac.abort(), Math.min(CALL_TIMEOUT_MS, Math.max(5000, periodMs)));
        try {
          await docker.ping({ abortSignal: ac.signal });
        } finally {
          clearTimeout(t);
        }
        unhealthyReason = '';
        return true;
      } catch (err) {
        unhealthyReason = ac0(err);
        return false;
      }
    };
    const ctl = new AbortController();
    const reconciler = new DanglingContainerReconciler({
      docker, agentId, dryRun: !!v['dry-run'], periodMs, creationGraceMs: graceMs, trackedContainers: tracked,
      unsafeMatchAllocIdOnly: !!v['unsafe-match-alloc-id-only'], unsafeMatchNomadShaped: !!v['unsafe-match-nomad-shaped'],
      isDriverHealthy: healthy, logger, signal: ctl.signal,
      ...(labels.length ? { labelFilter: labels } : {}),
      onPass: (r) => printPass(io, r, json),
    });

    if (v.once) {
      const r = await reconciler.runOnce();
      if (!r.ran) {
        io.stderr.write(`corral reconcile: Docker is not reachable${unhealthyReason ? `: ${unhealthyReason}` : ''}\n`);
        if (json) printPass(io, r, json);
        return 1;
      }
      printPass(io, r, json);
      return r.failed.length ? 1 : 0;
    }

    // Loop until a signal.
    const unsafe = (['unsafe-match-alloc-id-only', 'unsafe-match-nomad-shaped'] as const).filter((f) => v[f]).map((f) => `--${f}`);
    if (!json) io.stderr.write(`corral reconcile: agent ${agentId}, first pass in ${Math.round(reconciler.initialDelayMs / 1000)}s, then every ${Math.round(periodMs / 1000)}s${v['dry-run'] ? ' (dry run)' : ''}` +
      `${unsafe.length ? `; unsafe rules on: ${unsafe.join(', ')}` : ''}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => { ctl.abort(); resolve(); };
      const onSig = () => stop();
      if (io.signal) {
        if (io.signal.aborted) return stop();
        io.signal.addEventListener('abort', stop, { once: true });
      } else {
        process.once('SIGINT', onSig);
        process.once('SIGTERM', onSig);
        ctl.signal.addEventListener('abort', () => { process.off('SIGINT', onSig); process.off('SIGTERM', onSig); }, { once: true });
      }
      reconciler.start();
    });
    return 0;
  } catch (err) {
    return reportError(err, io.stderr);
  }
}

function ac0(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return `${e?.code ? `${e.code}: ` : ''}${String(e?.message ?? err).split('\n')[0]}`;
}
