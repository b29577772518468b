/**
 * The seam between the CLI and the drivers: raw_exec always; docker loaded lazily from
 * src/drivers/docker (so dockerode is only loaded when asked for).
 */
import type { TaskConfig, TaskDriver } from '../drivers/contract.js';
import { RawExecDriver } from '../drivers/raw_exec/index.js';
import { UsageError } from './errors.js';

export type DriverKind = 'raw_exec' | 'docker';

export interface CliDriverOptions {
  stateDir?: string;
  noCgroups?: boolean;
  cgroupParent?: string;
  /** raw_exec: the cgroup version a stored task was started with. */
  cgroupVersion?: 'v1' | 'v2';
  /** docker: the agent id to use instead of reading (or creating) <stateDir>/agent-id. */
  agentId?: string;
  signal?: AbortSignal;
}

export function parseDriverKind(v: string | undefined): DriverKind {
  const k = (v ?? 'raw_exec').replace('-', '_');
  if (k !== 'raw_exec' && k !== 'docker') throw new UsageError(`--driver ${JSON.stringify(v)}: must be raw_exec or docker`);
  return k;
}

export function createCliDriver(kind: DriverKind, o: CliDriverOptions): TaskDriver {
  if (kind === 'raw_exec') {
    return new RawExecDriver({
      ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}),
      ...(o.noCgroups ? { noCgroups: true } : {}),
      ...(o.cgroupParent !== undefined ? { cgroupParent: o.cgroupParent } : {}),
      ...(o.cgroupVersion !== undefined ? { cgroupVersion: o.cgroupVersion } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    });
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const docker = require('../drivers/docker/index.js') as typeof import('../drivers/docker/index.js');
  return new docker.DockerDriver({
    ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}),
    ...(o.cgroupParent !== undefined ? { cgroupParent: o.cgroupParent } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.agentId !== undefined ? { agentId: o.agentId } : {}),
    // A one-shot CLI run must not remove other agents' containers.
    gc: { danglingContainers: { enabled: false } },
  });
}

export interface RunSpec {
  id: string;
  allocId: string;
  name: string;
  env: Record<string, string>;
  user?: string;
  cwd: string;
  command: string;
  args: string[];
  image?: string;
  inheritEnv: boolean;
  json: boolean;
  resources: TaskConfig['resources'];
  tty?: boolean;
}

/**
 * The TaskConfig `corral run` starts: the task's stdio is ours (fds 0, 1, 2), or the pty's slave with
 * --tty; a container gets our stdin as a stream (copied into it, EOF at its end).
 */
export function taskConfigFor(kind: DriverKind, s: RunSpec, io: { stdinFd?: number; tty?: boolean; stdin?: NodeJS.ReadableStream } = {}): TaskConfig {
  const base = {
    id: s.id, allocId: s.allocId, name: s.name, env: s.env, ...(s.user !== undefined ? { user: s.user } : {}),
    ...(s.resources && Object.keys(s.resources).length > 0 ? { resources: s.resources } : {}),
  };
  if (kind === 'raw_exec') {
    return {
      ...base,
      driver: {
        command: s.command, args: s.args, workDir: s.cwd,
        ...(io.tty && io.stdinFd !== undefined
          ? { stdinFd: io.stdinFd, tty: true, stdoutFd: io.stdinFd, stderrFd: io.stdinFd }
          : { ...(io.stdinFd !== undefined ? { stdinFd: io.stdinFd } : {}), stdoutFd: s.json ? 2 : 1, stderrFd: 2 }),
        ...(s.inheritEnv ? { inheritEnv: true } : {}),
      },
    };
  }
  if (!s.image) throw new UsageError('--driver docker needs --image');
  return {
    ...base,
    stdoutPath: s.json ? '/dev/stderr' : '/dev/stdout',
    stderrPath: '/dev/stderr',
    driver: {
      image: s.image, ...(s.command ? { command: s.command } : {}), ...(s.args.length > 0 ? { args: s.args } : {}),
      ...(io.stdin ? { stdin: io.stdin } : {}),
    },
  };
}
