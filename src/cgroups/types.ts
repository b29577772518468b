/** Shared types of the cgroups layer. */
import type { FsOp } from '../native.js';

/** What is mounted: `hybrid` is cgroup2 at /sys/fs/cgroup/unified beside v1 controllers. */
export type CgroupMode = 'v1' | 'hybrid' | 'v2';

/** Which manager logic runs: as in Nomad, v2 only where cgroup2 is the root; hybrid runs v1. */
export type CgroupVersion = 'v1' | 'v2';

export interface CgroupLayout {
  mode: CgroupMode;
  /** The version whose manager runs on this layout (v2 only where cgroup2 is the root, unless overridden). */
  version: CgroupVersion;
  /** v2: the cgroup2 mount the manager uses. v1: the directory holding the controller mounts (/sys/fs/cgroup). */
  root: string;
  /** v1: controller name → its mount point (e.g. cpuset → /sys/fs/cgroup/cpuset). Empty for v2. */
  v1Mounts: Record<string, string>;
  /** The cgroup2 mount, if any (v2 root, or hybrid's unified). */
  unifiedMount?: string;
}

export interface TaskResources {
  /** Relative CPU weight in Nomad/Docker "shares" (2..262144); v2 maps it to cpu.weight. */
  cpuShares?: number;
  /** Cores reserved for this task alone. Absent/empty: the task gets the shared pool. */
  cores?: number[];
  /** Hard memory limit in bytes (v1 memory.limit_in_bytes, v2 memory.max). */
  memoryBytes?: number;
  /** Max number of processes/threads (pids.max). */
  pidsMax?: number;
}

export interface CgroupStats {
  cpu: {
    /** Nanoseconds. */
    userNs: number;
    systemNs: number;
    totalNs: number;
    throttledNs: number;
    throttledPeriods: number;
  };
  /** Absent where the memory controller is not available (reported in `unavailable`). */
  memory?: {
    usageBytes: number;
    rssBytes: number;
    cacheBytes: number;
    maxUsageBytes: number;
  };
  /** Controllers/stats that could not be read on this layout, with the reason. */
  unavailable: Record<string, string>;
}

/**
 * How often the group hit its limits, as the kernel counts them (undefined: not counted here, e.g.
 * no such controller, or a kernel older than the counter).
 */
export interface LimitHits {
  /** Processes the OOM killer killed in this group: v2 memory.events oom_kill, v1 memory.oom_control oom_kill (Linux 4.13+). */
  oomKills?: number;
  /** Forks refused because the group was at pids.max: pids.events `max` (v1 and v2). */
  pidsLimitHits?: number;
}

export interface CgroupFingerprint {
  'unique.cgroups.version': CgroupVersion;
  'cgroups.mode': CgroupMode;
  'cgroups.root': string;
  'cgroups.controllers': string;
  'cgroups.cores': string;
}

/** What the native spawn needs to place a child in a group before its first instruction. */
export interface SpawnPlacement {
  /** v2: the group directory (clone3 CLONE_INTO_CGROUP). */
  cgroupDir?: string;
  /** `cgroup.procs` files the child writes itself into (v1: one per controller). */
  joinProcs?: string[];
}

export interface GroupKillOutcome {
  method: string;
  signalled: number;
  elapsedNs: number;
}

/** One task's cgroup (v1: one directory per controller; v2: one directory). */
export interface TaskCgroup {
  readonly allocId: string;
  readonly taskName: string;
  /** `<allocId>-<taskName>` (v2 dir name adds `.scope`). */
  readonly name: string;
  /** v1: controller → directory; v2: { unified: directory }. */
  readonly paths: Readonly<Record<string, string>>;
  readonly placement: SpawnPlacement;
  readonly resources: Readonly<TaskResources>;
  /** The cpuset this group has now (reserved cores, or the shared pool). */
  cpus(): number[];
  join(pid: number): void;
  pids(): number[];
  /** Freezes and waits (off the event loop, bounded) until the kernel reports it frozen. */
  freeze(opts?: { timeoutMs?: number }): Promise<void>;
  thaw(opts?: { timeoutMs?: number }): Promise<void>;
  /** Sends a signal to every process in the group once. Returns how many were signalled. */
  signal(signal: NodeJS.Signals | number): number;
  /** Kills everything in the group (cgroup.kill, or freeze→SIGKILL→thaw) and waits until it is empty. */
  kill(opts?: { timeoutMs?: number }): Promise<GroupKillOutcome>;
  /** True when the memory controller killed a process of this group for OOM. */
  oomKilled(): boolean;
  /** The kernel's counts of limit hits (one batched read; read them before destroy()). */
  limitHits(): LimitHits;
  stats(): CgroupStats;
  /** Kills what is left, removes the directories (rmdir retried on EBUSY), releases reserved cores. Idempotent. */
  /**
   * `after`: steps run in the same pool job as the group's last rmdir, so only once the group is
   * gone (a raw_exec task's record: its `unlink`). Resolves true when they ran; false when this call
   * did not remove the group (already destroyed, or a destroy already under way): run them yourself.
   */
  destroy(opts?: { timeoutMs?: number; after?: readonly FsOp[] }): Promise<boolean>;
}

export interface CreateOptions {
  resources?: TaskResources;
  /**
   * createAsync: steps of the caller's that run first, in the same pool job as the group's own
   * (a raw_exec start's write-ahead record, a `create` step: it is on disk before the group exists,
   * without a pool hop of its own). The job stops at the first failed step; what these steps made is
   * the caller's to undo. A failure's `index` counts from the first of them: below
   * `before.length`, one of them failed and nothing of the group was made.
   */
  before?: readonly FsOp[];
}

export interface CgroupManager {
  readonly version: CgroupVersion;
  readonly layout: CgroupLayout;
  /**
   * The parent corral owns: v2 `corral.slice` (configurable) holding `share.slice` and `reserve.slice`;
   * v1 `corral` under each controller, holding `share` and `reserve` in the cpuset one.
   */
  readonly parentName: string;
  /** Controllers usable here for task limits and stats. */
  controllers(): string[];
  /** Cores the tasks may use (the root's effective cpuset). */
  usableCores(): number[];
  /** Cores of the share pool now: usable minus every reservation in the tree (whichever corral process made it). */
  sharedCores(): number[];
  fingerprint(): CgroupFingerprint;
  /**
   * Creates the task's group with its limits written in one batch. Undoes itself on failure. Reserved
   * cores are checked against the tree under a host-wide lock: a core another task holds (in any corral
   * process) is a CpusetConflictError naming it; one that would empty the share pool, an InvalidConfigError.
   */
  create(allocId: string, taskName: string, opts?: CreateOptions): TaskCgroup;
  /**
   * create without blocking the event loop: the mkdirs and limit writes run on the libuv pool (a
   * cgroup mkdir waits for the kernel's cgroup mutex, which every group's creation and removal on the
   * host takes), and a reservation's host lock is taken by tries on timers. Same checks, errors and undo.
   */
  createAsync(allocId: string, taskName: string, opts?: CreateOptions): Promise<TaskCgroup>;
  /**
   * Re-opens an existing group (recovery), in the current layout or corral 0.1's. A reserved group's
   * cores come from the tree (its reserve group's cpuset.cpus). corral 0.1 on v2 kept no such record:
   * for its scopes pass the task's persisted resources, or the group counts as shared.
   */
  open(allocId: string, taskName: string, opts?: { resources?: TaskResources }): TaskCgroup;
  /** Groups of ours under the parent: removes empty ones left by a crash, reports non-empty ones. */
  cleanupStale(opts?: { keep?: (name: string) => boolean }): Promise<{ removed: string[]; nonEmpty: string[] }>;
  /** Removes the parent itself when it holds no groups (tests; an agent normally keeps it). */
  removeParentIfEmpty(): Promise<void>;
}
