/** The docker driver and the dangling-container reconciler. */
export { DockerDriver, loadOrCreateAgentId, mapStats, type DockerDriverOptions, type RecoverAllResult } from './driver.js';
export {
  DanglingContainerReconciler, ownership, matchingRule, type OwnershipRule, type OwnershipOptions, LABEL_AGENT_ID, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME,
  DEFAULT_CREATION_GRACE_MS, DEFAULT_RECONCILE_PERIOD_MS, systemClock,
  type DanglingContainer, type DanglingContainerReconcilerOptions, type DanglingContainersConfig, type ReconcilePassResult,
  type ReconcilerClock, type ReconcilerDockerClient,
} from './reconciler.js';
export { validateTaskConfig, parseVolume, resolveGcConfig, type DockerGcConfig, type DockerTaskDriverConfig, type DockerTaskSpec } from './config.js';
export { type DockerDriverState, type DockerTaskHandle } from './handle.js';
export { createDockerClient, type Logger, stderrLogger, silentLogger } from './call.js';
