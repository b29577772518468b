/**
 * `corral run` once its options are checked: start the task on our stdio (or a pty), stop it on the
 * first SIGINT/SIGTERM, kill it on the second, pass the other signals through, sample its usage,
 * and exit with its status. Whatever happens, the task's processes, cgroup and record are gone
 * (and the terminal restored) when this returns.
 */
import * as fs from 'node:fs';
import type { ExitResult, TaskDriver } from '../drivers/contract.js';
import { DEFAULT_PATH } from '../drivers/raw_exec/config.js';
import { createCliDriver, type DriverKind, type RunSpec, taskConfigFor } from './drivers.js';
import { EXIT_USAGE, type FlagNames, commandFailure, inUserTerms, reportError } from './errors.js';
import { SignalRelay } from './signal-relay.js';
import { type Peak, formatSummary, hitLimits, newPeak, trackPeak } from './summary.js';
import { PtySession } from './tty.js';
import { showPullProgress } from './pull-progress.js';
import type { RunIo } from './run.js';

export interface ExecOpts {
  killSignal: string;
  killTimeoutMs: number;
  stateDir: string | undefined;
  noCgroups: boolean;
  cgroupParent: string | undefined;
  json: boolean;
  summary: boolean;
  flags: FlagNames;
}

/** How long, after the task is gone, we keep copying what is left in the pty. */
const PTY_DRAIN_MS = 2000;

export async function execute(kind: DriverKind, spec: RunSpec & { tty: boolean }, o: ExecOpts, io: RunIo): Promise<number> {
  let driver: TaskDriver | undefined;
  let pty: PtySession | undefined;
  let started = false;
  const statsAc = new AbortController();
  const peak: Peak = newPeak();
  const t0 = performance.now();
  let stopping: Promise<void> | undefined;
  // Signals: graceful stop, then immediate kill; the others are relayed to the task once it runs.
  const relay = new SignalRelay({
    onStop: (sig, count, replay) => {
      if (replay) { /* announced when it arrived */ } else if (count === 1) io.stderr.write(`corral: ${sig}: stopping the task (${o.killSignal}, group kill after ${o.killTimeoutMs} ms; again to kill now)\n`);
      else io.stderr.write(`corral: ${sig}: killing the task now\n`);
      if (!started || !driver) return;
      const p = driver.stopTask(spec.id, { timeoutMs: count > 1 ? 0 : o.killTimeoutMs, signal: o.killSignal }).catch((err) => {
        if ((err as { code?: string }).code !== 'ABORT_ERR') reportError(err, io.stderr);
      });
      stopping = stopping ? Promise.all([stopping, p]).then(() => {}) : p;
    },
    forward: (sig) => {
      if (!started || !driver) return false;
      if (sig === 'SIGWINCH') {
        pty?.resize(); // the kernel signals the pty's foreground group
        return true;
      }
      driver.signalTask(spec.id, sig).catch(() => { /* it is exiting */ });
      return true;
    },
  }, { tty: spec.tty, install: !io.inProcess });
  let code = 1;
  try {
    driver = createCliDriver(kind, {
      ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}), noCgroups: o.noCgroups,
      ...(o.cgroupParent !== undefined ? { cgroupParent: o.cgroupParent } : {}),
    });
    let stdinFd: number | undefined;
    if (spec.tty) {
      pty = new PtySession(spec.json ? io.stderr : io.stdout);
      stdinFd = pty.slave;
    } else if (!io.inProcess && isOpen(0)) {
      stdinFd = 0;
    }
    // A container cannot be handed our fd 0: the docker driver copies it in (and half-closes at its end).
    const stdin = kind === 'docker' && stdinFd === 0 ? process.stdin : undefined;
    const cfg = taskConfigFor(kind, spec, { ...(stdinFd !== undefined ? { stdinFd } : {}), tty: spec.tty, ...(stdin ? { stdin } : {}) });
    const progress = new AbortController();
    const pulls = showPullProgress(driver, spec.id, io.stderr, progress.signal);
    try {
      await driver.startTask(cfg);
    } catch (err) {
      throw commandFailure(inUserTerms(err, o.flags), spec.command, {
        cwd: spec.cwd, path: spec.env.PATH ?? DEFAULT_PATH, user: spec.user,
      });
    } finally {
      progress.abort();
      await pulls;
    }
    started = true;
    pty?.start();
    relay.taskStarted();
    const sampler = (async () => {
      try {
        for await (const s of driver.taskStats(spec.id, { intervalMs: 500, signal: statsAc.signal })) trackPeak(peak, s);
      } catch {
        /* stats are best effort */
      }
    })();
    const result: ExitResult = await driver.waitTask(spec.id);
    const durationMs = performance.now() - t0;
    statsAc.abort();
    await sampler;
    if (driver.sampleStats) {
      try {
        trackPeak(peak, driver.sampleStats(spec.id));
      } catch {
        /* best effort */
      }
    }
    if (stopping) await stopping;
    code = exitCodeOf(result);
    const killedByUs = relay.stopCount > 0;
    if (o.json) io.stdout.write(JSON.stringify({ taskId: spec.id, allocId: spec.allocId, exitResult: result, peak, durationMs: Math.round(durationMs) }) + '\n');
    if (o.summary || hitLimits(result, peak) || killedByUs) io.stderr.write(formatSummary(result, durationMs, peak, killedByUs) + '\n');
  } catch (err) {
    code = reportError(err, io.stderr);
  } finally {
    statsAc.abort();
    if (driver) {
      if (started) {
        await driver.destroyTask(spec.id, { force: true }).catch((err) => {
          code = code === 0 ? EXIT_USAGE : code; // the task did its work; corral failed to clean up
          reportError(err, io.stderr);
        });
      }
      await driver.shutdown();
    }
    if (pty) await pty.close(started ? PTY_DRAIN_MS : 0);
    relay.close();
  }
  return code;
}

function isOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

/** The exit code corral run returns for a task's result: its code, 128+n for signal n, 1 when unknown. */
export function exitCodeOf(r: ExitResult): number {
  if (r.signal !== null && r.signal !== undefined && r.signal > 0) return 128 + r.signal;
  if (r.exitCode !== null && r.exitCode !== undefined) return r.exitCode;
  return 1;
}
