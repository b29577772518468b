/**
 * corral's public API: the drivers (raw_exec, docker), the cgroups layer, the task store, the
 * errors, and the contract types. `import { RawExecDriver } from 'corral'`.
 * The library only: the CLI and the raw native addon have their own entry points. Loading this
 * module does not load dockerode (the docker driver loads it when its first client is made).
 */
export * from './errors.js';
export { run, type RunOptions, type RunResult } from './run.js';
export type {
  Capabilities, ExecTaskResult, ExitResult, Fingerprint, HealthState, TaskConfig, TaskDriver, TaskEvent, TaskHandle,
  TaskResourceUsage, TaskState, TaskStatus,
} from './drivers/contract.js';
export type { RecoverAllResult, CoreOptions } from './drivers/core/driver.js';

export {
  RawExecDriver, RAW_EXEC, type RawExecDriverOptions, type RawExecPluginConfig, type RawExecTaskConfig, type RawExecDriverState,
  parseIdRanges, lookupUser, type UserInfo, envMatcher, type RecoverAllResult as RawExecRecoverAllResult,
} from './drivers/raw_exec/index.js';

export {
  createCgroupManager, detectCgroupLayout, CgroupV1Manager, CgroupV2Manager, DEFAULT_CGROUP_ROOT, DEFAULT_V1_PARENT, DEFAULT_V2_PARENT,
  validateAllocId, validateTaskName, validateResources, parseCpuList, formatCpuList, sharesToWeight,
  type CgroupFingerprint, type CgroupLayout, type CgroupManager, type CgroupMode, type CgroupStats, type CgroupVersion,
  type CreateOptions, type GroupKillOutcome, type ManagerOptions, type SpawnPlacement, type TaskCgroup, type TaskResources,
  type DetectOptions,
} from './cgroups/index.js';

export {
  TaskStore, DEFAULT_STATE_DIR, ownerStatus, selfOwner, type StoreProblem, type TaskRecord, type RecordState, type TaskOwner, type OwnerStatus,
  type TaskStoreOptions,
} from './store/task-store.js';
export { EventHub } from './util/event-hub.js';
export { parseDurationMs, parseSizeBytes } from './util/units.js';
export { parseSignal, signalName } from './signals.js';
export { type Logger, stderrLogger, silentLogger } from './util/logger.js';
export { loadOrCreateAgentId } from './util/agent-id.js';

export {
  DockerDriver, DanglingContainerReconciler, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME, LABEL_AGENT_ID, type OwnershipRule,
  type DockerDriverOptions, type DockerTaskDriverConfig, type DockerGcConfig, type DockerDriverState, type DockerTaskHandle,
  type DanglingContainerReconcilerOptions, type DanglingContainersConfig, type ReconcilePassResult, type DockerApi,
} from './drivers/docker/index.js';
