/**
 * Detection of the cgroup layout from what is really mounted: the filesystem type of the top-most
 * mount at the root (statfs), then the mount table for v1 controllers and a cgroup2 at <root>/unified.
 * A mount covered by a later one at the same point (Nomad issue 19735: tmpfs and cgroup2 both on
 * /sys/fs/cgroup) does not count, nor do mounts below a covered root.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC, native } from '../native.js';
import { CgroupUnsupportedError, InvalidConfigError } from '../errors.js';
import { type MountEntry, parseMountTable, topMountAt, v1ControllersOf } from './mounts.js';
import type { CgroupLayout, CgroupMode, CgroupVersion } from './types.js';

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';

export interface DetectOptions {
  /** Where cgroups are mounted (default /sys/fs/cgroup). A cgroup2 mount given here is used as a v2 root. */
  root?: string;
  /** Force the mode instead of detecting it (the mount table is still read for v1 controllers). */
  mode?: CgroupMode;
  /** Force the manager version. 'v2' on a hybrid host runs the v2 manager on the unified mount. */
  version?: CgroupVersion;
  /** Mount table to read (default /proc/self/mountinfo, falling back to /proc/mounts). */
  mountinfoPath?: string;
  /** The mount table's text itself (tests). */
  mountTable?: string;
  /**
   * statfs(2) f_type of a path. Default: the native addon's statfsType; `false` to trust the mount
   * table alone. If the addon cannot be loaded, the mount table alone decides.
   */
  statfs?: ((p: string) => number) | false;
}

function readMountTable(opts: DetectOptions): MountEntry[] {
  if (opts.mountTable !== undefined) return parseMountTable(opts.mountTable);
  const candidates = opts.mountinfoPath ? [opts.mountinfoPath] : ['/proc/self/mountinfo', '/proc/mounts'];
  let lastErr: unknown;
  for (const p of candidates) {
    try {
      return parseMountTable(fs.readFileSync(p, 'utf8'));
    } catch (err) {
      lastErr = err;
    }
  }
  throw new CgroupUnsupportedError('cgroups', `cannot read the mount table (${candidates.join(', ')}): ${String((lastErr as Error)?.message ?? lastErr)}`);
}

function fsTypeOfMagic(magic: number): string {
  if (magic === CGROUP2_SUPER_MAGIC) return 'cgroup2';
  if (magic === CGROUP_SUPER_MAGIC) return 'cgroup';
  if (magic === TMPFS_MAGIC) return 'tmpfs';
  return `0x${magic.toString(16)}`;
}

function statfsTypeAt(opts: DetectOptions, p: string): string | undefined {
  if (opts.statfs === false) return undefined;
  try {
    const f = opts.statfs ?? ((q: string) => native().statfsType(q));
    return fsTypeOfMagic(f(p));
  } catch {
    return undefined;
  }
}

/** True when `e` is reachable from the mount `top` (mounted on top of it or below it, not under something that covers it). */
function isBelow(entries: readonly MountEntry[], e: MountEntry, top: MountEntry): boolean {
  if (e.id === 0 || top.id === 0) return e.index > top.index;
  const byId = new Map(entries.map((m) => [m.id, m]));
  let cur: MountEntry | undefined = e;
  for (let guard = 0; cur && guard < 64; guard++) {
    if (cur.parentId === top.id) return true;
    if (cur.parentId === cur.id) return false;
    cur = byId.get(cur.parentId);
  }
  return false;
}

function stripSlash(p: string): string {
  const r = path.resolve(p);
  return r.length > 1 && r.endsWith('/') ? r.slice(0, -1) : r;
}

/** What the mount table (and statfs) say is at `root`. */
export interface MountedCgroups {
  /** Filesystem type of the top-most mount at root ('cgroup2', 'tmpfs', 'cgroup', ... or undefined when nothing is mounted there). */
  rootFsType: string | undefined;
  /** v1 controller → mount point, for visible cgroup (v1) mounts below root. */
  v1Mounts: Record<string, string>;
  /** A visible cgroup2 at <root>/unified (hybrid), or root itself when cgroup2 is the root. */
  unifiedMount: string | undefined;
  /** Visible cgroup2 mounts elsewhere (not root, not root/unified): reported, not used. */
  otherCgroup2: string[];
}

export function inspectMounts(opts: DetectOptions = {}): MountedCgroups {
  const root = stripSlash(opts.root ?? DEFAULT_CGROUP_ROOT);
  const entries = readMountTable(opts);
  const top = topMountAt(entries, root);
  const statType = statfsTypeAt(opts, root);
  const rootFsType = statType ?? top?.fsType;
  const v1Mounts: Record<string, string> = {};
  let unifiedMount: string | undefined;
  const otherCgroup2: string[] = [];
  if (rootFsType === 'cgroup2') {
    unifiedMount = root;
  } else if (rootFsType === 'cgroup' && top) {
    // A single v1 hierarchy mounted at root itself (rare): its controllers live at root.
    for (const c of v1ControllersOf(top)) v1Mounts[c] = root;
  }
  for (const e of entries) {
    if (e.fsType !== 'cgroup' && e.fsType !== 'cgroup2') continue;
    const mp = stripSlash(e.mountPoint);
    const under = mp.startsWith(root + '/');
    // Visible: the top-most at its own mount point, and (below root) not hidden by a later mount on root.
    if (topMountAt(entries, e.mountPoint) !== e) continue;
    if (under && top && !isBelow(entries, e, top)) continue;
    if (e.fsType === 'cgroup2') {
      if (mp === root) continue;
      if (rootFsType !== 'cgroup2' && mp === root + '/unified') unifiedMount = mp;
      else otherCgroup2.push(mp);
      continue;
    }
    if (!under || rootFsType === 'cgroup2') continue;
    for (const c of v1ControllersOf(e)) v1Mounts[c] ??= mp;
  }
  return { rootFsType, v1Mounts, unifiedMount, otherCgroup2 };
}

/**
 * Detects the layout. v1: controllers mounted under root, no cgroup2 at root/unified. hybrid: v1
 * controllers plus cgroup2 at root/unified. v2: cgroup2 is the top-most mount at root.
 * The version whose manager runs is v2 only where cgroup2 is the root, unless `version` says otherwise
 * (version 'v2' on a hybrid host: the v2 manager on the unified mount).
 */
export function detectCgroupLayout(opts: DetectOptions = {}): CgroupLayout {
  const root = stripSlash(opts.root ?? DEFAULT_CGROUP_ROOT);
  if (opts.mode !== undefined && !['v1', 'hybrid', 'v2'].includes(opts.mode)) throw new InvalidConfigError('mode', opts.mode, 'must be v1, hybrid or v2');
  if (opts.version !== undefined && !['v1', 'v2'].includes(opts.version)) throw new InvalidConfigError('version', opts.version, 'must be v1 or v2');
  const m = inspectMounts({ ...opts, root });
  const hasV1 = Object.keys(m.v1Mounts).length > 0;
  let detected: CgroupMode | undefined;
  if (m.rootFsType === 'cgroup2') detected = 'v2';
  else if (hasV1 && m.unifiedMount) detected = 'hybrid';
  else if (hasV1) detected = 'v1';
  const mode = opts.mode ?? detected;
  if (!mode) {
    throw new CgroupUnsupportedError('cgroups', `no cgroup hierarchy is mounted at ${root} (found ${m.rootFsType ?? 'nothing'} there` +
      (m.otherCgroup2.length ? `; cgroup2 is mounted at ${m.otherCgroup2.join(', ')}: pass it as root` : '') + ')');
  }
  const version: CgroupVersion = opts.version ?? (mode === 'v2' ? 'v2' : 'v1');
  if (version === 'v2') {
    const v2root = m.rootFsType === 'cgroup2' ? root : m.unifiedMount ?? (opts.mode === 'v2' ? root : undefined);
    if (!v2root) throw new CgroupUnsupportedError('cgroup2', `no cgroup2 hierarchy at ${root} or ${root}/unified`);
    return { mode, version, root: v2root, v1Mounts: {}, unifiedMount: v2root };
  }
  if (!hasV1) throw new CgroupUnsupportedError('cgroup v1', `no cgroup v1 controller is mounted under ${root}`);
  const layout: CgroupLayout = { mode, version, root, v1Mounts: m.v1Mounts };
  if (m.unifiedMount) layout.unifiedMount = m.unifiedMount;
  return layout;
}
