/** Picks the manager for the host: v2 only where cgroup2 is the root (or when asked), else v1. */
import { detectCgroupLayout } from './detect.js';
import type { ManagerOptions } from './options.js';
import type { CgroupManager } from './types.js';
import { CgroupV1Manager } from './v1.js';
import { CgroupV2Manager } from './v2.js';

export function createCgroupManager(opts: ManagerOptions = {}): CgroupManager {
  const layout = opts.layout ?? detectCgroupLayout(opts);
  return layout.version === 'v2' ? new CgroupV2Manager({ ...opts, layout }) : new CgroupV1Manager({ ...opts, layout });
}

export type { CgroupManager };
