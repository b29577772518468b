/**
 * `corral fingerprint [--json]`: what the driver detects on this host, told truthfully: raw_exec is
 * unhealthy when this user cannot create groups under the cgroup parent (as `run` would then fail),
 * docker shows the state dir's real agent id, and nothing is written anywhere.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Fingerprint } from '../drivers/contract.js';
import { DriverUnavailableError } from '../errors.js';
import { DEFAULT_STATE_DIR } from '../store/task-store.js';
import { createCliDriver, parseDriverKind } from './drivers.js';
import { parseCommand } from './argv.js';
import { reportError } from './errors.js';
import type { RunIo } from './run.js';

export const FINGERPRINT_HELP = `Usage: corral fingerprint [--json] [--driver raw_exec|docker] [--no-cgroups] [--cgroup-parent NAME] [--state-dir DIR]

Prints the driver's health and attributes on this host (driver.raw_exec, unique.cgroups.version,
cgroups.mode, controllers, cores; docker: the agent id of the state directory). raw_exec is
unhealthy when this user cannot create groups under the cgroup parent. Writes nothing.
Exits 0 when healthy, 1 otherwise.

Options:
  --json                one JSON object on stdout
  --driver KIND         raw_exec (default) or docker
  --no-cgroups          fingerprint raw_exec as it would run with cgroups off
  --cgroup-parent NAME  cgroup parent to check
  --state-dir DIR       the state directory whose agent id docker reports (default ${DEFAULT_STATE_DIR})
  -h, --help            this help
`;

/** Placeholder given to the docker driver when the state dir has no agent id yet (so it does not create one). */
const NO_AGENT_ID = 'none-yet';

function readAgentId(stateDir: string): string | undefined {
  try {
    const s = fs.readFileSync(path.join(stateDir, 'agent-id'), 'utf8').trim();
    return s === '' ? undefined : s;
  } catch {
    return undefined;
  }
}

/** The deepest existing directory on the way to `dir` (where a mkdir would happen). */
function existingAncestor(dir: string): string {
  let d = dir;
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}

/**
 * Why this user cannot create task groups under the parent, or undefined. v2: the parent under the
 * cgroup2 root; v1: the parent under each controller's mount. Root passes access(2) anyway.
 */
export function cgroupWriteProblem(attrs: Fingerprint['attributes']): string | undefined {
  const root = attrs['cgroups.root'];
  const parent = attrs['driver.raw_exec.cgroup_parent'];
  if (typeof root !== 'string' || typeof parent !== 'string') return undefined;
  const dirs = attrs['unique.cgroups.version'] === 'v2'
    ? [path.join(root, parent)]
    : String(attrs['cgroups.controllers'] ?? '').split(',').filter(Boolean).map((c) => path.join(root, c, parent));
  for (const d of dirs) {
    const at = existingAncestor(d);
    try {
      fs.accessSync(at, fs.constants.W_OK);
    } catch (err) {
      const uid = process.getuid?.();
      return `uid ${uid} cannot create cgroups under ${d}${at !== d ? ` (${at} is not writable)` : ''}: ${(err as NodeJS.ErrnoException).code}; run as root or give this user a delegated parent (--cgroup-parent)`;
    }
  }
  return undefined;
}

export async function fingerprintCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    const parsed = parseCommand(argv, {
      json: { type: 'boolean' }, driver: { type: 'string' }, 'no-cgroups': { type: 'boolean' }, 'cgroup-parent': { type: 'string' },
      'state-dir': { type: 'string' },
    }, FINGERPRINT_HELP, io);
    if (!parsed) return 0;
    const v = parsed.values;
    const kind = parseDriverKind(v.driver);
    const stateDir = v['state-dir'] ?? DEFAULT_STATE_DIR;
    const agentId = kind === 'docker' ? readAgentId(stateDir) : undefined;
    const driver = createCliDriver(kind, {
      stateDir, noCgroups: !!v['no-cgroups'],
      ...(v['cgroup-parent'] !== undefined ? { cgroupParent: v['cgroup-parent'] } : {}),
      ...(kind === 'docker' ? { agentId: agentId ?? NO_AGENT_ID } : {}),
    });
    try {
      const ac = new AbortController();
      let fp: Fingerprint | undefined;
      for await (const f of driver.fingerprint({ signal: ac.signal })) {
        fp = f;
        ac.abort();
        break;
      }
      if (!fp) throw new DriverUnavailableError(kind, 'it gave no fingerprint');
      if (kind === 'raw_exec' && fp.health === 'healthy' && fp.attributes['driver.raw_exec.cgroups'] === 'on') {
        const why = cgroupWriteProblem(fp.attributes);
        if (why) fp = { ...fp, health: 'unhealthy', healthDescription: why };
      }
      if (kind === 'docker') {
        fp = { ...fp, attributes: { ...fp.attributes, 'driver.docker.agent_id': agentId ?? `(none yet: created in ${path.join(stateDir, 'agent-id')} by the first docker task)` } };
      }
      if (v.json) {
        io.stdout.write(JSON.stringify({ driver: driver.name, ...fp }) + '\n');
      } else {
        const desc = fp.healthDescription && fp.healthDescription !== fp.health ? ` (${fp.healthDescription})` : '';
        io.stdout.write(`driver: ${driver.name}\nhealth: ${fp.health}${desc}\n`);
        for (const k of Object.keys(fp.attributes).sort()) io.stdout.write(`${k} = ${String(fp.attributes[k])}\n`);
      }
      return fp.health === 'healthy' ? 0 : 1;
    } finally {
      await driver.shutdown();
    }
  } catch (err) {
    return reportError(err, io.stderr);
  }
}
