/**
 * Memory of the full experiment at two dataset sizes (on request: `npm run bench -- experiment-memory`
 * or `npm run bench:experiment-memory`): `sae-eraser run` with a config (default
 * configs/ci-minilm-surgeon-nurse.json, every method) at 2N (the config's splits as they are) and at
 * N (every split capped at half its 2N size), each in a child process of its own
 * (test/cli/activations-child.ts) that reports the run's peak resident memory. Each run starts from
 * scratch: a fresh cache folder and a fresh SAE folder (so the SAE is trained on each run's own
 * data, as a first run of the experiment does). Prints both peaks, their ratio and whether that
 * stays flat (within the factor bench/collect.ts uses), and each run's wall time.
 *
 * Run: npm run bench:experiment-memory [-- --config FILE --set KEY=VALUE ...]
 * (`--set` goes to both runs, e.g. --set 'methods={"original":{},"leace":{}}' for a quick check.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readExperimentConfig } from '../src/experiment/config.js';
import { loadExperimentData } from '../src/experiment/runner.js';
import { projectRoot } from '../src/io/shared.js';
import { maxOf } from '../src/util/arrays.js';
import { FLAT_FACTOR, mib, runIfMain } from './harness.js';

interface RunReport {
  code: number;
  peakRssBytes: number | null;
  maxRssBytes: number;
  seconds: number;
}

/** Every value after `name` in process.argv (a repeatable flag). */
function repeatedFlag(name: string): string[] {
  const out: string[] = [];
  process.argv.forEach((a, i) => {
    if (a !== name) return;
    const v = process.argv[i + 1];
    if (v === undefined) throw new Error(`${name} needs a value`);
    out.push(v);
  });
  return out;
}

/** Runs `sae-eraser run` with `settings` in a child process; returns its report. */
function runExperimentChild(configPath: string, out: string, settings: readonly string[]): RunReport {
  const child = join(fileURLToPath(import.meta.url), '../../test/cli/activations-child.js');
  const args = ['run', '--config', configPath, '--out', out, ...settings.flatMap((s) => ['--set', s]), '--quiet'];
  const stdout = execFileSync(process.execPath, [child, JSON.stringify([args])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const report = JSON.parse(stdout.trim().split('\n').at(-1)!) as RunReport;
  if (report.code !== 0) throw new Error(`sae-eraser run ${args.join(' ')} exited with code ${report.code}`);
  return report;
}

async function main(): Promise<void> {
  const configPath = resolve(repeatedFlag('--config').at(-1) ?? join(projectRoot(), 'configs/ci-minilm-surgeon-nurse.json'));
  const userSettings = repeatedFlag('--set');
  const config = readExperimentConfig(configPath, userSettings);
  // The split sizes at 2N (the config as given); N caps each at half of that.
  const data = await loadExperimentData(config);
  const largestSubgroup = maxOf(Object.values(data.testSubgroups).map((v) => v.length));
  const half = (n: number): number => Math.max(1, Math.floor(n / 2));
  const halfLimits = [
    `dataset.limits.ambiguous=${half(data.ambiguous.length)}`,
    `dataset.limits.balanced=${half(data.balanced.length)}`,
    `dataset.limits.concept=${half(data.concept.length)}`,
    `dataset.limits.testBalanced=${half(data.testBalanced.length)}`,
    `dataset.limits.testSubgroup=${half(largestSubgroup)}`,
  ];
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-experiment-memory-'));
  try {
    const fresh = (label: string): string[] => [
      `cacheDir=${join(tmp, `cache-${label}`)}`,
      ...Object.keys(config.saes).map((hook) => `saes[${hook}].path=${join(tmp, `sae-${label}`, hook)}`),
    ];
    console.log(
      `full experiment memory: sae-eraser run --config ${configPath} (${Object.keys(config.methods).length} methods, seeds ${config.seeds.join(', ')}), ` +
        `2N = ${data.texts.length} distinct texts (ambiguous ${data.ambiguous.length}, balanced ${data.balanced.length}, concept ${data.concept.length}, ` +
        `test balanced ${data.testBalanced.length}), N = every split capped at half; fresh cache and SAE folders per run`,
    );
    const small = runExperimentChild(configPath, join(tmp, 'run-N'), [...userSettings, ...halfLimits, ...fresh('N')]);
    const large = runExperimentChild(configPath, join(tmp, 'run-2N'), [...userSettings, ...fresh('2N')]);
    const verdict =
      small.peakRssBytes === null || large.peakRssBytes === null
        ? 'the peak of the run alone is measured on Linux only'
        : `2N / N = ${(large.peakRssBytes / small.peakRssBytes).toFixed(2)}; ${large.peakRssBytes <= FLAT_FACTOR * small.peakRssBytes ? 'flat' : 'NOT flat'}: flat means within ${FLAT_FACTOR}x`;
    console.log(`  peak resident memory of the run: N ${mib(small.peakRssBytes)}, 2N ${mib(large.peakRssBytes)} (${verdict})`);
    console.log(
      `  whole process (modules included): N ${mib(small.maxRssBytes)}, 2N ${mib(large.maxRssBytes)}; wall time N ${small.seconds.toFixed(0)} s, 2N ${large.seconds.toFixed(0)} s`,
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

runIfMain(import.meta.url, main);
