/**
 * Where a container goes in corral's cpuset partition (design: "on v2 the container's cgroup parent is
 * corral's share or reserve slice; reserved cores become CpusetCpus").
 *
 * A reservation is always held in the cgroup tree, through the same manager (and so the same host
 * lock and partition) as raw_exec's: the task's group `<allocId>-<task>` in the reserve parent carries
 * the cores, so no corral process hands them out twice and the share pool drops them. Then:
 * - v2 host, engine on cgroupfs: the container is created inside that group (CgroupParent
 *   `/<parent>/reserve.slice/<group>.scope`, or `share.slice/...` for a shared task), so the kernel
 *   keeps it on the group's cores, and a shared container follows every later change of the pool.
 * - v2 host, engine on systemd: CgroupParent must be a slice, `<parent minus .slice>-share.slice` or
 *   `-reserve.slice` (systemd puts it at `<parent>/corral-share.slice/docker-<id>.scope`, beside corral's
 *   share.slice, not in it): the cores are CpusetCpus, and a shared container keeps the pool it started
 *   with (it does not follow a later reservation).
 * - v1 and hybrid hosts (engine cgroup version 1): docker's own parent; cores as CpusetCpus as above.
 */
import type { CgroupManager, TaskCgroup } from '../../cgroups/types.js';
import { formatCpuList } from '../../cgroups/cpulist.js';
import { SHARE_SLICE, RESERVE_SLICE } from '../../cgroups/v2.js';
import { type Logger } from '../../util/logger.js';
import { openCgroupManager } from '../raw_exec/cgroups.js';
import type { TaskConfig } from '../contract.js';

/** What `docker info` says of the engine's cgroups (CgroupVersion "1" | "2", CgroupDriver "cgroupfs" | "systemd"). */
export interface EngineCgroups {
  cgroupVersion: string;
  cgroupDriver: string;
}

/** Where one container goes. */
export interface ContainerPlacement {
  /** HostConfig.CgroupParent, when corral sets one. */
  cgroupParent?: string;
  /** True when the container lives inside corral's group, so its cpuset follows the partition by itself. */
  inGroup: boolean;
}

/**
 * The CgroupParent of a container, keyed on corral's layout (`v2` only where cgroup2 is the root)
 * and the engine's cgroup version and driver. Pure: unit-tested over `docker info` shapes.
 */
export function containerPlacement(o: {
  layoutVersion: 'v1' | 'v2' | undefined;
  engine: EngineCgroups;
  /** corral's v2 parent, e.g. `corral.slice`. */
  parentName: string;
  /** The task's group name, `<allocId>-<task>`. */
  group: string;
  reserved: boolean;
}): ContainerPlacement {
  if (o.layoutVersion !== 'v2' || o.engine.cgroupVersion !== '2') return { inGroup: false };
  const kind = o.reserved ? RESERVE_SLICE : SHARE_SLICE;
  if (o.engine.cgroupDriver === 'systemd') {
    // A systemd slice name encodes its nesting with dashes: `corral-share.slice` is corral.slice's child.
    const prefix = o.parentName.replace(/\.slice$/, '');
    return { cgroupParent: `${prefix}-${kind}`, inGroup: false };
  }
  return { cgroupParent: `/${o.parentName}/${kind}/${o.group}.scope`, inGroup: true };
}

/** The driver's side of it: the manager (opened on first need), groups made and released. */
export class DockerCpusets {
  private manager: CgroupManager | null | undefined;

  constructor(
    /** The docker driver's cgroupParent option (a v2 slice name; on v1 its `.slice` is dropped). */
    private readonly parent: string,
    manager: CgroupManager | null | undefined,
    private readonly logger: Logger,
  ) {
    this.manager = manager;
  }

  /** The host's manager, or null when corral does not manage the engine's cpusets (remote engine, no cgroups). */
  cgroupManager(): CgroupManager | null {
    if (this.manager === undefined) {
      try {
        this.manager = openCgroupManager({ cgroupParent: this.parent.replace(/\.slice$/, '') });
      } catch (err) {
        this.logger.warn('no cgroup manager: reserved cores are not coordinated with other corral tasks', { error: (err as Error).message });
        this.manager = null;
      }
    }
    return this.manager;
  }

  /**
   * Before the container is created: the task's group (a reservation is checked against the
   * partition under the host lock: CpusetConflictError naming its holder), the CgroupParent, and
   * the CpusetCpus the container needs when it does not live in the group.
   */
  async place(cfg: TaskConfig<object>, engine: EngineCgroups): Promise<{ group?: TaskCgroup; cgroupParent?: string; cpusetCpus?: string }> {
    const mgr = this.cgroupManager();
    const cores = cfg.resources?.cores ?? [];
    const reserved = cores.length > 0;
    if (!mgr) return reserved ? { cpusetCpus: cores.join(',') } : {};
    const p = containerPlacement({
      layoutVersion: mgr.version, engine, parentName: mgr.parentName, group: `${cfg.allocId}-${cfg.name}`, reserved,
    });
    // A shared container outside the group needs no group of its own: it gets the pool as CpusetCpus.
    const group = reserved || p.inGroup ? await mgr.createAsync(cfg.allocId, cfg.name, reserved ? { resources: { cores } } : {}) : undefined;
    const cpusetCpus = reserved ? cores.join(',') : p.inGroup ? undefined : formatCpuList(mgr.sharedCores());
    return { ...(group ? { group } : {}), ...(p.cgroupParent ? { cgroupParent: p.cgroupParent } : {}), ...(cpusetCpus ? { cpusetCpus } : {}) };
  }

  /** Recovery: the task's group, if it has one on disk. */
  reopen(allocId: string, taskName: string): TaskCgroup | undefined {
    const mgr = this.cgroupManager();
    if (!mgr) return undefined;
    try {
      return mgr.open(allocId, taskName);
    } catch {
      return undefined; // none (a shared task outside its group), or removed already
    }
  }
}
