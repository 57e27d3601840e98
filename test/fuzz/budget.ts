/**
 * The fuzzing budget and bookkeeping shared by every fuzz test (`test/fuzz/*.test.ts`).
 *
 * CI runs a fixed-seed budget (each property's `ciRuns`); `npm run fuzz` runs a longer one by
 * setting `SAE_ERASER_FUZZ_SCALE` (a multiplier on every property's runs) and a seed, and prints the
 * counts each test recorded (inputs tried per parser, how many parsed, how many were refused with a
 * clear error).
 */
import { Breather } from '../../src/util/yield.js';
import fc from 'fast-check';
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** Seed of every property; fixed so that a CI failure replays, overridable for longer runs. */
export const FUZZ_SEED = Number(process.env.SAE_ERASER_FUZZ_SEED ?? 20261130);

/** Runs of one property: `ciRuns` in CI, times `SAE_ERASER_FUZZ_SCALE` under `npm run fuzz`. */
export function fuzzRuns(ciRuns: number): number {
  const scale = Number(process.env.SAE_ERASER_FUZZ_SCALE ?? 1);
  if (!Number.isFinite(scale) || scale <= 0) throw new Error(`SAE_ERASER_FUZZ_SCALE must be a positive number, got "${process.env.SAE_ERASER_FUZZ_SCALE}"`);
  return Math.max(1, Math.round(ciRuns * scale));
}

/** fast-check parameters for one property with `ciRuns` runs in CI. */
export function fuzzParams(ciRuns: number): fc.Parameters<unknown> {
  return { seed: FUZZ_SEED, numRuns: fuzzRuns(ciRuns) };
}

/**
 * Errors that mean a parser crashed rather than refused its input: an engine error from deep inside
 * (a property of undefined, an out-of-range typed array length, a blown stack) tells the user nothing.
 */
export function isCrash(err: unknown): boolean {
  if (!(err instanceof Error)) return true;
  if (err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError) return true;
  return err.message.trim().length === 0;
}

const breather = new Breather(100);

/**
 * Lets the event loop run about every 100 ms; await it at the start of each property run. A
 * property over thousands of synchronous parses would otherwise block the test worker for minutes
 * under `npm run fuzz`, and vitest fails a worker that cannot answer its RPC calls for a minute.
 */
export function breathe(): Promise<void> {
  return breather.maybe();
}

/** What one input gave: its parsed value, or the clear error that refused it. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: Error };

/** Counts what one parser did with the fuzzed inputs, appended to `SAE_ERASER_FUZZ_REPORT` (a JSONL file) when set. */
export class FuzzTally {
  tried = 0;
  parsed = 0;
  refused = 0;

  /**
   * @param parser Name printed in the fuzz report, e.g. "safetensors header".
   * @param maxAllocBytes Most array-buffer bytes one input may leave allocated when its parse returns
   *   (default 256 MiB). Fuzz inputs are kilobytes, so more means a size declared in the input was
   *   believed before it was checked against the file: an unbounded allocation, failed as a crash.
   * @param hangMillis Longest one input may take (default 30 s, thousands of times what a
   *   kilobyte input needs): a hang guard, not a speed test. A parse that blocks the event loop cannot
   *   be interrupted, so an endless loop still needs the outer timeout of `npm run fuzz`; this catches
   *   the near-endless ones (a loop over a declared count) and names the input.
   */
  constructor(
    readonly parser: string,
    readonly maxAllocBytes = 256 * 2 ** 20,
    readonly hangMillis = 30_000,
  ) {}

  /** Throws a RangeError when array buffers grew past `maxAllocBytes`, or the input took longer than `hangMillis`, since `before` (see the constructor). */
  private checkBudget(before: { bytes: number; at: number }): void {
    const took = performance.now() - before.at;
    if (took > this.hangMillis) throw new RangeError(`${this.parser}: one input took ${Math.round(took)} ms (limit ${this.hangMillis}): a near-hang`);
    const grew = process.memoryUsage().arrayBuffers - before.bytes;
    if (grew > this.maxAllocBytes) {
      throw new RangeError(`${this.parser}: one input allocated ${grew} bytes of array buffers (limit ${this.maxAllocBytes}): a declared size was trusted`);
    }
  }

  /**
   * Runs `parse` on one input: a clean result or a clear error is counted; a crash (see `isCrash`) is
   * rethrown so the property fails and fast-check shrinks the input.
   */
  run<T>(parse: () => T): Outcome<T> {
    const before = this.start();
    let value: T;
    try {
      value = parse();
    } catch (err) {
      return this.refuse(err, before);
    }
    return this.accept(value, before);
  }

  /** Async form of `run`. */
  async runAsync<T>(parse: () => Promise<T>): Promise<Outcome<T>> {
    const before = this.start();
    let value: T;
    try {
      value = await parse();
    } catch (err) {
      return this.refuse(err, before);
    }
    return this.accept(value, before);
  }

  private start(): { bytes: number; at: number } {
    this.tried++;
    return { bytes: process.memoryUsage().arrayBuffers, at: performance.now() };
  }

  private accept<T>(value: T, before: { bytes: number; at: number }): Outcome<T> {
    this.checkBudget(before);
    this.parsed++;
    return { ok: true, value };
  }

  private refuse<T>(err: unknown, before: { bytes: number; at: number }): Outcome<T> {
    if (isCrash(err)) throw err;
    this.checkBudget(before);
    this.refused++;
    return { ok: false, error: err as Error };
  }

  /** Appends this tally to the report file, if the fuzz run asked for one. Call from `afterAll`. */
  save(): void {
    const file = process.env.SAE_ERASER_FUZZ_REPORT;
    if (file === undefined || file === '') return;
    mkdirSync(dirname(file), { recursive: true });
    appendFileSync(file, `${JSON.stringify({ parser: this.parser, tried: this.tried, parsed: this.parsed, refused: this.refused, seed: FUZZ_SEED })}\n`);
  }
}
