/** CLI error reporting: one line on stderr, exit 2 for usage errors, 1 otherwise. */
import { CorralError, InvalidConfigError } from '../errors.js';

/** A mistake in how corral was invoked (bad flag, missing value): exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const EXIT_USAGE = 2;

/** Prints the error as one line and returns the exit code for it. */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  const e = err as Error & { code?: string };
  let msg = e && typeof e.message === 'string' ? e.message : String(err);
  msg = msg.split('\n')[0]!.trim();
  if (err instanceof UsageError) {
    stderr.write(`corral: ${msg} (see --help)\n`);
    return EXIT_USAGE;
  }
  if (err instanceof InvalidConfigError) {
    stderr.write(`corral: ${msg}\n`);
    return EXIT_USAGE;
  }
  const code = err instanceof CorralError || (e && typeof e.code === 'string') ? ` [${e.code}]` : '';
  stderr.write(`corral: ${msg}${code}\n`);
  return 1;
}

/** Wraps node:util parseArgs errors (unknown option, missing value) into UsageErrors. */
export function usageFromParseArgs(err: unknown): never {
  const e = err as Error & { code?: string };
  if (e && typeof e.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) throw new UsageError(e.message.split('\n')[0]!);
  throw err;
}
