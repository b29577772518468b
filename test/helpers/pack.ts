/**
 * `npm pack` as a publish would run it (prepack: the published build and the prebuilds), from a copy
 * of the sources: prepack rebuilds dist/src and build/, which other test files use. node_modules is
 * linked, not copied. Used by package.test.ts and prebuild-arm64.test.ts.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bound } from './sandbox.js';

export const ROOT = path.join(__dirname, '..', '..');

export interface Out { code: number; stdout: string; stderr: string }
export function exec(file: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Out> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? bound(300_000), maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err && code === 1 ? `\n${err.message}` : '') });
    });
  });
}

/** What `npm pack` needs from the checkout. */
const PACK_INPUTS = ['package.json', 'package-lock.json', 'README.md', 'LICENSE', 'binding.gyp', 'tsconfig.json', 'tsconfig.build.json', 'bin', 'native', 'src',
  'scripts/prepack.sh', 'scripts/prepare.sh', 'scripts/prebuild-arm64.sh'];

export interface Packed {
  /** The pack's exit status and output (stderr has prepack's). */
  out: Out;
  /** The copy the package was packed from (its LICENSE etc.). */
  src: string;
  /** The tarball, and the paths it holds, sorted. */
  tgz: string;
  files: string[];
  seconds: number;
}

/** Packs a copy of the sources under `work` into `work`; `env` is added to this process's (e.g. CORRAL_PREBUILD_ARM64). */
export async function packCopy(work: string, env: NodeJS.ProcessEnv = {}): Promise<Packed> {
  const src = path.join(work, 'src');
  fs.mkdirSync(path.join(src, 'scripts'), { recursive: true });
  for (const p of PACK_INPUTS) fs.cpSync(path.join(ROOT, p), path.join(src, p), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'));
  const t0 = Date.now();
  const out = await exec('npm', ['pack', '--pack-destination', work, '--json'], { cwd: src, env: { ...process.env, ...env }, timeoutMs: bound(900_000) });
  const seconds = (Date.now() - t0) / 1000;
  if (out.code !== 0) return { out, src, tgz: '', files: [], seconds };
  const info = JSON.parse(out.stdout.slice(out.stdout.indexOf('[')))[0] as { filename: string; files: { path: string }[] };
  return { out, src, tgz: path.join(work, info.filename), files: info.files.map((f) => f.path).sort(), seconds };
}
