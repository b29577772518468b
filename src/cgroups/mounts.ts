/** Parsers of the kernel's mount tables (/proc/self/mountinfo and /proc/mounts). */

export interface MountEntry {
  /** mountinfo: mount id (0 for /proc/mounts entries). */
  id: number;
  /** mountinfo: parent mount id (0 for /proc/mounts entries). */
  parentId: number;
  /** Root of the mount within its filesystem (mountinfo field 4; "/" for /proc/mounts). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  /** Per-mount options (rw, relatime, ...). */
  mountOptions: string[];
  /** Per-superblock options: for cgroup v1 these name the controllers (cpu, cpuacct, name=systemd, ...). */
  superOptions: string[];
  /** Position in the table: later entries were mounted later (they cover earlier ones at the same point). */
  index: number;
}

/** Undoes the kernel's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash). */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Parses /proc/<pid>/mountinfo:
 * `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
 * Malformed lines are skipped.
 */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    if (pre.length < 6 || post.length < 2) continue;
    const id = Number(pre[0]);
    const parentId = Number(pre[1]);
    if (!Number.isInteger(id) || !Number.isInteger(parentId)) continue;
    out.push({
      id,
      parentId,
      root: unescapeMountField(pre[3]!),
      mountPoint: unescapeMountField(pre[4]!),
      mountOptions: pre[5]!.split(','),
      fsType: post[0]!,
      source: unescapeMountField(post[1]!),
      superOptions: (post[2] ?? '').split(',').filter((o) => o !== ''),
      index: out.length,
    });
  }
  return out;
}

/** Parses /proc/mounts (fstab format): `cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0`. */
export function parseProcMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const opts = f[3]!.split(',');
    out.push({
      id: 0,
      parentId: 0,
      root: '/',
      source: unescapeMountField(f[0]!),
      mountPoint: unescapeMountField(f[1]!),
      fsType: f[2]!,
      mountOptions: opts,
      superOptions: opts,
      index: out.length,
    });
  }
  return out;
}

/** Parses either format, recognising mountinfo by its " - " separator. */
export function parseMountTable(text: string): MountEntry[] {
  const first = text.split('\n').find((l) => l.trim() !== '') ?? '';
  return first.includes(' - ') ? parseMountInfo(text) : parseProcMounts(text);
}

/**
 * The mount that is visible at `mountPoint`: the top-most of those stacked there. In mountinfo a mount
 * stacked on another at the same point has the one below as its parent; failing that, the later entry wins.
 */
export function topMountAt(entries: readonly MountEntry[], mountPoint: string): MountEntry | undefined {
  const at = entries.filter((e) => e.mountPoint === mountPoint);
  if (at.length === 0) return undefined;
  // Follow the parent chain: an entry whose id is another same-point entry's parent is covered.
  const coveredIds = new Set(at.filter((e) => e.id !== 0 && at.some((o) => o.id === e.parentId)).map((e) => e.parentId));
  const uncovered = at.filter((e) => e.id === 0 || !coveredIds.has(e.id));
  const pool = uncovered.length > 0 ? uncovered : at;
  return pool.reduce((a, b) => (b.index > a.index ? b : a));
}

/** Controllers of cgroup v1 (what a v1 mount's super options may name). */
export const V1_CONTROLLERS: readonly string[] = [
  'cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'net_cls', 'net_prio', 'blkio', 'perf_event', 'hugetlb', 'pids', 'rdma', 'misc',
];

/** v1 controller names carried by a cgroup (v1) mount's super options (`rw,cpu,cpuacct` → cpu, cpuacct). */
export function v1ControllersOf(entry: MountEntry): string[] {
  if (entry.fsType !== 'cgroup') return [];
  return entry.superOptions.filter((o) => V1_CONTROLLERS.includes(o));
}
