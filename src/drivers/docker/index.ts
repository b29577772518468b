/** The docker driver and the dangling-container reconciler. */
export { DockerDriver, type DockerDriverOptions } from './driver.js';
export type { RecoverAllResult } from '../core/driver.js';
export { mapStats } from './stats.js';
export { loadOrCreateAgentId } from '../../util/agent-id.js';
export {
  DanglingContainerReconciler, ownership, matchingRule, type OwnershipRule, type OwnershipOptions, LABEL_AGENT_ID, LABEL_ALLOC_ID, LABEL_TASK_ID, LABEL_TASK_NAME,
  DEFAULT_CREATION_GRACE_MS, DEFAULT_RECONCILE_PERIOD_MS, systemClock,
  type DanglingContainer, type DanglingContainerReconcilerOptions, type DanglingContainersConfig, type ReconcilePassResult,
  type ReconcilerClock, type ReconcilerDockerClient,
} from './reconcile_dangling.js';
export { validateTaskConfig, parseVolume, resolveGcConfig, type DockerGcConfig, type DockerTaskDriverConfig, type DockerTaskSpec } from './config.js';
export { type DockerDriverState, type DockerTaskHandle } from './task.js';
export { createDockerClient, type DockerApi } from './client.js';
export { type Logger, stderrLogger, silentLogger } from '../../util/logger.js';
