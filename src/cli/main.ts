/** The `corral` command: run | ps | stop | kill | stats | gc | fingerprint | reconcile. bin/corral.js calls main(). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CorralError } from '../errors.js';
import { reportError, UsageError, EXIT_USAGE } from './errors.js';
import { fingerprintCommand } from './fingerprint.js';
import { killCommand, statsCommand, stopCommand } from './manage.js';
import { psCommand } from './ps.js';
import { type RunIo, runCommand } from './run.js';
import { guardDebugSignal } from './signal-relay.js';

export const MAIN_HELP = `Usage: corral <command> [options]
       corral --version

Linux process and container control: tasks in their own cgroups, through the raw_exec and docker drivers.

Commands:
  run [options] CMD [ARGS...]   run one task on this terminal; exits with its exit code
  ps [--json]                   tasks in the state directory: state, pid, CPU, memory, age, command
  stop ID                       stop a task (its kill signal, then its group killed after a timeout)
  kill ID [--signal SIG]        send a signal to a task
  stats ID [--json]             a task's CPU and memory, live
  gc [--dry-run]                destroy the tasks whose corral process died
  fingerprint [--json]          what the driver detects here (health, cgroups version, ...)
  reconcile [options]           find (and remove) docker containers no corral agent tracks

Exit status of corral itself: 0 ok, 125 usage or set-up error (run: 126 the command cannot be run,
127 not found, otherwise the task's own status). Run \`corral <command> --help\` for a command's options.
`;

type Command = (argv: string[], io: RunIo) => Promise<number>;

function lazy(file: string, exportName: string): Command {
  // Loaded on use: the docker side (dockerode) is only loaded for the commands that need it.
  return (argv, io) => {
    let mod: Record<string, unknown>;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      mod = require(file) as Record<string, unknown>;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(file.slice(2))) throw new CorralError('ERR_INCOMPLETE_INSTALL', `this build of corral has no ${exportName} (an incomplete install: reinstall corral)`);
      throw err;
    }
    const f = mod[exportName];
    if (typeof f !== 'function') throw new CorralError('ERR_INCOMPLETE_INSTALL', `this build of corral has no ${exportName} (an incomplete install: reinstall corral)`);
    return (f as Command)(argv, io);
  };
}

const COMMANDS: Record<string, Command> = {
  run: (a, io) => runCommand(a, io),
  ps: (a, io) => psCommand(a, io),
  stop: (a, io) => stopCommand(a, io),
  kill: (a, io) => killCommand(a, io),
  stats: (a, io) => statsCommand(a, io),
  gc: lazy('./gc.js', 'gcCommand'),
  fingerprint: (a, io) => fingerprintCommand(a, io),
  reconcile: lazy('./reconcile.js', 'reconcileCommand'),
};

/** corral's version, from the package.json beside src/ (sources) or dist/ (built). */
export function version(): string {
  for (const p of [path.join(__dirname, '..', '..', 'package.json'), path.join(__dirname, '..', '..', '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'corral' && pkg.version) return pkg.version;
    } catch {
      /* try the next */
    }
  }
  return 'unknown';
}

/** Runs the CLI; resolves with the exit code. `io` defaults to the process's stdout/stderr. */
export async function main(argv: string[], io: RunIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  if (!io.inProcess) guardDebugSignal();
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    io.stdout.write(`corral ${version()} (node ${process.version}, ${process.platform}-${process.arch})\n`);
    return 0;
  }
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
