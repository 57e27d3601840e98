/**
 * The project's one pseudo-random number generator. Every seeded choice in sae-eraser (data splits,
 * shuffles, probe initialisation and batch order, random baselines) draws from here, so a run is
 * reproducible from its seeds alone and no module carries its own generator. Default seed: 42.
 *
 * Generator: mulberry32 (Tommy Ettinger's 32-bit state mixer). State s (uint32); each draw
 *   s <- s + 0x6D2B79F5 (mod 2^32)
 *   t <- (s ^ (s >>> 15)) * (s | 1)
 *   t <- t ^ (t + (t ^ (t >>> 7)) * (t | 61))
 *   out = (t ^ (t >>> 14)) >>> 0, returned as out / 2^32 in [0, 1).
 * Products are 32-bit (Math.imul). It is fast, passes gjrand/PractRand for the stream lengths we
 * use, and is not cryptographic. Streams from different seeds are not guaranteed independent; use
 * distinct seeds per purpose (for example `seed` for the split and `seed + 1` for a probe).
 *
 * Note: the shuffles here are not Python's `random.Random(seed).shuffle`; the Sparse Feature
 * Circuits code uses that, so our splits hold the same examples as the paper's but in another order.
 */

/** A uniform generator on [0, 1). */
export type Rng = () => number;

const GOLDEN_GAMMA = 0x6d2b79f5;

/** mulberry32 seeded with `seed` (taken mod 2^32; must be a finite integer). */
export function mulberry32(seed = 42): Rng {
  if (!Number.isInteger(seed)) throw new Error(`random seed must be an integer, got ${seed}`);
  let state = seed >>> 0;
  return () => {
    state = (state + GOLDEN_GAMMA) | 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A generator from a seed, or the generator itself. */
export function toRng(seedOrRng: number | Rng = 42): Rng {
  return typeof seedOrRng === 'function' ? seedOrRng : mulberry32(seedOrRng);
}

/**
 * A uniform integer in [0, n). Uses floor(u * n); the bias is below n / 2^32, negligible for the
 * sizes here (n < 2^24 keeps every value reachable with near-equal probability).
 */
export function randomInt(rng: Rng, n: number): number {
  if (!Number.isInteger(n) || n <= 0) throw new Error(`randomInt: n must be a positive integer, got ${n}`);
  return Math.floor(rng() * n);
}

/**
 * A normal draw N(mean, std^2) by the Box-Muller transform, z = sqrt(-2 ln u1) cos(2 pi u2), with
 * u1 in (0, 1] so the log is finite. Uses two uniforms per draw (the sine partner is discarded so
 * that the generator has no hidden state besides the Rng).
 */
export function randomNormal(rng: Rng, mean = 0, std = 1): number {
  const u1 = 1 - rng();
  const u2 = rng();
  return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/** `n` normal draws as a Float32Array. */
export function randomNormalArray(n: number, seedOrRng: number | Rng = 42, mean = 0, std = 1): Float32Array {
  const rng = toRng(seedOrRng);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = randomNormal(rng, mean, std);
  return out;
}

/** `n` uniform draws on [low, high) as a Float32Array. */
export function randomUniformArray(n: number, seedOrRng: number | Rng = 42, low = 0, high = 1): Float32Array {
  const rng = toRng(seedOrRng);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = low + (high - low) * rng();
  return out;
}

interface Swappable {
  length: number;
  [i: number]: unknown;
}

/**
 * Fisher-Yates in place: for i = n-1 down to 1, swap a[i] with a[j], j uniform in [0, i].
 * Every permutation is equally likely (up to the generator's quality).
 */
export function shuffleInPlace<T extends Swappable>(arr: T, seedOrRng: number | Rng = 42): T {
  const rng = toRng(seedOrRng);
  for (let i = arr.length - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    const tmp = arr[i];
    arr[i] = arr[j];
    arr[j] = tmp;
  }
  return arr;
}

/** A shuffled copy of `arr` (the input is left untouched). */
export function shuffle<T>(arr: readonly T[], seedOrRng: number | Rng = 42): T[] {
  return shuffleInPlace(arr.slice(), seedOrRng);
}

/** A uniformly random permutation of 0..n-1. */
export function permutation(n: number, seedOrRng: number | Rng = 42): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  return shuffleInPlace(p, seedOrRng);
}
