/**
 * Cross-fitting of the adversary (`adversaryCrossFit`): the concept set is split in two halves
 * (stratified by the concept z), one adversary is fitted on each, and mask steps alternate
 * between the halves, each concept batch scored by the adversary fitted on the other half. An
 * adversary fitted and scored on the same rows also weights noise units that correlate with z by
 * chance in that sample, and the mask would remove them consistently; across halves such chance
 * weights average out, and only units that carry z in both halves keep being pushed out. Without
 * cross-fitting there is one fold, the whole concept set.
 */
import { shuffleInPlace, type Rng } from '../../data/prng.js';

/**
 * Positions 0..n-1 of the concept set split into `k` folds, stratified by label (each fold gets
 * every class in proportion), shuffled with `rng`.
 */
export function conceptFolds(labels: Int32Array, k: number, rng: Rng): Int32Array[] {
  const byClass = [0, 1].map((c) =>
    shuffleInPlace(
      Array.from(labels.keys()).filter((i) => labels[i] === c),
      rng,
    ),
  );
  const folds: number[][] = Array.from({ length: k }, () => []);
  let next = 0;
  for (const members of byClass) for (const i of members) folds[next++ % k]!.push(i);
  return folds.map((f) => Int32Array.from(f));
}

/** Concept batches from each fold, cycling through the fold and reshuffling it (with `rng`) at every pass. */
export class FoldBatches {
  private readonly cursors: number[];

  constructor(
    readonly folds: readonly Int32Array[],
    private readonly batchSize: number,
    private readonly rng: Rng,
  ) {
    this.cursors = folds.map(() => 0);
  }

  /** The next batch of fold `f` (positions in the concept set). */
  next(f: number): Int32Array {
    const fold = this.folds[f]!;
    const out = new Int32Array(Math.min(this.batchSize, fold.length));
    for (let i = 0; i < out.length; i++) {
      if (this.cursors[f] === 0) shuffleInPlace(fold, this.rng);
      out[i] = fold[this.cursors[f]!]!;
      this.cursors[f] = (this.cursors[f]! + 1) % fold.length;
    }
    return out;
  }
}
