/**
 * Child of test/native-clone3.test.ts, run under test/fixtures/seccomp/clone3-deny.c (or without it,
 * as the control): spawns `cat /proc/self/cgroup` into the cgroup2 group argv[2] through corral's
 * native spawn (cgroupDir: clone3 with CLONE_INTO_CGROUP, or the join fallback) and prints one JSON
 * line: { placement, cgroup (what the child saw as its own cgroup2 path), exitCode } or, when the
 * spawn failed, { code, syscall }; and newFds, the fds open afterwards that were not before.
 */
import * as fs from 'node:fs';
import { native, spawnProcess, type ExitInfo, type NativeError } from '../../src/native.js';
import { fdList, newFds, settle } from './loop.js';

async function main(): Promise<void> {
  const dir = process.argv[2]!;
  const n = native();
  await settle();
  const before = fdList();
  const [r, w] = n.pipe();
  let seen: Record<string, unknown>;
  try {
    const s = await spawnProcess({ file: '/bin/cat', argv: ['cat', '/proc/self/cgroup'], envp: [], stdio: [-1, w, 2], cgroupDir: dir, timeoutMs: 30_000 });
    fs.closeSync(w);
    const exit = await new Promise<ExitInfo>((res) => s.process.watch(true, res));
    const out = fs.readFileSync(r, 'utf8'); // the child has exited: EOF is there
    seen = { placement: s.placement, cgroup: /^0::(.*)$/m.exec(out)?.[1] ?? null, exitCode: exit.exitCode };
  } catch (err) {
    fs.closeSync(w);
    seen = { code: (err as NativeError).code, syscall: (err as NativeError).syscall };
  }
  fs.closeSync(r);
  await settle();
  process.stdout.write(`${JSON.stringify({ ...seen, newFds: newFds(before) })}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
