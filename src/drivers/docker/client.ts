/**
 * The one door to the Docker Engine API. dockerode is loaded here, and only here, when the first
 * client is created (so loading corral, or using only raw_exec, never loads it), and it is typed
 * through the small interfaces below: exactly the calls corral makes, with corral's own types, so
 * no public type mentions dockerode (a consumer needs no @types/dockerode). A dockerode instance
 * satisfies DockerApi structurally, so a caller may pass its own (e.g. a wrapper that counts calls).
 *
 * Every call is bounded: it gets its own AbortController, aborted by a timer (the bound) or by the
 * caller's signal; the timer and the listener are gone when the call settles. Errors are mapped to
 * corral's: a daemon that cannot be reached → DriverUnavailableError, a daemon that does not answer
 * in time → DockerTimeoutError, an HTTP error → DockerError with its status.
 */
import { AbortError, CorralError, DockerError, DockerTimeoutError, DriverUnavailableError, InvalidConfigError } from '../../errors.js';

export const DRIVER_NAME = 'docker';

export interface AbortOpts {
  abortSignal?: AbortSignal;
}

/** A container as `docker ps` lists it. */
export interface ContainerInfo {
  Id: string;
  Names: string[];
  Image: string;
  /** Seconds since the epoch. */
  Created: number;
  Labels: { [label: string]: string };
  Mounts: Array<{ Destination: string }>;
}

/** What corral reads of `docker inspect <container>`. */
export interface ContainerInspect {
  Id: string;
  Name: string;
  /** The image ID. */
  Image: string;
  Config: { Image: string; Labels: { [label: string]: string } };
  State: {
    Status: string;
    Running: boolean;
    Paused: boolean;
    Restarting: boolean;
    OOMKilled: boolean;
    ExitCode: number;
    Error: string;
    FinishedAt: string;
    /** Host pid of the main process while it runs (0 once stopped). */
    Pid?: number;
    StartedAt?: string;
  };
}

export interface ExecInspect {
  Running: boolean;
  ExitCode: number | null;
  Pid: number;
}

export interface DockerExec {
  start(opts: { hijack?: boolean; stdin?: boolean } & AbortOpts): Promise<NodeJS.ReadableStream>;
  inspect(opts?: AbortOpts): Promise<ExecInspect>;
}

export interface DockerContainer {
  id: string;
  inspect(opts?: AbortOpts): Promise<ContainerInspect>;
  start(opts?: AbortOpts): Promise<unknown>;
  kill(opts?: { signal?: string } & AbortOpts): Promise<unknown>;
  remove(opts?: { force?: boolean; v?: boolean } & AbortOpts): Promise<unknown>;
  wait(opts?: { condition?: 'not-running' | 'next-exit' | 'removed' } & AbortOpts): Promise<unknown>;
  logs(opts?: { follow: true; stdout?: boolean; stderr?: boolean; since?: number } & AbortOpts): Promise<NodeJS.ReadableStream>;
  stats(opts?: { stream: true } & AbortOpts): Promise<NodeJS.ReadableStream>;
  exec(opts: { Cmd: string[]; AttachStdout?: boolean; AttachStderr?: boolean; AttachStdin?: boolean; Tty?: boolean } & AbortOpts): Promise<DockerExec>;
  /** With hijack: the raw connection (stdin written to it; stdout/stderr read from it when attached). */
  attach(opts: { stream: true; stdin?: boolean; stdout?: boolean; stderr?: boolean; hijack: true } & AbortOpts): Promise<NodeJS.ReadWriteStream>;
}

export interface DockerImage {
  inspect(opts?: { manifests?: boolean } & AbortOpts): Promise<{ Id: string }>;
  remove(opts?: AbortOpts): Promise<unknown>;
}

/** The options of a container create that corral sets. */
export interface ContainerCreate {
  name?: string;
  Image: string;
  Cmd?: string[];
  Entrypoint?: string[];
  Env?: string[];
  Labels?: Record<string, string>;
  WorkingDir?: string;
  User?: string;
  /** driver.stdin: the container's stdin is open, attached before start, closed after the one attach (EOF). */
  OpenStdin?: boolean;
  StdinOnce?: boolean;
  AttachStdin?: boolean;
  HostConfig?: {
    NetworkMode?: string;
    Binds?: string[];
    Privileged?: boolean;
    Memory?: number;
    MemorySwap?: number;
    CpuShares?: number;
    CpusetCpus?: string;
    PidsLimit?: number;
    CgroupParent?: string;
  };
}

/** The part of the Docker Engine API corral uses. */
export interface DockerApi {
  ping(opts?: AbortOpts): Promise<unknown>;
  version(opts?: AbortOpts): Promise<{ Version: string; ApiVersion: string }>;
  info(opts?: AbortOpts): Promise<{ CgroupVersion?: string; CgroupDriver?: string }>;
  listContainers(opts?: { all?: boolean; filters?: { label?: string[] } } & AbortOpts): Promise<ContainerInfo[]>;
  createContainer(opts: ContainerCreate & AbortOpts): Promise<{ id: string }>;
  getContainer(id: string): DockerContainer;
  getImage(ref: string): DockerImage;
  pull(ref: string, opts: AbortOpts, callback: (err: unknown, stream?: NodeJS.ReadableStream) => void): unknown;
  modem: {
    demuxStream(stream: NodeJS.ReadableStream, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): void;
    followProgress(
      stream: NodeJS.ReadableStream,
      onFinished: (err: Error | null, output: Array<Record<string, unknown>>) => void,
      onProgress?: (event: Record<string, unknown>) => void,
    ): void;
  };
}

/**
 * A client for an endpoint: `unix:///path`, a bare socket path, `tcp://host:port`,
 * `http(s)://host:port`. Without one, DOCKER_HOST is honoured, else /var/run/docker.sock.
 * The first call loads dockerode.
 */
export function createDockerClient(endpoint?: string): DockerApi {
  const ep = endpoint ?? process.env.DOCKER_HOST;
  const opts = endpointOptions(ep);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Dockerode = require('dockerode') as typeof import('dockerode');
  return new Dockerode(opts);
}

function endpointOptions(ep: string | undefined): { socketPath: string } | { host: string; port: number; protocol: 'http' | 'https' } {
  if (ep === undefined || ep === '') return { socketPath: '/var/run/docker.sock' };
  if (ep.startsWith('/')) return { socketPath: ep };
  let url: URL;
  try {
    url = new URL(ep);
  } catch {
    throw new InvalidConfigError('endpoint', ep, 'must be unix:///path/to/docker.sock, tcp://host:port or http(s)://host:port');
  }
  switch (url.protocol) {
    case 'unix:':
      if (!url.pathname || url.pathname === '/') throw new InvalidConfigError('endpoint', ep, 'unix endpoint needs a socket path');
      return { socketPath: url.pathname };
    case 'tcp:':
    case 'http:':
    case 'https:': {
      const protocol = url.protocol === 'https:' ? 'https' : 'http';
      const port = url.port ? Number(url.port) : protocol === 'https' ? 2376 : 2375;
      return { host: url.hostname, port, protocol };
    }
    default:
      throw new InvalidConfigError('endpoint', ep, `unsupported scheme ${url.protocol} (use unix://, tcp://, http:// or https://)`);
  }
}

/** Error codes of a socket that is not there, refuses or drops us: the daemon is down, not the request wrong. */
const CONNECTION_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EACCES', 'ENOTFOUND', 'EAI_AGAIN']);

export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && CONNECTION_CODES.has(code);
}

/** The HTTP status of a dockerode error, if it has one. */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof DockerError) return err.statusCode;
  const s = (err as { statusCode?: unknown })?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

function messageOf(err: unknown): string {
  const e = err as { json?: { message?: unknown }; reason?: unknown; message?: unknown };
  if (e?.json && typeof e.json.message === 'string') return e.json.message;
  if (typeof e?.message === 'string') {
    // dockerode: "(HTTP code 404) no such container - No such container: abc "
    const m = /^\(HTTP code \d+\) [^-]*- (.*)$/s.exec(e.message);
    return (m ? m[1]! : e.message).trim();
  }
  return String(err);
}

/** Maps any error a dockerode call threw to a CorralError. */
export function mapDockerError(operation: string, err: unknown): CorralError {
  if (err instanceof CorralError) return err;
  if (isConnectionError(err)) {
    return new DriverUnavailableError(DRIVER_NAME, `cannot reach the Docker daemon (${(err as { code: string }).code}) during ${operation}: ${messageOf(err)}`, { cause: err });
  }
  return new DockerError(operation, messageOf(err), statusOf(err), { cause: err });
}

/**
 * Runs `fn` with a signal that aborts after `timeoutMs` or when `outer` aborts, whichever comes first.
 * Resolves or rejects as soon as that happens even if the underlying request ignores the signal.
 */
export function bounded<T>(
  operation: string,
  timeoutMs: number,
  outer: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  if (outer?.aborted) return Promise.reject(new AbortError(`docker ${operation}`));
  const ac = new AbortController();
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (f: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuter);
      f();
    };
    const timer = setTimeout(() => {
      const e = new DockerTimeoutError(operation, timeoutMs);
      finish(() => reject(e));
      ac.abort(e);
    }, timeoutMs);
    const onOuter = () => {
      const e = new AbortError(`docker ${operation}`);
      finish(() => reject(e));
      ac.abort(e);
    };
    outer?.addEventListener('abort', onOuter, { once: true });
    let p: Promise<T>;
    try {
      p = fn(ac.signal);
    } catch (err) {
      finish(() => reject(mapDockerError(operation, err)));
      return;
    }
    p.then(
      (v) => finish(() => resolve(v)),
      (err) => finish(() => reject(mapDockerError(operation, err))),
    );
  });
}

/** Ends a response stream of the Engine API (the HTTP socket with it). */
export function destroyStream(stream: NodeJS.ReadableStream): void {
  (stream as { destroy?: () => void }).destroy?.();
}
