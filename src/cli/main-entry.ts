/** Runs the CLI from the TypeScript sources (`node --import tsx src/cli/main-entry.ts ...`), as bin/corral.js does from dist. */
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`corral: ${err && err.message ? String(err.message).split('\n')[0] : String(err)}\n`); process.exitCode = 1; },
);
