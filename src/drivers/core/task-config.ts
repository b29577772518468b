/**
 * The task-config rules every driver applies the same way: the task id and the command of an exec.
 * A driver validates its own `driver` block on top of these.
 */
import { InvalidConfigError } from '../../errors.js';
import { plainString } from '../../util/validate.js';

/** Output kept per stream of an execTask. */
export const MAX_EXEC_OUTPUT = 4 * 1024 * 1024;

/** A task id: a non-empty string of at most 512 characters, without control characters. */
export function validateTaskId(v: unknown): string {
  const id = plainString('id', v, 'a non-empty string');
  if (id.length === 0) throw new InvalidConfigError('id', v, 'must not be empty');
  if (id.length > 512) throw new InvalidConfigError('id', v, 'must be at most 512 characters');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(id)) throw new InvalidConfigError('id', v, 'must not contain control characters');
  return id;
}

/** The argv of an execTask: a non-empty array of strings without NUL, the first one non-empty. */
export function validateExecCmd(cmd: unknown): string[] {
  if (!Array.isArray(cmd) || cmd.length === 0) throw new InvalidConfigError('cmd', cmd, 'must be a non-empty array of strings');
  cmd.forEach((c, i) => {
    if (typeof c !== 'string' || c.includes('\0')) throw new InvalidConfigError(`cmd[${i}]`, c, 'must be a string without NUL');
  });
  if (cmd[0] === '') throw new InvalidConfigError('cmd[0]', cmd[0], 'must not be empty');
  return cmd as string[];
}
