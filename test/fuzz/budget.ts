/**
 * The fuzzing budget and bookkeeping shared by every fuzz test (`test/fuzz/*.test.ts`).
 *
 * CI runs a fixed-seed budget (each property's `ciRuns`); `npm run fuzz` runs a longer one by
 * setting `SAE_ERASER_FUZZ_SCALE` (a multiplier on every property's runs) and a seed, and prints the
 * counts each test recorded (inputs tried per parser, how many parsed, how many were refused with a
 * clear error).
 */
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

/** Counts what one parser did with the fuzzed inputs, appended to `SAE_ERASER_FUZZ_REPORT` (a JSONL file) when set. */
export class FuzzTally {
  tried = 0;
  parsed = 0;
  refused = 0;

  /**
   * @param parser Name printed in the fuzz report, e.g. "safetensors header".
   */
  constructor(readonly parser: string) {}

  /**
   * Runs `parse` on one input: a clean result or a clear error is counted; a crash (see `isCrash`) is
   * rethrown so the property fails and fast-check shrinks the input.
   */
  run<T>(parse: () => T): { ok: true; value: T } | { ok: false; error: Error } {
    this.tried++;
    try {
      const value = parse();
      this.parsed++;
      return { ok: true, value };
    } catch (err) {
      if (isCrash(err)) throw err;
      this.refused++;
      return { ok: false, error: err as Error };
    }
  }

  /** Async form of `run`. */
  async runAsync<T>(parse: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: Error }> {
    this.tried++;
    try {
      const value = await parse();
      this.parsed++;
      return { ok: true, value };
    } catch (err) {
      if (isCrash(err)) throw err;
      this.refused++;
      return { ok: false, error: err as Error };
    }
  }

  /** Appends this tally to the report file, if the fuzz run asked for one. Call from `afterAll`. */
  save(): void {
    const file = process.env.SAE_ERASER_FUZZ_REPORT;
    if (file === undefined || file === '') return;
    mkdirSync(dirname(file), { recursive: true });
    appendFileSync(file, `${JSON.stringify({ parser: this.parser, tried: this.tried, parsed: this.parsed, refused: this.refused, seed: FUZZ_SEED })}\n`);
  }
}
