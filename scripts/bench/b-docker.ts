import type { Section } from './lib.js';
import type { BenchOptions } from './run-one.js';
export async function run(_o: BenchOptions): Promise<Section> {
  return { id: 'docker', title: '5. Docker', unit: '', columns: [], rows: [], notes: [], skipped: 'not written yet' };
}
