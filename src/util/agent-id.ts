/** The agent's identity: a UUID persisted once in the state dir, shared by every driver and CLI run on that dir. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';

const AGENT_ID_FILE = 'agent-id';

/** Reads <stateDir>/agent-id, or writes a new UUID there (first writer wins). */
export function loadOrCreateAgentId(stateDir: string): string {
  const file = path.join(stateDir, AGENT_ID_FILE);
  const read = (): string | undefined => {
    try {
      const s = fs.readFileSync(file, 'utf8').trim();
      return s === '' ? undefined : s;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  };
  const existing = read();
  if (existing) return existing;
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const id = randomUUID();
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  fs.writeFileSync(tmp, id + '\n', { mode: 0o600 });
  try {
    fs.linkSync(tmp, file); // atomic "create if absent"
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return read() ?? id;
}
