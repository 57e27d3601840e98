/**
 * `npm run bench`: runs every benchmark, one process each (so one's memory never weighs on the
 * next); each prints sae-eraser and PyTorch measured in the same run at 1 thread and at all cores
 * and ends with its JSON lines (bench/harness.ts). `npm run bench -- forward collect` runs the
 * named ones only. The memory benchmarks run only when named (`npm run bench -- load-activations`,
 * `npm run bench -- experiment-memory`).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCHES = ['forward', 'sae-encode', 'sae-train', 'collect', 'mask-training'];
/** Run only when named: they measure memory (under load, or of whole experiments), with no PyTorch ratio. */
const ON_REQUEST = ['load-activations', 'experiment-memory'];

const dir = join(fileURLToPath(import.meta.url), '..');
const wanted = process.argv.slice(2);
const known = [...BENCHES, ...ON_REQUEST];
for (const name of wanted) if (!known.includes(name)) throw new Error(`unknown benchmark "${name}" (known: ${known.join(', ')})`);
for (const name of wanted.length > 0 ? wanted : BENCHES) {
  process.stdout.write(`\n== ${name} ==\n`);
  execFileSync(process.execPath, [join(dir, `${name}.js`)], { stdio: 'inherit' });
}
