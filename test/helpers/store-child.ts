/**
 * A separate agent process on a state dir, for ownership tests: `adopt <stateDir> <taskId>` prints
 * `ready`, waits for a line on stdin, tries to adopt the record and prints `won` or the error code,
 * then stays alive (still the owner) until stdin closes; `hold <stateDir> <taskId>` creates a record
 * owned by this process, prints `ready` and stays alive until killed.
 */
import { TaskStore } from '../../src/store/task-store.js';

const [cmd, stateDir, taskId] = process.argv.slice(2);
const store = new TaskStore(stateDir!);
if (cmd === 'adopt') {
  process.stdout.write('ready\n');
  process.stdin.once('data', () => {
    try {
      store.adopt(taskId!);
      process.stdout.write('won\n');
    } catch (err) {
      process.stdout.write(`${(err as { code?: string }).code ?? String(err)}\n`);
    }
  });
  process.stdin.once('end', () => process.exit(0));
} else if (cmd === 'hold') {
  store.create({
    version: 1, driver: 'raw_exec', taskId: taskId!, allocId: '6c1f7f0e-5d2b-4a53-9d59-2f0c3b7a1e11', taskName: 'held',
    startedAt: new Date().toISOString(), config: { id: taskId!, allocId: '6c1f7f0e-5d2b-4a53-9d59-2f0c3b7a1e11', name: 'held', driver: {} },
    driverState: {},
  }, 'running');
  process.stdout.write('ready\n');
  setInterval(() => {}, 1 << 30);
}
