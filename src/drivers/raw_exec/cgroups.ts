/** Opens the cgroup manager raw_exec runs on: detected layout, the configured parent (`.slice` added on v2). */
import { createCgroupManager } from '../../cgroups/factory.js';
import { detectCgroupLayout } from '../../cgroups/detect.js';
import type { CgroupManager, CgroupVersion } from '../../cgroups/types.js';

export function openCgroupManager(opts: { cgroupParent?: string; root?: string; version?: CgroupVersion; killTimeoutMs?: number }): CgroupManager {
  const layout = detectCgroupLayout({ ...(opts.root ? { root: opts.root } : {}), ...(opts.version ? { version: opts.version } : {}) });
  let parentName = opts.cgroupParent;
  if (parentName !== undefined && layout.version === 'v2' && !parentName.endsWith('.slice')) parentName += '.slice';
  return createCgroupManager({
    layout,
    ...(parentName !== undefined ? { parentName } : {}),
    ...(opts.killTimeoutMs !== undefined ? { killTimeoutMs: opts.killTimeoutMs } : {}),
  });
}
