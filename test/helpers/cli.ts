/**
 * Running the `corral` CLI as a real process for the cli-*.test.ts files: from the TypeScript
 * sources through tsx, with pipes, or under a pseudo-terminal driven by python3's pty module (for
 * Ctrl-C, --tty and window sizes, as a user at a terminal would).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import type { Sandbox } from './sandbox.js';
import { bound } from './names.js';

export const ENTRY = path.join(__dirname, '..', '..', 'src', 'cli', 'main-entry.ts');
/** argv that runs corral (for shells and for the pty driver). */
export const CORRAL = [process.execPath, '--import', 'tsx', ENTRY];

export interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

export interface Corral {
  child: ChildProcess;
  done: Promise<Run>;
  /** corral itself has exited (its task, holding our pipes, may still run). */
  exited: Promise<void>;
  /** Resolves once `text` has appeared on stdout or stderr. */
  seen(text: string | RegExp, timeoutMs?: number): Promise<void>;
  output(): { stdout: string; stderr: string };
}

/** Starts `corral ARGS`; registered for a SIGKILL at the sandbox's teardown if it is still running. */
export function corral(sb: Sandbox | undefined, args: string[], opts: { stdin?: string | 'inherit-null' } = {}): Corral {
  const child = spawn(CORRAL[0]!, [...CORRAL.slice(1), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  sb?.defer(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  let stdout = '';
  let stderr = '';
  const waiters: (() => void)[] = [];
  const poke = () => { for (const w of waiters.splice(0)) w(); };
  child.stdout!.on('data', (d: Buffer) => { stdout += d; poke(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d; poke(); });
  if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);
  else child.stdin!.end();
  const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => { poke(); resolve({ code, signal, stdout, stderr }); }));
  const seen = (text: string | RegExp, timeoutMs = bound(60_000)) => new Promise<void>((resolve, reject) => {
    const has = () => (typeof text === 'string' ? (stdout + stderr).includes(text) : text.test(stdout + stderr));
    const timer = setTimeout(() => reject(new Error(`did not see ${String(text)} within ${timeoutMs} ms; stdout ${JSON.stringify(stdout)} stderr ${JSON.stringify(stderr)}`)), timeoutMs);
    const check = () => {
      if (has()) { clearTimeout(timer); resolve(); return; }
      if (child.exitCode !== null || child.signalCode !== null) { clearTimeout(timer); reject(new Error(`corral ended before ${String(text)}: stdout ${JSON.stringify(stdout)} stderr ${JSON.stringify(stderr)}`)); return; }
      waiters.push(check);
    };
    check();
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { child, done, exited, seen, output: () => ({ stdout, stderr }) };
}

export const runCorral = (sb: Sandbox | undefined, args: string[], stdin?: string): Promise<Run> => corral(sb, args, stdin !== undefined ? { stdin } : {}).done;

/** Runs a shell pipeline; `$CORRAL` in it is the corral command. */
export function shell(script: string, timeoutMs = bound(60_000)): Promise<Run> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', script], { env: { ...process.env, CORRAL: CORRAL.join(' ') }, timeout: timeoutMs }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number; signal?: NodeJS.Signals }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

export interface PtyStep {
  /** Wait until this text appears in the terminal output (after the previous step's match). */
  wait: string;
  /** Then type this (e.g. "\u0003" for Ctrl-C). */
  send?: string;
  /** Or set the terminal's window size (the foreground process gets SIGWINCH). */
  resize?: [rows: number, cols: number];
  /** Or send this signal to corral. */
  signal?: string;
}

export interface PtyRun {
  code: number;
  output: string;
  /** How many steps ran. */
  steps: number;
  /** Whether the terminal was back in canonical mode with echo after corral exited. */
  cooked: boolean;
}

const PTY_DRIVER = `
import json, os, pty, select, signal, struct, sys, termios, fcntl, time
spec = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(spec["argv"][0], spec["argv"])
rows, cols = spec.get("size", [24, 80])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
buf = b""; pos = 0; step = 0; steps = spec["steps"]; deadline = time.time() + spec["timeout"]
status = None; cooked = False; eof = False
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            d = os.read(fd, 65536)
        except OSError:
            d = b""
        if not d:
            eof = True
        buf += d
    while step < len(steps):
        i = buf.find(steps[step]["wait"].encode(), pos)
        if i < 0:
            break
        pos = i + len(steps[step]["wait"])
        s = steps[step]
        if "send" in s:
            os.write(fd, s["send"].encode())
        if "resize" in s:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", s["resize"][0], s["resize"][1], 0, 0))
        if "signal" in s:
            os.kill(pid, getattr(signal, s["signal"]))
        step += 1
    if status is None:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p == pid:
            status = st
            lflag = termios.tcgetattr(fd)[3]
            cooked = bool(lflag & termios.ICANON) and bool(lflag & termios.ECHO)
    if status is not None and (eof or not r):
        break
    if eof and status is None:
        time.sleep(0.02)
if status is None:
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "output": buf.decode("utf8", "replace"), "steps": step, "cooked": cooked}))
`;

/** Runs `corral ARGS` on a pseudo-terminal (its controlling terminal), performing `steps` as output appears. */
export function onPty(args: string[], steps: PtyStep[], opts: { size?: [number, number]; timeoutMs?: number } = {}): Promise<PtyRun> {
  const spec = { argv: [...CORRAL, ...args], steps, size: opts.size ?? [24, 80], timeout: (opts.timeoutMs ?? bound(60_000)) / 1000 };
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', PTY_DRIVER, JSON.stringify(spec)], { timeout: (opts.timeoutMs ?? bound(60_000)) + 10_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`pty driver: ${err.message} ${stderr}`));
      resolve(JSON.parse(stdout) as PtyRun);
    });
  });
}

export function taskFiles(sb: Sandbox): string[] {
  try {
    return fs.readdirSync(path.join(sb.stateDir, 'tasks'));
  } catch {
    return [];
  }
}

/** Live (non-zombie) processes whose command line contains `marker`. */
export function pidsWithMarker(marker: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (!fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(marker)) continue;
      const st = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      if (st.slice(st.lastIndexOf(')') + 2)[0] !== 'Z') out.push(Number(name));
    } catch { /* gone */ }
  }
  return out;
}
