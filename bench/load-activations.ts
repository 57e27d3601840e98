/**
 * Load test of `sae-eraser activations`: N short rows ("The nurse said hello 123." and variants)
 * through a random tiny BERT (MiniLM's tokenizer), written to one safetensors file. The command
 * runs in a child process (test/cli/activations-child.ts) after a 100-row warm-up in the same
 * process, which reports the run's peak resident memory; this prints rows/s, the output's size
 * and that peak. The model is tiny on purpose: what is measured is that memory stays bounded
 * while the output grows, not the model's speed.
 *
 * Run: npm run build && node dist/bench/load-activations.js [--rows 100000] [--d 16] [--batch-size 256] [--mean] [--keep]
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeTinyBert } from '../test/cli/tiny-bert.js';
import { intFlag } from './flags.js';

const WORDS = ['nurse', 'surgeon', 'teacher', 'engineer', 'pilot', 'lawyer', 'painter'];

/** Writes `n` JSONL rows of short texts, a block at a time (the bench itself stays small too). */
function writeRows(path: string, n: number): void {
  const fd = openSync(path, 'w');
  try {
    for (let start = 0; start < n; start += 10_000) {
      const lines: string[] = [];
      for (let i = start; i < Math.min(n, start + 10_000); i++) {
        lines.push(`${JSON.stringify({ text: `The ${WORDS[i % WORDS.length]} said hello ${i}.` })}\n`);
      }
      writeSync(fd, lines.join(''));
    }
  } finally {
    closeSync(fd);
  }
}

interface RunReport {
  code: number;
  rssAtStart: number;
  peakRssBytes: number | null;
  maxRssBytes: number;
  seconds: number;
}

export interface LoadBenchResult {
  rows: number;
  seconds: number;
  rowsPerS: number;
  outputBytes: number;
  /** Peak RSS while the N-row run ran (Linux), else null. */
  peakRssBytes: number | null;
  /** Peak RSS of the whole child process (module loading and the warm-up included). */
  maxRssBytes: number;
}

/**
 * Runs the load test over `rows` rows.
 *
 * @param rows input rows
 * @param d hidden size of the random model (1 layer)
 * @param batchSize --batch-size
 * @param pool --pool
 * @param keep keep the temp folder (model, input, output) instead of removing it
 */
export function benchLoadActivations(rows: number, d: number, batchSize: number, pool: 'none' | 'mean', keep: boolean): LoadBenchResult {
  const dir = mkdtempSync(join(tmpdir(), 'sae-eraser-load-'));
  try {
    const model = writeTinyBert(join(dir, 'model'), { d, layers: 1, heads: 2, maxPositions: 64 });
    const warm = join(dir, 'warm.jsonl');
    const input = join(dir, 'rows.jsonl');
    writeRows(warm, 100);
    writeRows(input, rows);
    const out = join(dir, 'out.safetensors');
    const command = (inPath: string, outPath: string): string[] => [
      'activations',
      '--model',
      model,
      '--input',
      inPath,
      '--hooks',
      'layers.0.resid_out',
      '--out',
      outPath,
      '--pool',
      pool,
      '--batch-size',
      String(batchSize),
    ];
    const child = join(fileURLToPath(import.meta.url), '../../test/cli/activations-child.js');
    const stdout = execFileSync(
      process.execPath,
      [child, JSON.stringify([[...command(warm, join(dir, 'warm.safetensors')), '--quiet'], command(input, out)])],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const reports = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunReport);
    const run = reports[1]!;
    if (reports.some((r) => r.code !== 0)) throw new Error(`the activations command failed (exit codes ${reports.map((r) => r.code).join(', ')})`);
    return {
      rows,
      seconds: run.seconds,
      rowsPerS: rows / run.seconds,
      outputBytes: statSync(out).size,
      peakRssBytes: run.peakRssBytes,
      maxRssBytes: run.maxRssBytes,
    };
  } finally {
    if (keep) process.stderr.write(`kept ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

function main(): void {
  const rows = intFlag('--rows', 100_000);
  const d = intFlag('--d', 16);
  const batchSize = intFlag('--batch-size', 256);
  const pool = process.argv.includes('--mean') ? 'mean' : 'none';
  const r = benchLoadActivations(rows, d, batchSize, pool, process.argv.includes('--keep'));
  const mib = (b: number | null): string => (b === null ? 'n/a' : `${(b / 2 ** 20).toFixed(0)} MiB`);
  process.stdout.write(
    `activations load: ${r.rows} rows (d ${d}, --pool ${pool}, --batch-size ${batchSize}) in ${r.seconds.toFixed(1)} s, ${r.rowsPerS.toFixed(0)} rows/s; ` +
      `output ${mib(r.outputBytes)}; peak RSS during the run ${mib(r.peakRssBytes)} (whole process ${mib(r.maxRssBytes)})\n`,
  );
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
