/**
 * The README's examples (examples/*.ts) stay runnable: each runs to exit 0 as a separate process,
 * under a sandbox of its own (CORRAL_EXAMPLE_PARENT: never the default parent), torn down even when
 * the example fails or hangs.
 */
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { hostLayout } from './helpers/cgroups.js';
import { bound, sandbox } from './helpers/sandbox.js';
import './helpers/docker.js'; // the sandbox then removes the docker example's containers too

const isRoot = process.getuid?.() === 0;
const root = path.join(__dirname, '..');

function dockerAnswers(): boolean {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

function runExample(name: string, parent: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, CORRAL_EXAMPLE_PARENT: parent };
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'examples', name)], { cwd: root, env, timeout: bound(90_000), killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr });
    });
  });
}

for (const name of ['raw-exec.ts', 'cgroups.ts', 'docker.ts']) {
  const run = isRoot ? test : test.skip;
  run(`examples/${name} runs to completion`, async (t) => {
    const sb = sandbox(t, `example-${name.replace(/\.ts$/, '')}`);
    if (name === 'docker.ts' && !dockerAnswers()) {
      t.log('skipped: no dockerd answers here (scripts/docker-up.sh starts one)');
      t.pass();
      return;
    }
    const r = await runExample(name, name === 'cgroups.ts' ? sb.parentFor(hostLayout().version) : sb.parent);
    t.is(r.code, 0, r.out);
  });
}
