/** The README's examples (examples/*.ts) stay runnable: each runs to exit 0 as a separate process. */
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import * as path from 'node:path';

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

function runExample(name: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'examples', name)], { cwd: root, timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr });
    });
  });
}

for (const name of ['raw-exec.ts', 'cgroups.ts', 'docker.ts']) {
  const run = isRoot ? test : test.skip;
  run(`examples/${name} runs to completion`, async (t) => {
    if (name === 'docker.ts' && !dockerAnswers()) {
      t.log('skipped: no dockerd answers here (scripts/docker-up.sh starts one)');
      t.pass();
      return;
    }
    const r = await runExample(name);
    t.is(r.code, 0, r.out);
  });
}
