/**
 * Users and groups through the system's NSS (native/users.cc: getpwnam_r, getgrouplist, ... on the
 * threadpool), so any user the host knows can be named (/etc/passwd, LDAP, SSSD, systemd), and
 * Nomad-style id ranges ("0,10-15") for the denied host uids/gids.
 */
import type * as fs from 'node:fs';
import { InvalidConfigError } from '../../errors.js';
import { type NssGroup, type NssUser, native } from '../../native.js';

export interface UserInfo extends Omit<NssUser, 'groups'> {
  /** Supplementary groups (getgrouplist, as initgroups gives them), the effective gid not repeated. */
  groups: number[];
}

function nss<T>(call: (cb: (err: Error | null, v?: T | null) => void) => void): Promise<T | null> {
  return new Promise((resolve, reject) => call((err, v) => (err ? reject(err) : resolve(v ?? null))));
}

/**
 * Looks a user up by name ("nobody"), by number ("65534"), or as "user:group" (group by name or
 * number, replacing the primary group). Throws InvalidConfigError(field) when it does not exist.
 */
export async function lookupUser(spec: string, field = 'user'): Promise<UserInfo> {
  if (typeof spec !== 'string' || spec.trim() === '') throw new InvalidConfigError(field, spec, 'must be a non-empty user name or uid');
  const [userPart, groupPart, ...rest] = spec.split(':');
  if (rest.length > 0 || userPart === undefined || userPart === '' || groupPart === '' || spec.includes('\0')) {
    throw new InvalidConfigError(field, spec, 'must be "user", "uid", "user:group" or "uid:gid"');
  }
  const n = native();
  const byId = (s: string) => (/^\d+$/.test(s) && Number(s) < 0xffffffff ? Number(s) : undefined);
  const uid = byId(userPart);
  if (/^\d+$/.test(userPart) && uid === undefined) throw new InvalidConfigError(field, spec, 'uid out of range');
  const entry = await nss<NssUser>((cb) => n.lookupUser(uid ?? userPart, cb)).catch((err: Error) => {
    throw new InvalidConfigError(field, spec, `the user lookup failed: ${err.message}`);
  });
  if (!entry) throw new InvalidConfigError(field, spec, uid !== undefined ? `no user with uid ${uid} is known to this system` : `no user named ${JSON.stringify(userPart)} is known to this system`);
  let gid = entry.gid;
  if (groupPart !== undefined) {
    const wanted = byId(groupPart);
    const g = await nss<NssGroup>((cb) => n.lookupGroup(wanted ?? groupPart, cb)).catch((err: Error) => {
      throw new InvalidConfigError(field, spec, `the group lookup failed: ${err.message}`);
    });
    if (g) gid = g.gid;
    else if (wanted !== undefined) gid = wanted;
    else throw new InvalidConfigError(field, spec, `no group named ${JSON.stringify(groupPart)} is known to this system`);
  }
  const supplementary = [...new Set(entry.groups.filter((g) => g !== gid))].sort((a, b) => a - b);
  return { name: entry.name, uid: entry.uid, gid, home: entry.home, shell: entry.shell, groups: supplementary };
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
