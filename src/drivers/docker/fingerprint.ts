/**
 * Health and fingerprint of the docker driver: a bounded `version` call says whether Docker answers;
 * the last answer is kept (the reconciler runs only while it is healthy) and failed calls of the
 * driver lower it at once. Undetected = no daemon was ever reached; unhealthy = it was, and fails now.
 */
import { AbortError, DockerTimeoutError, DriverUnavailableError } from '../../errors.js';
import { anySignal, sleep } from '../../util/abort.js';
import type { Logger } from '../../util/logger.js';
import type { Fingerprint } from '../contract.js';
import { type DockerApi, bounded, isConnectionError } from './client.js';

export interface DockerHealthOptions {
  docker: DockerApi;
  callTimeoutMs: number;
  allowPrivileged: boolean;
  agentId: string;
  logger: Logger;
  /** The driver's life. */
  life: AbortSignal;
}

export class DockerHealth {
  private detected = false;
  private last: Fingerprint = { health: 'undetected', healthDescription: 'not checked yet', attributes: {} };

  constructor(private readonly o: DockerHealthOptions) {}

  /** The last health seen (a check, the health loop, or a failed call). */
  get current(): Fingerprint {
    return { ...this.last, attributes: { ...this.last.attributes } };
  }

  get healthy(): boolean {
    return this.last.health === 'healthy';
  }

  /** One health check now (a bounded `version` call). Throws AbortError when `signal` or the driver's life aborts. */
  async check(signal?: AbortSignal): Promise<Fingerprint> {
    let fp: Fingerprint;
    try {
      const v = await bounded('version', this.o.callTimeoutMs, anySignal(this.o.life, signal), (s) => this.o.docker.version({ abortSignal: s }));
      this.detected = true;
      fp = {
        health: 'healthy',
        healthDescription: 'healthy',
        attributes: {
          'driver.docker': true,
          'driver.docker.version': String(v.Version),
          'driver.docker.api_version': String(v.ApiVersion),
          'driver.docker.privileged.enabled': this.o.allowPrivileged,
          'driver.docker.agent_id': this.o.agentId,
        },
      };
    } catch (err) {
      if (err instanceof AbortError) throw err;
      const reason = (err as Error).message;
      const root = (err as { cause?: unknown }).cause ?? err;
      const missing = !this.detected && isConnectionError(root) && ['ENOENT', 'ECONNREFUSED'].includes(String((root as { code?: string }).code));
      fp = missing
        ? { health: 'undetected', healthDescription: `Docker is not reachable: ${reason}`, attributes: {} }
        : { health: 'unhealthy', healthDescription: `Docker is unhealthy: ${reason}`, attributes: { 'driver.docker': false } };
    }
    if (fp.health !== this.last.health) this.o.logger.info('docker driver health changed', { health: fp.health, reason: fp.healthDescription });
    this.last = fp;
    return { ...fp, attributes: { ...fp.attributes } };
  }

  /** A call failed in a way that says Docker is unhealthy (a timeout, an unreachable daemon). */
  markUnhealthy(err: unknown): void {
    if (err instanceof DockerTimeoutError || err instanceof DriverUnavailableError) {
      if (this.last.health === 'healthy') this.o.logger.info('docker driver health changed', { health: 'unhealthy', reason: (err as Error).message });
      this.last = { health: 'unhealthy', healthDescription: `Docker is unhealthy: ${(err as Error).message}`, attributes: { 'driver.docker': false } };
    }
  }

  /** Keeps the health fresh (for the reconciler) until the driver's life ends. */
  async loop(intervalMs: number): Promise<void> {
    while (!this.o.life.aborted) {
      try {
        await this.check();
      } catch { /* aborted */ }
      if (!(await sleep(intervalMs, this.o.life))) return;
    }
  }
}
