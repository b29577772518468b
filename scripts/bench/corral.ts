/**
 * Loads corral's pieces for the benches. Each loader returns the piece or the reason it is not usable
 * (not built, not there yet, a stub), so a bench can show a row as "not measured: <reason>" rather than fail.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeAddon } from '../../src/native.js';
import type { CgroupManager } from '../../src/cgroups/types.js';
import type { TaskDriver } from '../../src/drivers/contract.js';
import { REPO, errMsg } from './lib.js';

export type Loaded<T> = { ok: true; value: T } | { ok: false; reason: string };

async function importFirst(candidates: string[], exportName: string): Promise<Loaded<unknown>> {
  const reasons: string[] = [];
  for (const rel of candidates) {
    const file = path.join(REPO, rel);
    if (!fs.existsSync(file)) {
      reasons.push(`${rel} missing`);
      continue;
    }
    try {
      const mod = (await import(file)) as Record<string, unknown>;
      const v = mod[exportName] ?? (mod.default as Record<string, unknown> | undefined)?.[exportName];
      if (v !== undefined) return { ok: true, value: v };
      reasons.push(`${rel} has no export ${exportName}`);
    } catch (err) {
      reasons.push(`${rel}: ${errMsg(err)}`);
    }
  }
  return { ok: false, reason: `corral's ${exportName} is not available (${reasons.join('; ')})` };
}

let nativeCache: Loaded<NativeAddon> | undefined;

/** The addon, if built. */
export async function loadNative(): Promise<Loaded<NativeAddon>> {
  if (nativeCache) return nativeCache;
  const r = await importFirst(['src/native.ts'], 'native');
  if (!r.ok) return (nativeCache = r);
  try {
    nativeCache = { ok: true, value: (r.value as () => NativeAddon)() };
  } catch (err) {
    nativeCache = { ok: false, reason: errMsg(err) };
  }
  return nativeCache;
}

/** Checks that a native function is implemented (the addon first landed with spawn/watchExit stubbed as ENOSYS). */
export function nativeHas(n: NativeAddon, fn: keyof NativeAddon): Loaded<true> {
  if (typeof n[fn] !== 'function') return { ok: false, reason: `native ${String(fn)} is not exported by the addon` };
  return { ok: true, value: true };
}

export interface ManagerFactoryOptions {
  root?: string;
  mode?: 'v1' | 'hybrid' | 'v2';
  version?: 'v1' | 'v2';
  parentName?: string;
  killTimeoutMs?: number;
  freezeTimeoutMs?: number;
}

export async function loadCgroupManager(opts: ManagerFactoryOptions): Promise<Loaded<CgroupManager>> {
  const r = await importFirst(['src/cgroups/index.ts', 'src/cgroups/manager.ts', 'src/cgroups/factory.ts'], 'createCgroupManager');
  if (!r.ok) return r;
  try {
    const mgr = await (r.value as (o: ManagerFactoryOptions) => CgroupManager | Promise<CgroupManager>)(opts);
    return { ok: true, value: mgr };
  } catch (err) {
    return { ok: false, reason: `createCgroupManager(${JSON.stringify(opts)}) failed: ${errMsg(err)}` };
  }
}

type DriverCtor = new (opts?: Record<string, unknown>) => TaskDriver;

export async function loadRawExec(opts: Record<string, unknown>): Promise<Loaded<TaskDriver>> {
  const r = await importFirst(['src/drivers/raw_exec/index.ts', 'src/drivers/raw_exec/driver.ts'], 'RawExecDriver');
  if (!r.ok) return r;
  try {
    return { ok: true, value: new (r.value as DriverCtor)(opts) };
  } catch (err) {
    return { ok: false, reason: `new RawExecDriver() failed: ${errMsg(err)}` };
  }
}

export async function loadDockerPieces(): Promise<Loaded<{ DockerDriver: DriverCtor; Reconciler: new (opts: Record<string, unknown>) => { runOnce(): Promise<unknown> } }>> {
  const d = await importFirst(['src/drivers/docker/index.ts', 'src/drivers/docker/driver.ts'], 'DockerDriver');
  if (!d.ok) return d;
  const rc = await importFirst(['src/drivers/docker/index.ts', 'src/drivers/docker/reconciler.ts'], 'DanglingContainerReconciler');
  if (!rc.ok) return rc;
  return { ok: true, value: { DockerDriver: d.value as DriverCtor, Reconciler: rc.value as new (opts: Record<string, unknown>) => { runOnce(): Promise<unknown> } } };
}
