/**
 * Validators of option values shared by every layer: each returns the checked value (or the default
 * when absent) or throws InvalidConfigError naming the field and the value.
 */
import { InvalidConfigError } from '../errors.js';

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function optBool(field: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new InvalidConfigError(field, v, 'must be true or false');
  return v;
}

/** A duration in milliseconds, at least `min` (0 allows "no wait"). Fractions are kept. */
export function optMs(field: string, v: unknown, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new InvalidConfigError(field, v, `must be a number of milliseconds ≥ ${min}`);
  }
  return v;
}

/** A string without NUL; `what` says what is expected in the error. */
export function plainString(field: string, v: unknown, what = 'a string'): string {
  if (typeof v !== 'string') throw new InvalidConfigError(field, v, `must be ${what}`);
  if (v.includes('\0')) throw new InvalidConfigError(field, v, 'must not contain NUL');
  return v;
}

export function stringArray(field: string, v: unknown): string[] {
  if (!Array.isArray(v)) throw new InvalidConfigError(field, v, 'must be an array of strings');
  return v.map((x, i) => plainString(`${field}[${i}]`, x));
}
