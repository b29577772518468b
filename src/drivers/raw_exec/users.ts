/**
 * Users and groups from /etc/passwd and /etc/group, parsed here (no getpwnam in Node), and
 * Nomad-style id ranges ("0,10-15") for the denied host uids/gids.
 */
import * as fs from 'node:fs';
import { InvalidConfigError } from '../../errors.js';

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /** Supplementary groups (from /etc/group member lists), primary gid not repeated. */
  groups: number[];
}

export interface PasswdEntry { name: string; uid: number; gid: number; home: string; shell: string }
export interface GroupEntry { name: string; gid: number; members: string[] }

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 7) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || f[2] === '' || f[3] === '') continue;
    out.push({ name: f[0]!, uid, gid, home: f[5]!, shell: f[6]! });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 4) continue;
    const gid = Number(f[2]);
    if (!Number.isInteger(gid) || f[2] === '') continue;
    out.push({ name: f[0]!, gid, members: f[3]!.split(',').map((s) => s.trim()).filter((s) => s !== '') });
  }
  return out;
}

export interface UserDb { passwdPath?: string; groupPath?: string }

function readOr(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Looks a user up by name ("nobody"), by number ("65534"), or as "user:group" (group by name or
 * number, replacing the primary group). Throws InvalidConfigError(field) when it does not exist.
 */
export function lookupUser(spec: string, field = 'user', db: UserDb = {}): UserInfo {
  if (typeof spec !== 'string' || spec.trim() === '') throw new InvalidConfigError(field, spec, 'must be a non-empty user name or uid');
  const [userPart, groupPart, ...rest] = spec.split(':');
  if (rest.length > 0 || userPart === undefined || userPart === '' || groupPart === '') {
    throw new InvalidConfigError(field, spec, 'must be "user", "uid", "user:group" or "uid:gid"');
  }
  const passwd = parsePasswd(readOr(db.passwdPath ?? '/etc/passwd'));
  const groups = parseGroup(readOr(db.groupPath ?? '/etc/group'));
  let entry: PasswdEntry | undefined;
  if (/^\d+$/.test(userPart)) {
    const uid = Number(userPart);
    entry = passwd.find((p) => p.uid === uid);
    if (!entry) throw new InvalidConfigError(field, spec, `no user with uid ${uid} in /etc/passwd`);
  } else {
    entry = passwd.find((p) => p.name === userPart);
    if (!entry) throw new InvalidConfigError(field, spec, `no user named ${JSON.stringify(userPart)} in /etc/passwd`);
  }
  let gid = entry.gid;
  if (groupPart !== undefined) {
    const g = /^\d+$/.test(groupPart) ? groups.find((x) => x.gid === Number(groupPart)) : groups.find((x) => x.name === groupPart);
    if (!g) {
      if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
      else throw new InvalidConfigError(field, spec, `no group named ${JSON.stringify(groupPart)} in /etc/group`);
    } else {
      gid = g.gid;
    }
  }
  const supplementary = groups.filter((g) => g.members.includes(entry!.name) && g.gid !== gid).map((g) => g.gid);
  return { name: entry.name, uid: entry.uid, gid, home: entry.home, shell: entry.shell, groups: [...new Set(supplementary)].sort((a, b) => a - b) };
}

/** An inclusive id range. */
export interface IdRange { from: number; to: number }

/** Parses "0,10-15" (Nomad's denied_host_uids form). An empty string is no ranges. */
export function parseIdRanges(text: unknown, field: string): IdRange[] {
  if (text === undefined || text === null) return [];
  if (typeof text !== 'string') throw new InvalidConfigError(field, text, 'must be a string of ids and ranges like "0,10-15"');
  const out: IdRange[] = [];
  if (text.trim() === '') return out;
  for (const part of text.split(',')) {
    const p = part.trim();
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    if (!m) throw new InvalidConfigError(field, text, `malformed item ${JSON.stringify(p)} (want ids and ranges like "0,10-15")`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (from > 0xffffffff || to > 0xffffffff) throw new InvalidConfigError(field, text, `id out of range in ${JSON.stringify(p)}`);
    if (to < from) throw new InvalidConfigError(field, text, `descending range ${JSON.stringify(p)}`);
    out.push({ from, to });
  }
  return out;
}

export function inRanges(id: number, ranges: readonly IdRange[]): boolean {
  return ranges.some((r) => id >= r.from && id <= r.to);
}

/** May this user (uid, primary and supplementary gids) run the file at `mode`/`uid`/`gid` (stat)? Root needs any x bit. */
export function canExecute(st: fs.Stats, who: { uid: number; gid: number; groups: readonly number[] }): boolean {
  const mode = st.mode;
  if (who.uid === 0) return (mode & 0o111) !== 0;
  if (st.uid === who.uid) return (mode & 0o100) !== 0;
  if (st.gid === who.gid || who.groups.includes(st.gid)) return (mode & 0o010) !== 0;
  return (mode & 0o001) !== 0;
}
