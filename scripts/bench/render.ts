/**
 * Renders a recorded run as markdown (the README's tables):
 *   node --import tsx scripts/bench/render.ts scripts/bench/results-<date>.json > table.md
 */
import * as fs from 'node:fs';
import { renderMarkdown, type RunResult } from './lib.js';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: render.ts <results.json>\n');
  process.exit(2);
}
process.stdout.write(renderMarkdown(JSON.parse(fs.readFileSync(file, 'utf8')) as RunResult));
