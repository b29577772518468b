/**
 * Bounded Docker Engine API calls: every call gets its own AbortController, aborted by a timer
 * (the bound) or by the caller's signal; the timer and the listener are gone when the call settles.
 * Errors are mapped to corral's: a daemon that cannot be reached → DriverUnavailableError,
 * a daemon that does not answer in time → DockerTimeoutError, an HTTP error → DockerError with its status.
 */
import Docker from 'dockerode';
import { AbortError, CorralError, DockerError, DockerTimeoutError, DriverUnavailableError, InvalidConfigError } from '../../errors.js';

export const DRIVER_NAME = 'docker';

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

/** Sleeps `ms`, or less if `signal` aborts (then resolves false). No timer is left either way. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(true); }, ms);
    const onAbort = () => { clearTimeout(t); resolve(false); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A dockerode client for an endpoint: `unix:///path`, a bare socket path, `tcp://host:port`,
 * `http(s)://host:port`. Without one, DOCKER_HOST is honoured, else /var/run/docker.sock.
 */
export function createDockerClient(endpoint?: string): Docker {
  const ep = endpoint ?? process.env.DOCKER_HOST;
  if (ep === undefined || ep === '') return new Docker({ socketPath: '/var/run/docker.sock' });
  if (ep.startsWith('/')) return new Docker({ socketPath: ep });
  let url: URL;
  try {
    url = new URL(ep);
  } catch {
    throw new InvalidConfigError('endpoint', ep, 'must be unix:///path/to/docker.sock, tcp://host:port or http(s)://host:port');
  }
  switch (url.protocol) {
    case 'unix:':
      if (!url.pathname || url.pathname === '/') throw new InvalidConfigError('endpoint', ep, 'unix endpoint needs a socket path');
      return new Docker({ socketPath: url.pathname });
    case 'tcp:':
    case 'http:':
    case 'https:': {
      const protocol = url.protocol === 'https:' ? 'https' : 'http';
      const port = url.port ? Number(url.port) : protocol === 'https' ? 2376 : 2375;
      return new Docker({ host: url.hostname, port, protocol });
    }
    default:
      throw new InvalidConfigError('endpoint', ep, `unsupported scheme ${url.protocol} (use unix://, tcp://, http:// or https://)`);
  }
}

/** Structured logging used by the driver and the reconciler. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

function fmt(level: string, msg: string, fields?: Record<string, unknown>): string {
  const f = fields && Object.keys(fields).length ? ' ' + JSON.stringify(fields) : '';
  return `corral docker ${level}: ${msg}${f}`;
}

/** Default logger: warnings and errors on stderr, info and debug dropped. */
export const stderrLogger: Logger = {
  debug() {},
  info() {},
  warn(msg, fields) { process.stderr.write(fmt('warn', msg, fields) + '\n'); },
  error(msg, fields) { process.stderr.write(fmt('error', msg, fields) + '\n'); },
};

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
