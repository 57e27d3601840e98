/**
 * Runs every benchmark, one process each (so one's memory never weighs on the next), and prints
 * their ratios against PyTorch measured in the same run. `npm run bench [-- forward sae masks]`.
 * Load tests run only when named (`npm run bench -- load-activations`).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BENCHES = ['forward', 'sae', 'masks'];
/** Run only when named: they measure memory under load, with no PyTorch ratio. */
const ON_REQUEST = ['load-activations'];

const dir = join(fileURLToPath(import.meta.url), '..');
const wanted = process.argv.slice(2);
const known = [...BENCHES, ...ON_REQUEST];
for (const name of wanted) if (!known.includes(name)) throw new Error(`unknown benchmark "${name}" (known: ${known.join(', ')})`);
for (const name of wanted.length > 0 ? wanted : BENCHES) {
  process.stdout.write(`\n== ${name} ==\n`);
  execFileSync(process.execPath, [join(dir, `${name}.js`)], { stdio: 'inherit' });
}
