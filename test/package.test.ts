/**
 * The package as a user gets it: `npm pack` (prepack: published build without source maps and the
 * linux-x64 glibc prebuild), then `npm install <tarball>` into a new project on a PATH without
 * make/g++/python3, then the installed package is used from CJS and ESM, its types are checked by a
 * strict consumer with skipLibCheck: false under node16, nodenext and bundler resolution, and
 * requiring the root is shown not to load dockerode.
 *
 * Packs from a copy of the sources (prepack rebuilds dist/src and build/, which other test files use).
 * One serial test: each step needs the one before.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { groupDirsUnder } from './helpers/cgroups.js';
import { ROOT, exec, packCopy } from './helpers/pack.js';
import { bound, sandbox } from './helpers/sandbox.js';

const CONSUMER_TS = `
import { RawExecDriver, run, type RunResult, type TaskConfig, type RawExecTaskConfig, type TaskDriver, DockerDriver } from 'corral';
import { native } from 'corral/native';
const d = new RawExecDriver({ stateDir: '/tmp/x', cgroupParent: 'corral-consumer' });
const cfg: TaskConfig<RawExecTaskConfig> = { id: 'a', allocId: '00000000-0000-4000-8000-000000000000', name: 'n', driver: { command: 'true', args: ['x'] } };
void d.startTask(cfg);
const drivers: TaskDriver[] = [d, new DockerDriver()];
const r: Promise<RunResult> = run('true', [], { timeoutMs: 1000, resources: { memoryBytes: 1 << 20 } });
void r; void drivers; void native;
`;

const CONSUMER_BAD_TS = `
import { RawExecDriver } from 'corral';
void new RawExecDriver().startTask({ id: 'a', allocId: 'b', name: 'c', driver: { comand: 'true' } });
`;

test.serial('packed tarball: installs without a compiler, runs a task from CJS and ESM, types hold, root does not load dockerode', async (t) => {
  t.timeout(bound(900_000));
  const sb = sandbox(t, 'pkg');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `${sb.name}-pack-`));
  sb.defer(() => fs.rmSync(work, { recursive: true, force: true }));

  // 1. Pack from a copy of the sources. No arm64 cross-build here even where its compiler is installed
  //    (minutes on this machine): test/prebuild-arm64.test.ts packs with it, on request.
  const { out: pack, src, tgz, files, seconds } = await packCopy(work, { CORRAL_PREBUILD_ARM64: '0' });
  t.is(pack.code, 0, pack.stderr);
  t.log(`npm pack (published build and prebuild compile): ${seconds.toFixed(1)} s`);
  t.true(files.includes('LICENSE'), 'LICENSE shipped');
  t.true(fs.readFileSync(path.join(src, 'LICENSE'), 'utf8').startsWith('Mozilla Public License Version 2.0'));
  t.true(files.includes('prebuilds/linux-x64/corral.glibc.node'), `linux-x64 glibc prebuild shipped: ${files.filter((f) => f.startsWith('prebuilds')).join(', ')}`);
  t.deepEqual(files.filter((f) => f.endsWith('.map') || f.endsWith('.tsbuildinfo')), [], 'no source maps (the .ts sources are not shipped)');
  t.deepEqual(files.filter((f) => !/^(LICENSE|README\.md|package\.json|binding\.gyp|bin\/|native\/|prebuilds\/|dist\/src\/)/.test(f)), [], 'nothing but what runs, or builds the fallback');
  t.deepEqual(files.filter((f) => f.startsWith('dist/') && !/\.(js|d\.ts)$/.test(f)), []);
  t.true(files.includes('binding.gyp') && files.includes('native/spawn.cc'), 'sources for the fallback compile');

  // 2. Install into a new project with a PATH of node, npm and sh only (no make, g++, python3).
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  const npmCli = path.join(path.dirname(path.dirname(process.execPath)), 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');
  fs.symlinkSync(fs.existsSync(npmCli) ? npmCli : fs.realpathSync((await exec('sh', ['-c', 'command -v npm'], { cwd: work })).stdout.trim()), path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const noCc = await exec('/bin/sh', ['-c', 'command -v make || command -v g++ || command -v cc || command -v python3 || echo none'], { cwd: work, env: { PATH: bin } });
  t.is(noCc.stdout.trim(), 'none', 'the install PATH has no compiler');
  const app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const env = { PATH: bin, HOME: process.env.HOME ?? '/root', npm_config_cache: process.env.npm_config_cache ?? path.join(process.env.HOME ?? '/root', '.npm') };
  let t0 = Date.now();
  const inst = await exec('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', tgz], { cwd: app, env, timeoutMs: bound(600_000) });
  t.log(`npm install of the tarball without a compiler: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t.is(inst.code, 0, inst.stderr);
  const pkgDir = path.join(app, 'node_modules', 'corral');
  t.false(fs.existsSync(path.join(pkgDir, 'build')), 'no compile happened: the prebuild was used');

  // 3. CJS: the root loads without dockerode, runs a task; the exports map closes deep paths.
  fs.writeFileSync(path.join(app, 'cjs.cjs'), `
    const t0 = process.hrtime.bigint();
    const before = Object.keys(require.cache).length;
    const corral = require('corral');
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const mods = Object.keys(require.cache);
    let deep = 'loaded';
    try { require('corral/dist/src/cli/main.js'); } catch (e) { deep = e.code; }
    const nativeOk = typeof require('corral/native').native === 'function';
    corral.run('sh', ['-c', 'echo cjs $((6*7))'], { cgroupParent: process.argv[2], resources: { memoryBytes: 64 << 20 } }).then((r) => {
      console.log(JSON.stringify({ ms, modules: mods.length - before, dockerode: mods.some((p) => p.includes('/node_modules/dockerode/')),
        deep, nativeOk, cliMain: 'cliMain' in corral, exitCode: r.exitCode, stdout: r.stdout,
        dockerodeAfterRun: Object.keys(require.cache).some((p) => p.includes('/node_modules/dockerode/')) }));
    }, (e) => { console.error(e); process.exitCode = 1; });
  `);
  const cjs = await exec(process.execPath, ['cjs.cjs', sb.parent], { cwd: app });
  t.is(cjs.code, 0, cjs.stderr);
  const c = JSON.parse(cjs.stdout.trim());
  t.log(`require('corral'): ${c.ms.toFixed(1)} ms, ${c.modules} modules`);
  t.like(c, { dockerode: false, dockerodeAfterRun: false, deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED', nativeOk: true, cliMain: false, exitCode: 0, stdout: 'cjs 42\n' });

  // 4. ESM: named imports from the CJS package.
  fs.writeFileSync(path.join(app, 'esm.mjs'), `
    import { run, RawExecDriver } from 'corral';
    const r = await run('sh', ['-c', 'echo esm $((6*7))'], { cgroupParent: process.argv[2] });
    console.log(JSON.stringify({ driver: typeof RawExecDriver, exitCode: r.exitCode, stdout: r.stdout }));
  `);
  const esm = await exec(process.execPath, ['esm.mjs', sb.parent], { cwd: app });
  t.is(esm.code, 0, esm.stderr);
  t.deepEqual(JSON.parse(esm.stdout.trim()), { driver: 'function', exitCode: 0, stdout: 'esm 42\n' });
  t.deepEqual([...groupDirsUnder(sb.parent), ...groupDirsUnder(sb.slice)], [], 'no task group left');

  // 5. Types: strict, skipLibCheck false, three resolutions; a misspelt driver option is an error.
  t0 = Date.now();
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const modes: [string, string, string][] = [['node16', 'node16', 'module'], ['nodenext', 'nodenext', 'module'], ['esnext', 'bundler', 'module']];
  for (const [mod, res, type] of modes) {
    const dir = path.join(app, `ts-${res}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `c-${res}`, private: true, type }));
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        strict: true, skipLibCheck: false, noEmit: true, target: 'ES2022', module: mod, moduleResolution: res,
        typeRoots: [path.join(ROOT, 'node_modules', '@types')], types: ['node'],
      },
      include: ['*.ts'],
    }));
    fs.writeFileSync(path.join(dir, 'good.ts'), CONSUMER_TS);
    fs.writeFileSync(path.join(dir, 'bad.ts'), CONSUMER_BAD_TS);
    // One run for both files: good.ts must add no error, bad.ts exactly the misspelt option's.
    const r = await exec(process.execPath, [tsc, '-p', dir], { cwd: dir });
    const errors = r.stdout.split('\n').filter((l) => /error TS\d+/.test(l));
    t.is(errors.length, 1, `tsc (${res}): ${r.stdout}${r.stderr}`);
    t.regex(errors[0] ?? '', /bad\.ts.*TS2561.*'comand' does not exist in type 'RawExecTaskConfig'/);
  }
  t.log(`consumer type checks: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

test('the library root (from source) loads no dockerode; a docker driver loads it when first used', async (t) => {
  const script = `
    const seen = () => Object.keys(require.cache).some((p) => p.includes('/node_modules/dockerode/'));
    const corral = require('./src/index.ts');
    const atRoot = seen();
    const d = new corral.DockerDriver({ fingerprintIntervalMs: 60000 });
    const it = d.fingerprint()[Symbol.asyncIterator]();
    it.next().finally(() => { console.log(JSON.stringify({ atRoot, afterUse: seen() })); return d.shutdown(); });
  `;
  const r = await exec(process.execPath, ['--import', 'tsx', '-e', script], { cwd: ROOT, timeoutMs: bound(120_000) });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), { atRoot: false, afterUse: true });
});
