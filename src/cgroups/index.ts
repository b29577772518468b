/** Public surface of corral's cgroups layer. */
export type {
  CgroupFingerprint, CgroupLayout, CgroupManager, CgroupMode, CgroupStats, CgroupVersion, CreateOptions, GroupKillOutcome,
  SpawnPlacement, TaskCgroup, TaskResources,
} from './types.js';
export { DEFAULT_CGROUP_ROOT, detectCgroupLayout, inspectMounts, type DetectOptions, type MountedCgroups } from './detect.js';
export { parseMountInfo, parseProcMounts, parseMountTable, topMountAt, v1ControllersOf, type MountEntry } from './mounts.js';
export { MAX_TASK_NAME_BYTES, groupName, parseGroupName, validateAllocId, validateTaskName } from './names.js';
export { coresMinus, coresUnion, formatCpuList, parseCpuList } from './cpulist.js';
export { checkReservation, reservedCores, shareCores, type Reservations } from './partition.js';
export { DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT_MS } from './lock.js';
export { sharesToWeight, validateResources } from './resources.js';
export { statsFromV1, statsFromV2 } from './stats.js';
export { type ManagerOptions } from './options.js';
export { CgroupV1Manager, DEFAULT_V1_PARENT } from './v1.js';
export { CgroupV2Manager, DEFAULT_V2_PARENT } from './v2.js';
export { createCgroupManager } from './factory.js';
