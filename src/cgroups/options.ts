/** Options shared by the managers and the factory. */
import * as fs from 'node:fs';
import { InvalidConfigError } from '../errors.js';
import { formatCpuList, parseCpuList } from './cpulist.js';
import type { AddonProvider } from './io.js';
import type { CgroupLayout, CgroupMode, CgroupVersion } from './types.js';

export interface ManagerOptions {
  /** A layout detected before (skips detection). */
  layout?: CgroupLayout;
  /** Detection overrides (see detectCgroupLayout). */
  root?: string;
  mode?: CgroupMode;
  version?: CgroupVersion;
  /** v2: the parent slice (default `corral.slice`); v1: the directory under each controller (default `corral`). */
  parentName?: string;
  /** Restricts the usable cores to these (each must be in the root's cpuset). */
  cores?: number[];
  /** Default bound of freeze/thaw waits (ms, default 5000). */
  freezeTimeoutMs?: number;
  /** Default bound of kill and destroy (ms, default 10000). */
  killTimeoutMs?: number;
  /**
   * Directory of the lock files that coordinate the cpuset partition between corral processes
   * (default /run/corral). Every process using the same parent must use the same directory.
   */
  lockDir?: string;
  /** Bound of the wait for that lock (ms, default 10000): a CgroupTimeoutError naming the holder. */
  lockTimeoutMs?: number;
  /** The native addon (tests inject fakes). */
  native?: AddonProvider;
}

export const DEFAULT_FREEZE_TIMEOUT_MS = 5000;
export const DEFAULT_KILL_TIMEOUT_MS = 10000;

/** Online cores of the machine (/sys/devices/system/cpu/online). */
export function onlineCores(): number[] {
  try {
    return parseCpuList(fs.readFileSync('/sys/devices/system/cpu/online', 'utf8'));
  } catch {
    return [];
  }
}

/** Reads a cpu list file (first that is readable and non-empty), else undefined. */
export function readCpuListFile(...files: string[]): number[] | undefined {
  for (const f of files) {
    try {
      const t = fs.readFileSync(f, 'utf8');
      if (t.trim() !== '') return parseCpuList(t);
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Applies the `cores` restriction to the cores the root offers. */
export function restrictCores(available: number[], wanted: number[] | undefined): number[] {
  if (wanted === undefined) return available;
  const bad = wanted.filter((c) => !available.includes(c));
  if (bad.length > 0) {
    throw new InvalidConfigError('cores', wanted, `core(s) ${bad.join(',')} are not in the root cpuset (${formatCpuList(available)})`);
  }
  return [...new Set(wanted)].sort((a, b) => a - b);
}
