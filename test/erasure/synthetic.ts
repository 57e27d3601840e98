/**
 * Synthetic problems with known answers for the erasure tests: anisotropic Gaussian data with a
 * planted binary (or C-class) concept z shifting the mean along known directions, and an
 * independent binary task label y planted along another direction.
 */
import { mulberry32, randomNormal, type Rng } from '../../src/data/prng.js';

export interface Planted {
  n: number;
  d: number;
  /** x [n, d] row-major float64. */
  x: Float64Array;
  /** Concept labels [n] in [0, numClasses). */
  z: Int32Array;
  /** Task labels [n] in {0, 1}, independent of z. */
  y: Int32Array;
  /** Unit directions along which the concept classes are separated, [numClasses - 1][d]. */
  conceptDirs: Float64Array[];
  /** Unit direction of the task. */
  taskDir: Float64Array;
  /** The noise mixing matrix A [d, d] (x = A g + shifts, g ~ N(0, I)); the noise covariance is A A^T. */
  mixing: Float64Array;
}

export interface PlantedOptions {
  n: number;
  d: number;
  seed?: number;
  numClasses?: number;
  /** Shift of the class means along each concept direction (class c: +signal on dir c-1). */
  signal?: number;
  taskSignal?: number;
  /** Noise standard deviations along random orthogonal axes run geometrically from `anisotropy` down to 1/anisotropy. */
  anisotropy?: number;
}

function unitGaussian(rng: Rng, d: number): Float64Array {
  const v = Float64Array.from({ length: d }, () => randomNormal(rng));
  const norm = Math.sqrt(v.reduce((s, a) => s + a * a, 0));
  return v.map((a) => a / norm);
}

export function planted(options: PlantedOptions): Planted {
  const { n, d } = options;
  const numClasses = options.numClasses ?? 2;
  const signal = options.signal ?? 1.5;
  const taskSignal = options.taskSignal ?? 1.5;
  const anisotropy = options.anisotropy ?? 3;
  const rng = mulberry32(options.seed ?? 42);
  // Mixing A = Q diag(scales), Q a random rotation (Gram-Schmidt of a Gaussian matrix): noise
  // standard deviations exactly `anisotropy` ... 1/anisotropy along random orthogonal axes.
  const q: Float64Array[] = [];
  while (q.length < d) {
    const v = unitGaussian(rng, d);
    for (let pass = 0; pass < 2; pass++) {
      for (const u of q) {
        const dot = u.reduce((acc, a, j) => acc + a * v[j]!, 0);
        for (let j = 0; j < d; j++) v[j]! -= dot * u[j]!;
      }
    }
    const norm = Math.sqrt(v.reduce((acc, a) => acc + a * a, 0));
    q.push(v.map((a) => a / norm));
  }
  const mixing = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      const scale = anisotropy ** (1 - (2 * j) / Math.max(1, d - 1));
      mixing[i * d + j] = q[j]![i]! * scale;
    }
  }
  const conceptDirs = Array.from({ length: numClasses - 1 }, () => unitGaussian(rng, d));
  const taskDir = unitGaussian(rng, d);
  const x = new Float64Array(n * d);
  const z = new Int32Array(n);
  const y = new Int32Array(n);
  const g = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    z[r] = Math.floor(rng() * numClasses);
    y[r] = rng() < 0.5 ? 0 : 1;
    for (let j = 0; j < d; j++) g[j] = randomNormal(rng);
    for (let i = 0; i < d; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += mixing[i * d + j]! * g[j]!;
      if (numClasses === 2) s += signal * (2 * z[r]! - 1) * conceptDirs[0]![i]!;
      else if (z[r]! > 0) s += signal * conceptDirs[z[r]! - 1]![i]!;
      s += taskSignal * (2 * y[r]! - 1) * taskDir[i]!;
      x[r * d + i] = s;
    }
  }
  return { n, d, x, z, y, conceptDirs, taskDir, mixing };
}

/** Per-class means [numClasses][d] of rows x [n, d]. */
export function classMeans(x: ArrayLike<number>, labels: ArrayLike<number>, d: number, numClasses: number): Float64Array[] {
  const sums = Array.from({ length: numClasses }, () => new Float64Array(d));
  const counts = new Array<number>(numClasses).fill(0);
  for (let r = 0; r < labels.length; r++) {
    const c = labels[r]!;
    counts[c]!++;
    for (let j = 0; j < d; j++) sums[c]![j]! += x[r * d + j]!;
  }
  return sums.map((s, c) => s.map((v) => v / counts[c]!));
}

/** Column means [d] of rows x [n, d]. */
export function columnMeans(x: ArrayLike<number>, n: number, d: number): Float64Array {
  const m = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) m[j]! += x[r * d + j]!;
  return m.map((v) => v / n);
}

/** Two-pass sample cross-covariance [d, c] of x [n, d] and z [n, c], divided by n - 1. */
export function crossCovariance(x: ArrayLike<number>, z: ArrayLike<number>, n: number, d: number, c: number): Float64Array {
  const mx = columnMeans(x, n, d);
  const mz = columnMeans(z, n, c);
  const out = new Float64Array(d * c);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      const xi = x[r * d + i]! - mx[i]!;
      for (let j = 0; j < c; j++) out[i * c + j]! += xi * (z[r * c + j]! - mz[j]!);
    }
  }
  return out.map((v) => v / (n - 1));
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxAbsDiff: lengths ${a.length} and ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Rows `idx` of x [n, d]. */
export function takeRows(x: Float64Array, d: number, idx: ArrayLike<number>): Float64Array {
  const out = new Float64Array(idx.length * d);
  for (let r = 0; r < idx.length; r++) out.set(x.subarray(idx[r]! * d, idx[r]! * d + d), r * d);
  return out;
}
