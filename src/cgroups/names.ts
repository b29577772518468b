/** Validation of the names that become cgroup directory names; applied before any file is touched. */
import { InvalidConfigError } from '../errors.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Longest task name accepted, in UTF-8 bytes (the group name adds the 36-byte alloc id; NAME_MAX is 255). */
export const MAX_TASK_NAME_BYTES = 128;

/** An alloc id must be a UUID (Nomad's form, 8-4-4-4-12 hex). Throws InvalidConfigError(field 'allocId'). */
export function validateAllocId(allocId: unknown, field = 'allocId'): string {
  if (typeof allocId !== 'string') throw new InvalidConfigError(field, allocId, 'must be a string (a UUID)');
  if (!UUID_RE.test(allocId)) throw new InvalidConfigError(field, allocId, 'must be a UUID like 8-4-4-4-12 hex digits');
  return allocId;
}

/**
 * A task name becomes part of a directory name: it must not be empty, `.`/`..`, contain `..`,
 * `/`, `\`, NUL or control characters, and must fit in MAX_TASK_NAME_BYTES bytes.
 * Throws InvalidConfigError(field 'name').
 */
export function validateTaskName(name: unknown, field = 'name'): string {
  if (typeof name !== 'string') throw new InvalidConfigError(field, name, 'must be a string');
  if (name.length === 0) throw new InvalidConfigError(field, name, 'must not be empty');
  if (name.includes('\0')) throw new InvalidConfigError(field, name, 'must not contain NUL');
  if (name.includes('/') || name.includes('\\')) throw new InvalidConfigError(field, name, 'must not contain a path separator');
  if (name === '.' || name.includes('..')) throw new InvalidConfigError(field, name, 'must not contain ".." or be "."');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new InvalidConfigError(field, name, 'must not contain control characters');
  if (Buffer.byteLength(name, 'utf8') > MAX_TASK_NAME_BYTES) {
    throw new InvalidConfigError(field, name, `must be at most ${MAX_TASK_NAME_BYTES} bytes`);
  }
  return name;
}

/** The group name of a task: `<allocId>-<taskName>` (v2 adds `.scope` to the directory). */
export function groupName(allocId: string, taskName: string): string {
  return `${validateAllocId(allocId)}-${validateTaskName(taskName)}`;
}

/** Splits a group name back into alloc id and task name, or undefined if it is not one of ours. */
export function parseGroupName(name: string): { allocId: string; taskName: string } | undefined {
  if (name.length < 38 || name[36] !== '-') return undefined;
  const allocId = name.slice(0, 36);
  const taskName = name.slice(37);
  if (!UUID_RE.test(allocId)) return undefined;
  try {
    validateTaskName(taskName);
  } catch {
    return undefined;
  }
  return { allocId, taskName };
}

/** A parent name (v1 `corral`, v2 `corral.slice`): one path segment, or a relative path of plain segments. */
export function validateParentName(name: unknown, field = 'parentName'): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidConfigError(field, name, 'must be a non-empty string');
  for (const seg of name.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || seg.includes('\0') || /[\u0000-\u001f\u007f]/.test(seg)) {
      throw new InvalidConfigError(field, name, 'must be a relative path of plain segments (no "..", empty or control characters)');
    }
  }
  return name;
}
