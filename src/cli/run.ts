/** `corral run [options] CMD [ARGS...]`: the options, checked and turned into a task; execution is in run-exec.ts. */
import { randomUUID } from 'node:crypto';
import { parseCpuList } from '../cgroups/cpulist.js';
import { validateAllocId, validateTaskName } from '../cgroups/names.js';
import type { TaskResources } from '../cgroups/types.js';
import { DEFAULT_PATH } from '../drivers/raw_exec/config.js';
import { parseSignal } from '../signals.js';
import { DEFAULT_STATE_DIR } from '../store/task-store.js';
import { parseDurationMs, parseSizeBytes } from '../util/units.js';
import { type OptionTable, parseOptions, splitCommand } from './argv.js';
import { parseDriverKind } from './drivers.js';
import { type FlagNames, UsageError, inUserTerms, reportError } from './errors.js';
import { execute } from './run-exec.js';

export const RUN_HELP = `Usage: corral run [options] CMD [ARGS...]
       corral run [options] -- CMD [ARGS...]

Runs one task (raw_exec: CMD on this host, in its own cgroup) with this terminal's stdin, stdout and
stderr, and exits with its exit code. The first word that is not an option starts the command (so
\`corral run ls -la\` runs \`ls -la\`); \`--\` also ends corral's options.

Exit status: the task's own code; 128+n when signal n ended it; 125 when corral itself failed (usage,
config, set-up); 126 when the command exists but cannot be run; 127 when it does not exist.

Signals: the first SIGINT (Ctrl-C) or SIGTERM stops the task gracefully (the kill signal, then after
the kill timeout a kill of its whole group); a second one kills it at once. SIGHUP, SIGQUIT,
SIGUSR1, SIGUSR2 and SIGCONT are passed to the task unchanged. When corral returns, no process and
no cgroup of the task remain.

Options:
  -t, --tty             give the task a pseudo-terminal as its controlling terminal (raw_exec;
                        refused with --driver docker, which passes stdin without a terminal)
  --summary             at the end, one line on stderr: exit status, duration, peak memory, CPU,
                        OOM kills, forks refused at --pids-max (printed anyway when one of its
                        processes was OOM-killed, it hit --pids-max, or corral killed it)
  --cores LIST          reserve these cores for the task ("0", "2-3", "0,2")
  --cpu-shares N        relative CPU weight (2..262144)
  --memory SIZE         hard memory limit, e.g. 256M, 1G
  --pids-max N          max processes/threads in the task
  --env K=V             environment variable (repeatable). The task gets PATH and these only,
                        unless --inherit-env
  --inherit-env         pass corral's own environment to the task (under the --env values)
  --cwd DIR             working directory (default: the current one)
  --user USER           run as USER (name, uid, or user:group); the task's PATH is corral's, so
                        give one that USER can search if yours points into a private home:
                        --env PATH=/usr/local/bin:/usr/bin:/bin
  --kill-signal SIG     signal for a graceful stop (default SIGTERM; TERM, sigint, 2 also accepted)
  --kill-timeout DUR    grace before the group kill, e.g. 5s, 500ms (default 5s)
  --name NAME           task name (default: "run")
  --alloc-id UUID       allocation id (default: a new UUID)
  --no-cgroups          track the task by session/process group instead of a cgroup (no limits)
  --cgroup-parent NAME  cgroup parent (default corral, or corral.slice on cgroups v2)
  --state-dir DIR       where the task's record is kept while it runs (default ${DEFAULT_STATE_DIR})
  --driver KIND         raw_exec (default) or docker
  --image IMAGE         docker: the image (CMD then overrides its command)
  --json                at the end, print {"exitResult", "peak", "durationMs"} as JSON on stdout
                        (the task's stdout then goes to stderr, so stdout holds only the JSON)
  -h, --help            this help
`;

const OPTIONS = {
  tty: { type: 'boolean', short: 't' },
  summary: { type: 'boolean' },
  cores: { type: 'string' },
  'cpu-shares': { type: 'string' },
  memory: { type: 'string' },
  'pids-max': { type: 'string' },
  env: { type: 'string', multiple: true },
  'inherit-env': { type: 'boolean' },
  cwd: { type: 'string' },
  user: { type: 'string' },
  'kill-signal': { type: 'string' },
  'kill-timeout': { type: 'string' },
  name: { type: 'string' },
  'alloc-id': { type: 'string' },
  'no-cgroups': { type: 'boolean' },
  'cgroup-parent': { type: 'string' },
  'state-dir': { type: 'string' },
  driver: { type: 'string' },
  image: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies OptionTable;

/** Flags refused with --driver docker: they would be silently meaningless there. */
const NOT_FOR_DOCKER: [keyof typeof OPTIONS, string][] = [
  ['cwd', 'the container runs in the image\'s working directory'],
  ['inherit-env', 'a container gets only the --env values'],
  ['no-cgroups', 'docker always runs a container in a cgroup'],
  ['tty', 'the docker driver gives a container no terminal (corral\'s stdin is passed to it, so pipes work)'],
];

function intFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v.trim())) throw new UsageError(`--${name} ${JSON.stringify(v)}: must be a whole number`);
  return Number(v);
}

export interface RunIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Set by tests that call main() in-process: the task's stdin is then /dev/null, and no signal handlers are installed. */
  inProcess?: boolean;
}

export async function runCommand(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let v;
  let words: string[];
  try {
    const split = splitCommand(argv, OPTIONS, 'run');
    v = parseOptions(split.options, OPTIONS);
    words = split.command;
  } catch (err) {
    return reportError(err, io.stderr);
  }
  if (v.help) {
    io.stdout.write(RUN_HELP);
    return 0;
  }
  // Each config field the user set, with the flag and the exact text typed for it.
  const flags: FlagNames = {
    'resources.memoryBytes': { flag: '--memory', typed: v.memory },
    'resources.cores': { flag: '--cores', typed: v.cores },
    'resources.cpuShares': { flag: '--cpu-shares', typed: v['cpu-shares'] },
    'resources.pidsMax': { flag: '--pids-max', typed: v['pids-max'] },
    'driver.workDir': { flag: '--cwd', typed: v.cwd },
    user: { flag: '--user', typed: v.user },
    env: { flag: '--env' },
    stateDir: { flag: '--state-dir', typed: v['state-dir'] },
    cgroupParent: { flag: '--cgroup-parent', typed: v['cgroup-parent'] },
    allocId: { flag: '--alloc-id', typed: v['alloc-id'] },
    name: { flag: '--name', typed: v.name },
    'driver.image': { flag: '--image', typed: v.image },
    killSignal: { flag: '--kill-signal', typed: v['kill-signal'] },
  };
  try {
    const kind = parseDriverKind(v.driver);
    const [command, ...args] = words;
    if (command === undefined && kind === 'raw_exec') throw new UsageError('missing the command to run: corral run [options] CMD [ARGS...]');
    if (v.image !== undefined && kind !== 'docker') throw new UsageError('--image needs --driver docker');
    if (kind === 'docker') {
      for (const [flag, why] of NOT_FOR_DOCKER) if (v[flag] !== undefined) throw new UsageError(`--${flag} does not apply to --driver docker: ${why}`);
    }
    const env: Record<string, string> = kind === 'docker' ? {} : { PATH: process.env.PATH || DEFAULT_PATH };
    for (const kv of v.env ?? []) {
      const i = kv.indexOf('=');
      if (i <= 0) throw new UsageError(`--env ${JSON.stringify(kv)}: must be KEY=VALUE`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const resources: TaskResources = {};
    if (v.cores !== undefined) resources.cores = parseCpuList(v.cores, 'resources.cores');
    const shares = intFlag('cpu-shares', v['cpu-shares']);
    if (shares !== undefined) resources.cpuShares = shares;
    if (v.memory !== undefined) {
      const m = parseSizeBytes(v.memory);
      if (m === undefined) throw new UsageError(`--memory ${JSON.stringify(v.memory)}: must be a size like 256M or 1G`);
      resources.memoryBytes = m;
    }
    const pids = intFlag('pids-max', v['pids-max']);
    if (pids !== undefined) resources.pidsMax = pids;
    const killSignal = parseSignal(v['kill-signal'] ?? 'SIGTERM', 'killSignal').name;
    const kt = v['kill-timeout'] === undefined ? 5000 : parseDurationMs(v['kill-timeout']);
    if (kt === undefined) throw new UsageError(`--kill-timeout ${JSON.stringify(v['kill-timeout'])}: must be a duration like 5s or 500ms`);
    const allocId = validateAllocId(v['alloc-id'] ?? randomUUID(), 'allocId');
    const name = validateTaskName(v.name ?? 'run', 'name');
    const spec = {
      id: `${allocId}-${name}`, allocId, name, env, ...(v.user !== undefined ? { user: v.user } : {}), cwd: v.cwd ?? process.cwd(),
      command: command ?? '', args, ...(v.image !== undefined ? { image: v.image } : {}), inheritEnv: !!v['inherit-env'], json: !!v.json, resources,
      tty: !!v.tty,
    };
    return await execute(kind, spec, {
      killSignal, killTimeoutMs: kt, stateDir: v['state-dir'], noCgroups: !!v['no-cgroups'], cgroupParent: v['cgroup-parent'], json: !!v.json,
      summary: !!v.summary, flags,
    }, io);
  } catch (err) {
    return reportError(inUserTerms(err, flags), io.stderr);
  }
}
