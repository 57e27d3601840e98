/**
 * The shared harness of the benchmarks: each one compares sae-eraser with PyTorch on the same
 * work in the same invocation, at one thread and at all cores.
 *
 * For each thread count t, the PyTorch side runs (a child process with `torch.set_num_threads(t)`
 * and OMP_NUM_THREADS = MKL_NUM_THREADS = t), then ours (with `setThreads(t)`, the thread count of
 * every ONNX Runtime session started after it), then PyTorch again; PyTorch keeps the better of its
 * two runs, so load from other processes on a shared machine does not favour ours. Both sides are
 * printed, and the benchmark ends with one JSON line per thread count, the all-cores line last:
 *
 *     {"name", "ours", "reference", "unit", "ratio", "threads"}
 *
 * where ratio > 1 means sae-eraser is faster (ours / reference for a rate such as tokens/s,
 * reference / ours for a duration).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../src/io/shared.js';
import { setThreads } from '../src/util/threads.js';
import { pythonBin } from '../test/reference/python.js';

/** The thread counts measured: 1, then every core (once on a one-core machine). */
export function threadCounts(): number[] {
  return [...new Set([1, availableParallelism()])];
}

/** One side's result at one thread count. */
export interface Measurement {
  /** In the comparison's unit. */
  value: number;
  /** Printed beside the value (individual runs, what was extrapolated, versions). */
  detail?: string;
}

export interface Comparison {
  /** The benchmark's name in its JSON lines (`forward`, `sae-encode`, ...). */
  name: string;
  /** Printed first: what is measured, on what sizes. */
  title: string;
  unit: string;
  /** `higher` for a rate (tokens/s), `lower` for a duration (s). */
  better: 'higher' | 'lower';
  /** Describes sae-eraser's side at `threads` (executor, thread count). */
  oursLabel: (threads: number) => string;
  /** Measures sae-eraser at `threads`; `setThreads(threads)` is already in force. */
  ours: (threads: number) => Promise<Measurement>;
  /** Describes PyTorch's side at `threads`. */
  referenceLabel: (threads: number) => string;
  /** Measures PyTorch at `threads` (typically `torchScript(..., threads)`). */
  reference: (threads: number) => Promise<Measurement> | Measurement;
}

/** One JSON line of a benchmark. */
export interface ResultLine {
  name: string;
  ours: number;
  reference: number;
  unit: string;
  /** Above 1: sae-eraser is faster. */
  ratio: number;
  threads: number;
}

/** A number with about three significant digits. */
export function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toPrecision(3);
}

/** A peak memory at 2N within this factor of the peak at N counts as flat (bench/collect.ts, bench/experiment-memory.ts). */
export const FLAT_FACTOR = 1.25;

/** Bytes as MiB, or "n/a". */
export function mib(bytes: number | null): string {
  return bytes === null ? 'n/a' : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

/**
 * Runs `c` at every thread count (reference, ours, reference again), prints both sides and the
 * ratio per thread count, and returns the lines for `printResultLines`.
 */
export async function compare(c: Comparison): Promise<ResultLine[]> {
  const better = (a: Measurement, b: Measurement): Measurement => ((c.better === 'higher' ? a.value >= b.value : a.value <= b.value) ? a : b);
  const ratioOf = (ours: number, reference: number): number => (c.better === 'higher' ? ours / reference : reference / ours);
  const withDetail = (m: Measurement): string => `${fmt(m.value)} ${c.unit}${m.detail === undefined ? '' : `  (${m.detail})`}`;
  console.log(c.title);
  const lines: ResultLine[] = [];
  for (const t of threadCounts()) {
    setThreads(t);
    const before = await c.reference(t);
    const ours = await c.ours(t);
    const after = await c.reference(t);
    const reference = better(before, after);
    const ratio = ratioOf(ours.value, reference.value);
    console.log(`  ${t} thread${t === 1 ? '' : 's'}:`);
    console.log(`    sae-eraser (${c.oursLabel(t)}): ${withDetail(ours)}`);
    console.log(
      `    ${c.referenceLabel(t)}: ${withDetail(reference)}; best of the runs before (${fmt(before.value)}) and after (${fmt(after.value)}) sae-eraser's`,
    );
    console.log(`    ratio (above 1: sae-eraser is faster): ${ratio.toFixed(2)}`);
    lines.push({ name: c.name, ours: ours.value, reference: reference.value, unit: c.unit, ratio, threads: t });
  }
  return lines;
}

/** Seconds of each of `reps` calls of `once`, after one untimed warm-up call. */
export async function timeRuns(reps: number, once: () => Promise<void> | void): Promise<number[]> {
  await once();
  const seconds: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await once();
    seconds.push((performance.now() - t0) / 1000);
  }
  return seconds;
}

/** "runs 1.234, 1.201 s". */
export function runsDetail(seconds: readonly number[]): string {
  return `runs ${seconds.map((s) => s.toFixed(3)).join(', ')} s`;
}

/** Prints the JSON lines that end a benchmark's output, the all-cores line last. */
export function printResultLines(lines: readonly ResultLine[]): void {
  for (const l of [...lines].sort((a, b) => a.threads - b.threads)) console.log(JSON.stringify(l));
}

let python: string | undefined;

/**
 * Runs `bench/reference/<script>` with the reference venv (test/reference/python.ts) at `threads`
 * threads (`--threads` and the OpenMP/MKL variables) and returns the JSON of its last stdout line.
 */
export function torchScript(script: string, args: readonly string[], threads: number): Record<string, unknown> {
  python ??= pythonBin();
  const n = String(threads);
  const stdout = execFileSync(python, [join(projectRoot(), 'bench/reference', script), ...args, '--threads', n], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 2 ** 20,
    env: { ...process.env, HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false', OMP_NUM_THREADS: n, MKL_NUM_THREADS: n },
  });
  const last = stdout.trim().split('\n').at(-1);
  if (last === undefined || last === '') throw new Error(`bench/reference/${script} printed nothing`);
  return JSON.parse(last) as Record<string, unknown>;
}

/** A number field of a reference script's JSON; throws naming the script when it is missing. */
export function numberField(result: Record<string, unknown>, key: string, script: string): number {
  const v = result[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`bench/reference/${script}: "${key}" is ${JSON.stringify(v)}, not a number`);
  return v;
}

/**
 * Resets this process's peak resident memory, so that `peakRssSinceReset` reads the peak of what
 * follows (Linux: writing "5" to /proc/self/clear_refs resets VmHWM). False on other systems,
 * where only the lifetime peak (`process.resourceUsage().maxRSS`) exists.
 */
export function resetPeakRss(): boolean {
  if (process.platform !== 'linux') return false;
  writeFileSync('/proc/self/clear_refs', '5');
  return true;
}

/** Peak resident memory in bytes since `resetPeakRss` (VmHWM of /proc/self/status, Linux only). */
export function peakRssSinceReset(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  if (m === null) throw new Error('/proc/self/status has no VmHWM line');
  return Number(m[1]) * 1024;
}

/**
 * Runs `main` when the module at `moduleUrl` is the process's entry point (not when imported),
 * reporting a failure on stderr with exit code 1.
 */
export function runIfMain(moduleUrl: string, main: () => Promise<void>): void {
  if (process.argv[1] === undefined || fileURLToPath(moduleUrl) !== process.argv[1]) return;
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
