/**
 * CLI error reporting: one line on stderr, in the user's terms (the flag they typed and its value),
 * and an exit code in the convention of env(1), timeout(1) and docker run: 125 when corral itself
 * failed (usage, config, set-up), 126 when the command exists but cannot be run, 127 when it does
 * not exist. Every other code is the task's own (128+n when signal n ended it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CorralError, InvalidConfigError } from '../errors.js';

export const EXIT_USAGE = 125;
export const EXIT_CANNOT_RUN = 126;
export const EXIT_NOT_FOUND = 127;

/** A mistake in how corral was invoked (bad flag, missing value): exit code 125. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The task's command could not be started: 126 (exists, cannot run) or 127 (not found). */
export class CommandError extends Error {
  constructor(message: string, readonly exitCode: typeof EXIT_CANNOT_RUN | typeof EXIT_NOT_FOUND) {
    super(message);
    this.name = 'CommandError';
  }
}

/** How a config field reads on the command line: the flag, and the text the user typed for it. */
export type FlagNames = Record<string, { flag: string; typed?: string | undefined }>;

/** The reason part of an InvalidConfigError ("invalid <field> <value>: <reason>"). */
function reasonOf(e: InvalidConfigError): string {
  const exact = `invalid ${e.field} ${JSON.stringify(e.value)}: `;
  if (e.message.startsWith(exact)) return e.message.slice(exact.length);
  const head = `invalid ${e.field} `;
  const i = e.message.indexOf(': ', head.length);
  return i >= 0 && e.message.startsWith(head) ? e.message.slice(i + 2) : e.message;
}

/** Rewrites a library error into the user's terms, using the flag that set the field. */
export function inUserTerms(err: unknown, flags: FlagNames = {}): unknown {
  if (!(err instanceof InvalidConfigError)) return err;
  const key = flags[err.field] ? err.field : Object.keys(flags).find((k) => err.field.startsWith(`${k}.`) || err.field.startsWith(`${k}[`));
  if (key === undefined) return err;
  const f = flags[key]!;
  const value = f.typed !== undefined ? f.typed : err.value;
  return new UsageError(`${f.flag} ${JSON.stringify(value)}: ${reasonOf(err)}`);
}

/** Is there a file by this name where the command would be looked for (PATH, or the path itself)? */
function commandExists(command: string, cwd: string, pathVar: string): boolean {
  if (command.includes('/')) return fs.existsSync(path.resolve(cwd, command));
  return pathVar.split(':').some((d) => d !== '' && path.isAbsolute(d) && fs.existsSync(path.join(d, command)));
}

/**
 * Classifies a failed start: the command not found (127) or not runnable (126), else unchanged.
 * `where` is what the driver searched: the cwd and the task's PATH.
 */
export function commandFailure(err: unknown, command: string, where: { cwd: string; path: string; user?: string | undefined }): unknown {
  const e = err as NodeJS.ErrnoException & { field?: string };
  const asUser = where.user !== undefined ? ` as user ${JSON.stringify(where.user)}` : '';
  if (err instanceof InvalidConfigError && err.field === 'driver.command') {
    const exists = commandExists(command, where.cwd, where.path);
    return new CommandError(`command ${JSON.stringify(command)}: ${reasonOf(err)}`, exists ? EXIT_CANNOT_RUN : EXIT_NOT_FOUND);
  }
  if (e && e.syscall === 'execve') {
    if (e.code === 'ENOENT') {
      // The file exists (it was resolved) but its interpreter (#! line) or loader does not.
      return new CommandError(`command ${JSON.stringify(command)}: ${e.path ?? command} or its interpreter does not exist (ENOENT)`, EXIT_NOT_FOUND);
    }
    const hint = e.code === 'EACCES' && where.user !== undefined
      ? `; a directory on the way may not be searchable${asUser} (give it a PATH it can use: --env PATH=/usr/local/bin:/usr/bin:/bin)`
      : '';
    return new CommandError(`command ${JSON.stringify(command)}: cannot run ${e.path ?? command}${asUser}: ${e.code}${hint}`, EXIT_CANNOT_RUN);
  }
  // Docker reports a missing or unrunnable entrypoint in its start error.
  if (err instanceof CorralError && err.code === 'ERR_DOCKER') {
    if (/executable file not found|no such file or directory/i.test(err.message)) return new CommandError(err.message, EXIT_NOT_FOUND);
    if (/permission denied/i.test(err.message)) return new CommandError(err.message, EXIT_CANNOT_RUN);
  }
  return err;
}

/** Prints the error as one line and returns the exit code for it. */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  const e = err as Error & { code?: string };
  let msg = e && typeof e.message === 'string' ? e.message : String(err);
  msg = msg.split('\n')[0]!.trim();
  if (err instanceof UsageError) {
    stderr.write(`corral: ${msg} (see --help)\n`);
    return EXIT_USAGE;
  }
  if (err instanceof CommandError) {
    stderr.write(`corral: ${msg}\n`);
    return err.exitCode;
  }
  const code = err instanceof CorralError || (e && typeof e.code === 'string') ? ` [${e.code}]` : '';
  stderr.write(`corral: ${msg}${code}\n`);
  return EXIT_USAGE;
}

/** Wraps node:util parseArgs errors (unknown option, missing value) into UsageErrors. */
export function usageFromParseArgs(err: unknown): never {
  const e = err as Error & { code?: string };
  if (e && typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) throw new UsageError(e.message.split('\n')[0]!);
  throw err;
}
