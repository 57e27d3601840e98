#!/usr/bin/env node
/**
 * `npm run fuzz [-- SCALE [SEED]]`: runs the fuzz tests (test/fuzz) with a longer budget than CI's
 * and prints, per parser, how many inputs were tried, parsed and refused with a clear error.
 *
 *   SCALE  multiplier on every property's CI run count (default 50; SAE_ERASER_FUZZ_SCALE)
 *   SEED   fast-check seed (default: random, printed so that a failure replays; SAE_ERASER_FUZZ_SEED)
 *
 * Each fuzz file runs in its own vitest process, two at a time. Exits non-zero when a property
 * fails (a crash, a hang past the time limit, an unbounded allocation, a wrong value or an unclear
 * error), when a file's process dies, or when the run exceeds its wall-clock limit
 * (SAE_ERASER_FUZZ_MINUTES, default 60): a parse stuck in a loop blocks its test worker, and this
 * limit is what ends it.
 */
/* global process, console, setTimeout, clearTimeout */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [scaleArg, seedArg] = process.argv.slice(2);
const scale = Number(scaleArg ?? process.env.SAE_ERASER_FUZZ_SCALE ?? 50);
if (!Number.isFinite(scale) || scale <= 0) {
  console.error(`npm run fuzz: SCALE must be a positive number, got "${scaleArg}"`);
  process.exit(2);
}
const seed = Number(seedArg ?? process.env.SAE_ERASER_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
if (!Number.isInteger(seed)) {
  console.error(`npm run fuzz: SEED must be an integer, got "${seedArg}"`);
  process.exit(2);
}
const minutes = Number(process.env.SAE_ERASER_FUZZ_MINUTES ?? 60);

const dir = mkdtempSync(join(tmpdir(), 'sae-eraser-fuzz-report-'));
const report = join(dir, 'report.jsonl');
console.log(`fuzzing test/fuzz at scale ${scale}, seed ${seed} (replay: npm run fuzz -- ${scale} ${seed})`);

const started = Date.now();
// One vitest process per fuzz file, two at a time (the machine's cores): a parser that aborts the
// process (V8 stops on some oversized allocations without throwing) then loses only its own file.
const files = readdirSync('test/fuzz')
  .filter((f) => f.endsWith('.test.ts'))
  .sort()
  .map((f) => `test/fuzz/${f}`);
const running = new Set();
let timedOut = false;
const timer = setTimeout(() => {
  timedOut = true;
  console.error(`npm run fuzz: no result after ${minutes} minutes: a parser is probably stuck in a loop; stopping`);
  // Each whole process group: vitest and its workers.
  for (const child of running) process.kill(-child.pid, 'SIGKILL');
}, minutes * 60_000);
/** Runs one fuzz file; resolves to its exit code. */
function runFile(file) {
  const child = spawn('npx', ['vitest', 'run', file], {
    stdio: 'inherit',
    env: { ...process.env, SAE_ERASER_FUZZ_SCALE: String(scale), SAE_ERASER_FUZZ_SEED: String(seed), SAE_ERASER_FUZZ_REPORT: report },
    detached: true,
  });
  running.add(child);
  return new Promise((resolve) =>
    child.on('exit', (c, signal) => {
      running.delete(child);
      resolve(c ?? (signal === null ? 1 : 128));
    }),
  );
}
const failed = [];
const queue = [...files];
await Promise.all(
  [0, 1].map(async () => {
    while (queue.length > 0 && !timedOut) {
      const file = queue.shift();
      if ((await runFile(file)) !== 0) failed.push(file);
    }
  }),
);
clearTimeout(timer);
const code = failed.length === 0 && !timedOut ? 0 : 1;

/** Sums the tallies (one line per parser per test file run) by parser. */
let rows = [];
try {
  const byParser = new Map();
  for (const line of readFileSync(report, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const r = JSON.parse(line);
    const t = byParser.get(r.parser) ?? { parser: r.parser, tried: 0, parsed: 0, refused: 0 };
    t.tried += r.tried;
    t.parsed += r.parsed;
    t.refused += r.refused;
    byParser.set(r.parser, t);
  }
  rows = [...byParser.values()].sort((a, b) => a.parser.localeCompare(b.parser));
} catch (err) {
  if (err.code !== 'ENOENT') throw err;
}
rmSync(dir, { recursive: true, force: true });

const table = [['parser', 'inputs tried', 'parsed', 'refused'], ...rows.map((r) => [r.parser, String(r.tried), String(r.parsed), String(r.refused)])];
const total = rows.reduce((a, r) => ({ tried: a.tried + r.tried, parsed: a.parsed + r.parsed, refused: a.refused + r.refused }), {
  tried: 0,
  parsed: 0,
  refused: 0,
});
table.push(['total', String(total.tried), String(total.parsed), String(total.refused)]);
const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
const line = (row) => `| ${row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(' | ')} |`;
console.log(`\nfuzz report (scale ${scale}, seed ${seed}, ${((Date.now() - started) / 60_000).toFixed(1)} min)\n`);
console.log(line(table[0]));
console.log(`|${widths.map((w, c) => (c === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
for (const row of table.slice(1)) console.log(line(row));

if (code !== 0) {
  console.error(
    `\nnpm run fuzz: FAILED (${timedOut ? 'time limit; ' : ''}${failed.join(', ') || 'unfinished files'}); replay with: npm run fuzz -- ${scale} ${seed}`,
  );
  process.exit(1);
}
