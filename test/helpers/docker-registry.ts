/**
 * A tiny Docker Registry (v2 API, read-only) on 127.0.0.1 for pull tests: no registry is reachable
 * from this machine, and dockerd pulls from 127.0.0.0/8 over plain HTTP by default.
 * It serves one image made here from Debian's static busybox (one gzip layer). `hang` makes
 * manifest requests never answer (to test the pull timeout).
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function buildLayer(): Buffer {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-reg-layer-'));
  try {
    const root = path.join(dir, 'root');
    fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(root, 'tmp'));
    fs.copyFileSync('/bin/busybox', path.join(root, 'bin', 'busybox'));
    fs.chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'sleep', 'echo', 'true', 'cat']) fs.symlinkSync('busybox', path.join(root, 'bin', a));
    const tar = path.join(dir, 'layer.tar');
    execFileSync('tar', ['-C', root, '-cf', tar, '.']);
    return fs.readFileSync(tar);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export interface TestRegistry {
  host: string;
  /** A pullable reference to the served image (any repository/tag is served). */
  ref(repo: string, tag: string): string;
  hang: boolean;
  requests: string[];
  close(): Promise<void>;
}

export async function startRegistry(): Promise<TestRegistry> {
  const tar = buildLayer();
  const layer = gzipSync(tar);
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Cmd: ['/bin/sh'], Env: ['PATH=/bin'] },
    rootfs: { type: 'layers', diff_ids: [sha(tar)] },
    history: [{ created: '2026-01-01T00:00:00Z', created_by: 'corral test registry' }],
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: sha(config) },
    layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.length, digest: sha(layer) }],
  }));
  const blobs = new Map<string, Buffer>([[sha(config), config], [sha(layer), layer]]);
  const hanging = new Set<http.ServerResponse>();
  const reg: TestRegistry = {
    host: '',
    hang: false,
    requests: [],
    ref: (repo, tag) => `${reg.host}/${repo}:${tag}`,
    close: () => new Promise<void>((resolve) => {
      for (const r of hanging) r.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  const send = (res: http.ServerResponse, req: http.IncomingMessage, type: string, body: Buffer, digest?: string) => {
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': body.length, 'Docker-Distribution-API-Version': 'registry/2.0', ...(digest ? { 'Docker-Content-Digest': digest } : {}) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    reg.requests.push(`${req.method} ${url}`);
    if (url === '/v2/' || url === '/v2') return send(res, req, 'application/json', Buffer.from('{}'));
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)$/.exec(url);
    if (m && m[2] === 'manifests') {
      if (reg.hang) { hanging.add(res); return; }
      return send(res, req, 'application/vnd.docker.distribution.manifest.v2+json', manifest, sha(manifest));
    }
    if (m && m[2] === 'blobs' && blobs.has(m[3]!)) return send(res, req, 'application/octet-stream', blobs.get(m[3]!)!, m[3]);
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'unknown' }] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  reg.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return reg;
}
