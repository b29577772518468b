/** src/util/abort.ts: the one signal combiner every layer uses. */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { anySignal } from '../src/util/abort.js';

test('anySignal: a combined signal aborts with any source, and undefined ones are ignored', (t) => {
  t.is(anySignal(), undefined);
  const a = new AbortController();
  t.is(anySignal(undefined, a.signal), a.signal);
  const b = new AbortController();
  const any = anySignal(a.signal, b.signal)!;
  t.false(any.aborted);
  b.abort(new Error('b'));
  t.true(any.aborted);
  t.is((any.reason as Error).message, 'b');
});

test('anySignal keeps an AbortSignal.timeout() source alive: it still fires after a GC (Node 20 collects it under AbortSignal.any alone)', async (t) => {
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', '--import', 'tsx', path.join(__dirname, 'fixtures/abort/any-timeout-gc.ts')], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
  t.is(out, 'aborted');
});
