/**
 * How a process ended, in the contract's terms, once for every driver: a death by signal n is
 * exit code 128+n (as shells and Docker report it), and an event says what happened.
 */
import type { ExitResult } from '../contract.js';
import { signalName } from '../../signals.js';

/** The ExitResult of a reaped process: its exit code, or 128+n with `signal` n. */
export function reapedExit(exitCode: number | null, signal: number | null | undefined, oomKilled = false): ExitResult {
  if (signal !== null && signal !== undefined) return { exitCode: 128 + signal, signal, oomKilled };
  return { exitCode, signal: null, oomKilled };
}

/**
 * The signal behind an exit code as a container runtime reports it (128+n), or null. Only a signal
 * in `trusted` counts (one corral sent, or the kernel's OOM SIGKILL), so that a program's own
 * `exit 130` is not misread as SIGINT.
 */
export function signalOfExitCode(code: number | null, trusted: ReadonlyArray<number | undefined>): number | null {
  if (code === null || code <= 128 || code >= 128 + 65) return null;
  const n = code - 128;
  return trusted.includes(n) ? n : null;
}

/** An ExitResult for a task whose end this agent could not observe. */
export function unknownExit(err: string, oomKilled = false): ExitResult {
  return { exitCode: null, signal: null, oomKilled, err };
}

/** The `exited` event's message and annotations, the same for every driver. */
export function describeExit(r: ExitResult): { message: string; annotations: Record<string, string> } {
  const how = r.err ? r.err : r.signal ? `killed by ${signalName(r.signal) ?? r.signal}` : `exit code ${r.exitCode}`;
  return {
    message: `task exited: ${how}${r.oomKilled ? ' (OOM killed)' : ''}`,
    annotations: { exitCode: String(r.exitCode), signal: String(r.signal), oomKilled: String(r.oomKilled) },
  };
}
