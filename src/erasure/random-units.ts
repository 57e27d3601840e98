/**
 * Random-ablation baselines: the control that asks whether an erasure method's effect comes from
 * *which* units or directions it removes, or just from removing that many.
 *
 * - `chooseRandomUnits(n, k, seed)`: k distinct units (e.g. SAE features) of n, uniformly at random
 *   without replacement: the first k entries of a seeded Fisher-Yates permutation of the allowed
 *   units, returned sorted. Every k-subset is equally likely (up to the generator).
 * - `randomSubspaceErasure(d, k, seed)`: the orthogonal projection removing a uniformly random
 *   k-dimensional subspace (Haar: the column space of a d x k standard Gaussian matrix), the
 *   matched-rank control for LEACE / diff-in-means / INLP.
 *
 * All randomness comes from src/data/prng.ts (mulberry32); default seed 42.
 */
import { mulberry32, randomNormal, shuffleInPlace } from '../data/prng.js';
import { type AffineErasure, columnSpaceBasis, orthogonalErasure, transpose64 } from './linear-algebra.js';

export interface RandomUnitsOptions {
  /** Units that may not be chosen (e.g. the features a method selected). */
  exclude?: Iterable<number>;
}

/** k distinct units of [0, numUnits), sorted ascending; see the module docstring. */
export function chooseRandomUnits(numUnits: number, k: number, seed = 42, options: RandomUnitsOptions = {}): Int32Array {
  if (!Number.isInteger(numUnits) || numUnits < 0) throw new Error(`chooseRandomUnits: numUnits must be a non-negative integer, got ${numUnits}`);
  if (!Number.isInteger(k) || k < 0) throw new Error(`chooseRandomUnits: k must be a non-negative integer, got ${k}`);
  const excluded = new Set<number>();
  for (const u of options.exclude ?? []) {
    if (!Number.isInteger(u) || u < 0 || u >= numUnits) throw new Error(`chooseRandomUnits: excluded unit ${u} is not in [0, ${numUnits})`);
    excluded.add(u);
  }
  const pool = new Int32Array(numUnits - excluded.size);
  let m = 0;
  for (let u = 0; u < numUnits; u++) if (!excluded.has(u)) pool[m++] = u;
  if (k > pool.length) {
    throw new Error(`chooseRandomUnits: cannot choose ${k} of ${pool.length} allowed units (${numUnits} minus ${excluded.size} excluded)`);
  }
  shuffleInPlace(pool, seed);
  return pool.slice(0, k).sort();
}

/** A 0/1 mask [numUnits] with the units of `chooseRandomUnits(numUnits, k, seed, options)` set. */
export function randomUnitMask(numUnits: number, k: number, seed = 42, options: RandomUnitsOptions = {}): Uint8Array {
  const mask = new Uint8Array(numUnits);
  for (const u of chooseRandomUnits(numUnits, k, seed, options)) mask[u] = 1;
  return mask;
}

/**
 * Orthogonal erasure of a uniformly random k-dimensional subspace of R^d, about `bias` (e.g. the
 * data mean; null for 0). Rank is exactly k (a Gaussian d x k matrix has full rank almost surely).
 */
export function randomSubspaceErasure(d: number, k: number, seed = 42, bias: Float64Array | null = null): AffineErasure {
  if (!Number.isInteger(d) || d < 1) throw new Error(`randomSubspaceErasure: d must be a positive integer, got ${d}`);
  if (!Number.isInteger(k) || k < 0 || k > d) throw new Error(`randomSubspaceErasure: k must be an integer in [0, ${d}], got ${k}`);
  if (bias !== null && bias.length !== d) throw new Error(`randomSubspaceErasure: bias has ${bias.length} entries, expected ${d}`);
  if (k === 0) return orthogonalErasure(new Float64Array(0), 0, d, bias);
  const rng = mulberry32(seed);
  const gaussian = new Float64Array(d * k);
  for (let i = 0; i < gaussian.length; i++) gaussian[i] = randomNormal(rng);
  const { basis, rank } = columnSpaceBasis(gaussian, d, k, 1e-10, true);
  if (rank !== k) throw new Error(`randomSubspaceErasure: random basis has rank ${rank} < ${k}`);
  return orthogonalErasure(transpose64(basis, d, k), k, d, bias);
}
