/** The `corral` command: run | fingerprint | ps | reconcile. bin/corral.js calls main(). */
import { reportError, UsageError, EXIT_USAGE } from './errors.js';
import { fingerprintCommand } from './fingerprint.js';
import { psCommand } from './ps.js';
import { type RunIo, runCommand } from './run.js';

export const MAIN_HELP = `Usage: corral <command> [options]

Linux process and container control: tasks in their own cgroups, through the raw_exec and docker drivers.

Commands:
  run [options] -- CMD [ARGS...]   run one task on this terminal; exits with its exit code
  fingerprint [--json]             what the driver detects here (health, cgroups version, ...)
  ps [--json]                      tasks in the state directory and their states
  reconcile [options]              find (and remove) docker containers no corral agent tracks

Run \`corral <command> --help\` for a command's options.
`;

type Command = (argv: string[], io: RunIo) => Promise<number>;

function reconcile(argv: string[]): Promise<number> {
  // Loaded lazily: the docker side (dockerode) is only loaded for this command.
  const modPath = './reconcile.js';
  let mod: { reconcileCommand?: (argv: string[]) => Promise<number> };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(modPath) as { reconcileCommand?: (argv: string[]) => Promise<number> };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('reconcile')) throw new Error('corral reconcile is not available in this build');
    throw err;
  }
  if (typeof mod.reconcileCommand !== 'function') throw new Error('corral reconcile is not available in this build');
  return mod.reconcileCommand(argv);
}

const COMMANDS: Record<string, Command> = {
  run: (a, io) => runCommand(a, io),
  fingerprint: (a, io) => fingerprintCommand(a, io),
  ps: (a, io) => psCommand(a, io),
  reconcile: (a) => reconcile(a),
};

/** Runs the CLI; resolves with the exit code. `io` defaults to the process's stdout/stderr. */
export async function main(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    if (cmd === 'help' && rest[0] && Object.prototype.hasOwnProperty.call(COMMANDS, rest[0])) return COMMANDS[rest[0]]!(['--help'], io);
    (cmd === undefined ? io.stderr : io.stdout).write(MAIN_HELP);
    return cmd === undefined ? EXIT_USAGE : 0;
  }
  const run = Object.prototype.hasOwnProperty.call(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!run) return reportError(new UsageError(`unknown command ${JSON.stringify(cmd)} (commands: ${Object.keys(COMMANDS).join(', ')})`), io.stderr);
  try {
    return await run(rest, io);
  } catch (err) {
    return reportError(err, io.stderr);
  }
}
