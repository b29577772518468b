/** Structured logging for the long-lived parts (docker driver, reconciler): a small interface a host app can route. */
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
