/** Signal names as users write them ("SIGINT", "INT", "sigusr1", "9") → number, with a clear error for anything else. */
import * as os from 'node:os';
import { InvalidConfigError } from './errors.js';

const SIGNALS = os.constants.signals as Record<string, number>;

/** Parses a signal name or number. `field` names the config field in the error. */
export function parseSignal(input: string | number, field = 'signal'): { name: NodeJS.Signals; number: number } {
  if (typeof input === 'number' || /^\d+$/.test(String(input).trim())) {
    const n = Number(input);
    const name = signalName(n);
    if (name === undefined) throw new InvalidConfigError(field, input, 'unknown signal number');
    return { name, number: n };
  }
  const raw = String(input).trim().toUpperCase();
  const name = (raw.startsWith('SIG') ? raw : `SIG${raw}`) as NodeJS.Signals;
  const number = SIGNALS[name];
  if (number === undefined) {
    throw new InvalidConfigError(field, input, 'unknown signal (use a name like SIGTERM, TERM, sigusr1, or a number)');
  }
  return { name, number };
}

/** The name of a signal number ('SIGKILL' for 9), or undefined. */
export function signalName(n: number): NodeJS.Signals | undefined {
  for (const [name, num] of Object.entries(SIGNALS)) if (num === n) return name as NodeJS.Signals;
  return undefined;
}
