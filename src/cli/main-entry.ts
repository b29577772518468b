/** Runs the CLI from the TypeScript sources (`node --import tsx src/cli/main-entry.ts ...`), as bin/corral (through bin/corral.js) does from dist. */
process.on('SIGUSR1', () => {}); // before anything else: no inspector on SIGUSR1 (see signal-relay.ts)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { main } = require('./main.js') as typeof import('./main.js');

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`corral: ${err && err.message ? String(err.message).split('\n')[0] : String(err)}\n`); process.exitCode = 125; },
);
