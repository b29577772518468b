/** What the docker driver's parts (start, task watch, exec, stats) share: the client, bounded calls, the life signal. */
import type { Logger } from '../../util/logger.js';
import type { DockerApi } from './client.js';

export interface DockerContext {
  readonly docker: DockerApi;
  readonly logger: Logger;
  /** Bound on a Docker call. */
  readonly callTimeoutMs: number;
  /** Aborts when the driver shuts down. */
  readonly life: AbortSignal;
  /** A bounded call on behalf of the driver; connection failures and timeouts mark the driver unhealthy. */
  call<T>(op: string, fn: (signal: AbortSignal) => Promise<T>, opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<T>;
  /** Records a failure that says Docker is unhealthy (a timeout, an unreachable daemon). */
  markUnhealthy(err: unknown): void;
  /** Keeps a background job until shutdown has waited for it. */
  track<T>(p: Promise<T>): Promise<T>;
}
