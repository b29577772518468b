/**
 * 5. Docker.
 *  a) start → wait → remove of a busybox `true` container: corral's DockerDriver against `docker run --rm`
 *     and bare dockerode calls (create, start, wait, remove).
 *  b) one DanglingContainerReconciler pass with 0, 100 and 500 dangling containers (running `sleep 3600`):
 *     wall time and the Docker API calls it made.
 * Calls are counted by an HTTP proxy on a unix socket in front of dockerd; corral and the dockerode
 * baseline talk to Docker through it. The proxy also hides, in container lists, every container this
 * bench run did not create, so a reconciler pass can never touch another container on the host.
 */
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import type { TaskDriver } from '../../src/drivers/contract.js';
import { RUN_ID, stateDir, timeLeftMs, checkWithin, errMsg, measure, missing, msSince, nowNs, onCleanup, sleep, type Measure, type Row, type Section, type BenchOptions } from './lib.js';
import { loadDockerPieces } from './corral.js';

const execFileP = promisify(cp.execFile);
const IMAGE = process.env.CORRAL_TEST_IMAGE ?? 'corral-test/busybox:latest';
const UPSTREAM = (process.env.DOCKER_HOST?.startsWith('unix://') ? process.env.DOCKER_HOST.slice(7) : undefined) ?? '/var/run/docker.sock';
/** Marks every container this bench run creates (corral reserves io.corral.* for itself). */
const BENCH_LABEL = 'corral-bench.run';
const AGENT_ID = `corral-bench-${RUN_ID}`;
const quietLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** Counting proxy: every request is recorded as "METHOD /path" with ids and the API version elided. */
class CountingProxy {
  readonly socketPath = `/tmp/corral-bench-${RUN_ID}-docker.sock`;
  calls: string[] = [];
  private server?: http.Server;
  private readonly sockets = new Set<net.Socket>();

  async start(): Promise<void> {
    try {
      fs.unlinkSync(this.socketPath);
    } catch {}
    const server = http.createServer((req, res) => this.forward(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    // Hijacked streams (attach, exec start): count, then splice the raw sockets.
    server.on('upgrade', (req, sock: net.Socket, head: Buffer) => {
      this.record(req);
      const up = net.connect(UPSTREAM, () => {
        up.write(`${req.method} ${req.url} HTTP/1.1\r\n${Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
        if (head.length) up.write(head);
        sock.pipe(up).pipe(sock);
      });
      up.on('error', () => sock.destroy());
      sock.on('error', () => up.destroy());
    });
    this.server = server;
    await new Promise<void>((res, rej) => server.listen(this.socketPath, res).once('error', rej));
  }

  private record(req: http.IncomingMessage): void {
    const p = (req.url ?? '').split('?')[0]!.replace(/^\/v[0-9.]+/, '').replace(/\/containers\/[^/]+/, (m) => (m === '/containers/json' || m === '/containers/create' ? m : '/containers/{id}'));
    this.calls.push(`${req.method} ${p}`);
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.record(req);
    const isList = req.method === 'GET' && /^(\/v[0-9.]+)?\/containers\/json/.test(req.url ?? '');
    const up = http.request({ socketPath: UPSTREAM, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      if (!isList || (ur.statusCode ?? 500) >= 300) {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      ur.on('data', (c: Buffer) => chunks.push(c));
      ur.on('end', () => {
        let body = Buffer.concat(chunks);
        try {
          const list = JSON.parse(body.toString('utf8')) as Docker.ContainerInfo[];
          body = Buffer.from(JSON.stringify(list.filter((c) => c.Labels?.[BENCH_LABEL] === RUN_ID)));
        } catch {}
        const headers = { ...ur.headers };
        delete headers['transfer-encoding'];
        headers['content-length'] = String(body.length);
        res.writeHead(ur.statusCode ?? 200, headers);
        res.end(body);
      });
    });
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
    req.pipe(up);
    res.on('close', () => up.destroy());
  }

  reset(): void {
    this.calls = [];
  }

  summary(calls = this.calls): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of calls) out[c] = (out[c] ?? 0) + 1;
    return out;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((res) => (this.server ? this.server.close(() => res()) : res()));
    try {
      fs.unlinkSync(this.socketPath);
    } catch {}
  }
}

async function pool<T>(items: T[], conc: number, fn: (x: T) => Promise<void>, deadline = Infinity): Promise<number> {
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < items.length && Date.now() < deadline) {
      await fn(items[next++]!);
      done++;
    }
  };
  await Promise.all(Array.from({ length: conc }, worker));
  return done;
}

export async function run(o: BenchOptions): Promise<Section> {
  const title = '5. Docker: container lifecycle and reconciler pass';
  const notes: string[] = [];
  if (process.env.CORRAL_BENCH_NO_DOCKER) return { id: 'docker', title, unit: '', columns: [], rows: [], notes, skipped: process.env.CORRAL_BENCH_NO_DOCKER };
  const direct = new Docker({ socketPath: UPSTREAM });
  try {
    await direct.ping();
    await direct.getImage(IMAGE).inspect();
  } catch (err) {
    return { id: 'docker', title, unit: '', columns: [], rows: [], notes, skipped: `Docker is not usable here (${errMsg(err)}); scripts/docker-up.sh starts dockerd and builds ${IMAGE}` };
  }
  const proxy = new CountingProxy();
  await proxy.start();
  onCleanup(() => proxy.stop());
  const removeAllOurs = async () => {
    const left = await direct.listContainers({ all: true, filters: { label: [`${BENCH_LABEL}=${RUN_ID}`] } });
    await pool(left, 8, async (c) => void (await direct.getContainer(c.Id).remove({ force: true }).catch(() => {})));
    return left.length;
  };
  onCleanup(async () => {
    const n = await removeAllOurs();
    if (n) process.stderr.write(`bench docker: removed ${n} leftover containers\n`);
  });
  const client = new Docker({ socketPath: proxy.socketPath });
  const labels = () => ({ [BENCH_LABEL]: RUN_ID });

  // ---- a) lifecycle ----
  const pieces = await loadDockerPieces();
  let driver: TaskDriver | undefined;
  let driverReason = pieces.ok ? undefined : pieces.reason;
  if (pieces.ok) {
    try {
      driver = new pieces.value.DockerDriver({ docker: client, agentId: AGENT_ID, stateDir: stateDir(), logger: quietLogger, gc: { image: false, danglingContainers: { enabled: false } } });
      const d = driver;
      onCleanup(() => d.shutdown());
    } catch (err) {
      driverReason = `new DockerDriver() failed: ${errMsg(err)}`;
    }
  }
  type Impl = { key: string; op: () => Promise<void> };
  let seq = 0;
  const impls: Impl[] = [];
  if (driver) {
    const d = driver;
    impls.push({
      key: 'corral DockerDriver',
      op: async () => {
        const id = `bench-${RUN_ID}-${seq++}`;
        await d.startTask({ id, allocId: randomUUID(), name: 'true', driver: { image: IMAGE, command: 'true', args: [], networkMode: 'none', labels: labels() } });
        const r = await d.waitTask(id);
        await d.destroyTask(id, { force: true });
        if (r.exitCode !== 0) throw new Error(`container exited ${JSON.stringify(r)}`);
      },
    });
  }
  impls.push({
    key: 'bare dockerode',
    op: async () => {
      const c = await client.createContainer({ Image: IMAGE, Cmd: ['true'], Labels: labels(), HostConfig: { NetworkMode: 'none' } });
      await c.start();
      const r = (await c.wait()) as { StatusCode: number };
      await c.remove({ force: true });
      if (r.StatusCode !== 0) throw new Error(`container exited ${r.StatusCode}`);
    },
  });
  impls.push({
    key: 'docker run --rm',
    op: async () => void (await execFileP('docker', ['run', '--rm', '--network', 'none', '--label', `${BENCH_LABEL}=${RUN_ID}`, IMAGE, 'true'])),
  });
  const reps = o.quick ? 3 : 7;
  const runs: Record<string, number[]> = {};
  const callsPerOp: Record<string, string[]> = {};
  const failures: Record<string, string> = {};
  for (const im of impls) {
    try {
      await im.op(); // warm-up
    } catch (err) {
      failures[im.key] = errMsg(err);
    }
  }
  for (let r = 0; r < reps; r++) {
    for (const im of impls) {
      if (failures[im.key]) continue;
      proxy.reset();
      const t0 = nowNs();
      try {
        await im.op();
        (runs[im.key] ??= []).push(msSince(t0));
        callsPerOp[im.key] = proxy.calls;
      } catch (err) {
        failures[im.key] = errMsg(err);
      }
    }
  }
  const lcCols = ['corral DockerDriver', 'bare dockerode', 'docker run --rm'];
  const lcValues: Record<string, Measure> = {};
  for (const c of lcCols) {
    if (failures[c]) lcValues[c] = missing('ms', `failed: ${failures[c]}`);
    else if (c === 'corral DockerDriver' && !driver) lcValues[c] = missing('ms', driverReason ?? 'n/a');
    else lcValues[c] = measure(runs[c] ?? [], 'ms');
  }
  const rows: Row[] = [];
  rows.push({
    case: 'start→wait→remove `true`',
    values: { ...lcValues, 'reconciler pass': missing('ms', 'n/a') },
    checks: [checkWithin('corral no slower than bare dockerode (≤1.05x: noise)', lcValues['corral DockerDriver'], lcValues['bare dockerode'], 1.05)],
    extra: {
      'API calls': ['corral DockerDriver', 'bare dockerode'].map((k) => `${k.split(' ')[1]}: ${callsPerOp[k]?.length ?? '—'}`).join(', '),
    },
  });
  for (const k of ['corral DockerDriver', 'bare dockerode']) {
    if (callsPerOp[k]) notes.push(`${k} calls per container: ${Object.entries(proxy.summary(callsPerOp[k])).map(([c, n]) => `${c}${n > 1 ? ` ×${n}` : ''}`).join(', ')}`);
  }

  // ---- b) reconciler passes ----
  if (!pieces.ok) {
    notes.push(`reconciler: ${pieces.reason}`);
  } else {
    const counts = o.quick ? [0, 20, 100] : [0, 100, 500];
    // Seconds per container to create (12 at a time) and to remove in a pass, learnt from the rows before.
    let perCreateS = 0.4;
    let perRemoveS = 0.4;
    for (const k of counts) {
      const left = timeLeftMs();
      // As many as fit in what is left of the budget (creation, the pass, clean-up), at most k.
      // Removal after a cut-short pass happens in clean-up, after the figures are written.
      const fit = Math.max(0, Math.floor((left / 1000 - 25) / (1.3 * (perCreateS + perRemoveS) + 0.05)));
      const want = Math.min(k, fit);
      if (k > 0 && want < Math.min(k, 10)) {
        rows.push({ case: `reconciler pass, ${k} dangling`, values: { 'reconciler pass': missing('ms', 'not run: the docker time budget was spent') }, checks: [] });
        continue;
      }
      // Create the containers: running `sleep 3600`, labelled as corral's with this bench's agent id, untracked.
      const deadline = Date.now() + Math.max(10_000, want * perCreateS * 1000 * 1.5);
      const tc = Date.now();
      const made = await pool(Array.from({ length: want }, (_, i) => i), 12, async () => {
        const alloc = randomUUID();
        const c = await direct.createContainer({
          Image: IMAGE,
          Cmd: ['sleep', '3600'],
          Labels: { ...labels(), 'io.corral.alloc_id': alloc, 'io.corral.task_name': 'sleeper', 'io.corral.task_id': `${alloc}/sleeper`, 'io.corral.agent_id': AGENT_ID },
          HostConfig: { NetworkMode: 'none' },
          StopSignal: 'SIGKILL',
        });
        await c.start();
      }, deadline);
      const createS = (Date.now() - tc) / 1000;
      if (made > 0) perCreateS = createS / made;
      // The pass is bounded too: aborting the reconciler's signal stops a pass in flight (it reports what it removed).
      const ac = new AbortController();
      const rec = new pieces.value.Reconciler({ docker: client, agentId: AGENT_ID, trackedContainers: () => [], creationGraceMs: 0, logger: quietLogger, signal: ac.signal });
      await sleep(1100); // Created has a resolution of one second: be past the grace of 0
      const passLeft = timeLeftMs() - 12_000;
      const cut = setTimeout(() => ac.abort(), Math.max(5_000, passLeft));
      proxy.reset();
      const t0 = nowNs();
      let res: { removed?: unknown[]; failed?: unknown[]; listed?: number } = {};
      let err: string | undefined;
      try {
        res = (await rec.runOnce()) as typeof res;
      } catch (e) {
        err = errMsg(e);
      }
      clearTimeout(cut);
      const ms = msSince(t0);
      const calls = proxy.summary();
      const lists = calls['GET /containers/json'] ?? 0;
      const removes = calls['DELETE /containers/{id}'] ?? 0;
      const total = proxy.calls.length;
      const removed = res.removed?.length ?? 0;
      if (removed > 0) perRemoveS = ms / 1000 / removed;
      const stillThere = (await direct.listContainers({ all: true, filters: { label: [`${BENCH_LABEL}=${RUN_ID}`] } })).length;
      const expected = 1 + removed;
      if (ac.signal.aborted) notes.push(`reconciler ${k}: the pass was stopped at the time budget after removing ${removed} of ${made}.`);
      rows.push({
        case: `reconciler pass, ${made}${made < k ? ` of ${k}` : ''} dangling`,
        values: { 'reconciler pass': err ? missing('ms', err) : measure([ms], 'ms') },
        checks: [
          {
            target: 'one list call + one call per removal',
            ratio: total,
            ratioText: `${total} calls (${lists} list, ${removes} remove${total - lists - removes ? `, ${total - lists - removes} other: ${Object.keys(calls).filter((c) => c !== 'GET /containers/json' && c !== 'DELETE /containers/{id}').join(', ')}` : ''}) for ${removed} removed`,
            met: err ? null : total === expected && lists === 1,
            ...(err ? { why: err } : {}),
          },
        ],
        extra: { 'API calls': total, removed, 'left after pass': stillThere, 'set-up s': createS.toFixed(1) },
      });
      if (made < k) notes.push(`reconciler ${k}: ${made} containers were created (${createS.toFixed(0)} s, 12 at a time) — as many as the time budget left room for, at the creation and removal rates seen; the row is for ${made}.`);
      if (k !== counts[counts.length - 1]) await removeAllOurs(); // after the last row: in clean-up, once the figures are written
    }
    notes.push('reconciler passes: creationGraceMs 0, no tracked containers, containers labelled as corral\'s with this bench\'s agent id, running `sleep 3600` with --network none; one pass, timed from runOnce() until it resolved (one forced DELETE per container, at the reconciler\'s own removal concurrency).');
  }
  notes.push(`lifecycle: ${reps} runs each, sequential, interleaved; image ${IMAGE}; network none; corral and dockerode talk through the counting proxy (a unix-socket hop both pay), \`docker run\` talks to dockerd directly.`);
  return {
    id: 'docker',
    title,
    unit: 'ms (lower is better)',
    columns: [...lcCols, 'reconciler pass'],
    rows,
    notes,
  };
}
