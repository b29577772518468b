/** `corral fingerprint [--json]`: what the driver detects on this host (health and attributes). */
import { parseArgs } from 'node:util';
import * as os from 'node:os';
import * as path from 'node:path';
import { createCliDriver, parseDriverKind } from './drivers.js';
import { reportError, usageFromParseArgs } from './errors.js';
import type { RunIo } from './run.js';

export const FINGERPRINT_HELP = `Usage: corral fingerprint [--json] [--driver raw_exec|docker] [--no-cgroups]

Prints the driver's health and attributes on this host (driver.raw_exec, unique.cgroups.version,
cgroups.mode, controllers, cores). Exits 0 when healthy, 1 otherwise.

Options:
  --json                one JSON object on stdout
  --driver KIND         raw_exec (default) or docker
  --no-cgroups          fingerprint raw_exec as it would run with cgroups off
  --cgroup-parent NAME  cgroup parent to report
  -h, --help            this help
`;

export async function fingerprintCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        options: {
          json: { type: 'boolean' }, driver: { type: 'string' }, 'no-cgroups': { type: 'boolean' }, 'cgroup-parent': { type: 'string' },
          help: { type: 'boolean', short: 'h' },
        },
        strict: true,
      });
    } catch (err) {
      usageFromParseArgs(err);
    }
    const v = parsed.values;
    if (v.help) {
      io.stdout.write(FINGERPRINT_HELP);
      return 0;
    }
    const kind = parseDriverKind(v.driver);
    // Fingerprinting touches no state: a throwaway state dir keeps it read-only.
    const driver = createCliDriver(kind, {
      stateDir: path.join(os.tmpdir(), 'corral-fingerprint'), noCgroups: !!v['no-cgroups'],
      ...(v['cgroup-parent'] !== undefined ? { cgroupParent: v['cgroup-parent'] } : {}),
    });
    try {
      const ac = new AbortController();
      let fp;
      for await (const f of driver.fingerprint({ signal: ac.signal })) {
        fp = f;
        ac.abort();
        break;
      }
      if (!fp) throw new Error('the driver gave no fingerprint');
      if (v.json) {
        io.stdout.write(JSON.stringify({ driver: driver.name, ...fp }) + '\n');
      } else {
        io.stdout.write(`driver: ${driver.name}\nhealth: ${fp.health} (${fp.healthDescription})\n`);
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
