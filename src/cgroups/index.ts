/** Public surface of corral's cgroups layer. */
export type {
  CgroupFingerprint, CgroupLayout, CgroupManager, CgroupMode, CgroupStats, CgroupVersion, CreateOptions, GroupKillOutcome,
  SpawnPlacement, TaskCgroup, TaskResources,
} from './types.js';
export { DEFAULT_CGROUP_ROOT, detectCgroupLayout, inspectMounts, type DetectOptions, type MountedCgroups } from './detect.js';
export { parseMountInfo, parseProcMounts, parseMountTable, topMountAt, v1ControllersOf, type MountEntry } from './mounts.js';
export { MAX_TASK_NAME_BYTES, groupName, parseGroupName, validateAllocId, validateTaskName } from './names.js';
export { coresMinus, coresUnion, formatCpuList, parseCpuList } from './cpulist.js';
export { CpusetPartition, planV1SharedRewrite, planV2SharedRewrite, type FileWrite } from './partition.js';
export { sharesToWeight, validateResources } from './resources.js';
export { statsFromV1, statsFromV2 } from './stats.js';
export { type ManagerOptions } from './options.js';
export { CgroupV1Manager, V1TaskCgroup, DEFAULT_V1_PARENT } from './v1.js';
export { CgroupV2Manager, V2TaskCgroup, DEFAULT_V2_PARENT } from './v2.js';
export { createCgroupManager } from './factory.js';
