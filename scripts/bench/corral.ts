/**
 * corral's pieces for the benches, imported statically from src (a moved or renamed export is a
 * compile error here, not a silently skipped row). Each loader still returns the piece or the
 * reason it cannot be used on this host (addon not built, cgroups not usable, Docker absent), so a
 * bench shows a row as "not measured: <reason>" rather than failing.
 */
import { native, type NativeAddon } from '../../src/native.js';
import { createCgroupManager } from '../../src/cgroups/factory.js';
import type { ManagerOptions } from '../../src/cgroups/options.js';
import type { CgroupManager } from '../../src/cgroups/types.js';
import { RawExecDriver, type RawExecDriverOptions } from '../../src/drivers/raw_exec/index.js';
import { DanglingContainerReconciler, type DanglingContainerReconcilerOptions } from '../../src/drivers/docker/reconcile_dangling.js';
import { DockerDriver, type DockerDriverOptions } from '../../src/drivers/docker/driver.js';
import { errMsg } from './lib.js';

export type Loaded<T> = { ok: true; value: T } | { ok: false; reason: string };

let nativeCache: Loaded<NativeAddon> | undefined;

/** The addon, if built. */
export async function loadNative(): Promise<Loaded<NativeAddon>> {
  if (nativeCache) return nativeCache;
  try {
    nativeCache = { ok: true, value: native() };
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

export type ManagerFactoryOptions = ManagerOptions;

export async function loadCgroupManager(opts: ManagerFactoryOptions): Promise<Loaded<CgroupManager>> {
  try {
    return { ok: true, value: createCgroupManager(opts) };
  } catch (err) {
    return { ok: false, reason: `createCgroupManager(${JSON.stringify(opts)}) failed: ${errMsg(err)}` };
  }
}

export async function loadRawExec(opts: RawExecDriverOptions): Promise<Loaded<RawExecDriver>> {
  try {
    return { ok: true, value: new RawExecDriver(opts) };
  } catch (err) {
    return { ok: false, reason: `new RawExecDriver() failed: ${errMsg(err)}` };
  }
}

export interface DockerPieces {
  DockerDriver: new (opts: DockerDriverOptions) => DockerDriver;
  Reconciler: new (opts: DanglingContainerReconcilerOptions) => DanglingContainerReconciler;
}

export async function loadDockerPieces(): Promise<Loaded<DockerPieces>> {
  return { ok: true, value: { DockerDriver, Reconciler: DanglingContainerReconciler } };
}
