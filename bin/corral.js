#!/usr/bin/env node
'use strict';
// First of all: a SIGUSR1 listener, so that no signal can open Node's inspector in this (often root)
// process. `corral run` later passes SIGUSR1 on to its task.
process.on('SIGUSR1', () => {});
require('../dist/src/cli/main.js').main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`corral: ${err && err.message ? err.message : String(err)}\n`); process.exitCode = 125; },
);
