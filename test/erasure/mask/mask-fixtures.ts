/**
 * Planted pooled problems with known answers for the learned-mask tests, built straight into an
 * in-memory activation cache (no model run needed for the pooled path).
 *
 * Each example has a task label y and a concept label z. Splits:
 *  - train (ambiguous): z = y, so the concept is a perfect (and stronger) proxy for the task;
 *  - concept: y and z independent (the concept-labelled set);
 *  - test: the four (y, z) groups in equal numbers.
 * Units (SAE features, neurons, or rotated directions): unit 0 carries z strongly and cleanly,
 * unit 1 carries y weakly and noisily, the rest are noise. A probe trained on train leans on unit 0
 * and fails on the anti-stereotypical groups; an eraser that removes unit 0 and keeps unit 1 lets a
 * retrained head recover the task.
 */
import { tf } from '../../../src/engine/engine.js';
import { ActivationCache, denseToCsr } from '../../../src/cache/cache.js';
import { mulberry32, randomNormal, type Rng } from '../../../src/data/prng.js';
import type { FitContext, LabelledSplit } from '../../../src/erasure/eraser.js';
import { LinearProbe } from '../../../src/probe/linear.js';
import type { Probe } from '../../../src/probe/probe.js';
import { standardHookNames, type Model } from '../../../src/models/model.js';
import { ToySae, toyTokenize, D } from '../sae-toy.js';

export const HOOK = 'layers.0.resid_out';
export { D };

export interface PlantedPooled {
  cache: ActivationCache;
  train: LabelledSplit;
  concept: LabelledSplit;
  test: LabelledSplit;
  /** Balanced training data (the four groups in equal numbers), for the `task` objective. */
  balanced: LabelledSplit;
  /** The SAE whose decoder made the pooled activations (sae kind only). */
  sae?: ToySae;
  /** Orthogonal Q `[d, d]` row-major (das kind): unit j's direction is row j of Q. */
  rotation?: Float64Array;
  /** Pooled activations `[n, d]` of every row. */
  pooled: Float32Array;
  n: number;
}

export interface PlantedOptions {
  kind: 'sae' | 'neuron' | 'das';
  nTrain?: number;
  nConcept?: number;
  /** Per group in the test split. */
  nTestPerGroup?: number;
  dSae?: number;
  seed?: number;
}

function split(rows: number[], y: number[], z: number[]): LabelledSplit {
  return { rows: Int32Array.from(rows), y: Int32Array.from(y), z: Int32Array.from(z), texts: rows.map((r) => `example ${r}`) };
}

/** Labels of the three splits, in row order train, concept, test. */
interface Labels {
  y: number[];
  z: number[];
  train: LabelledSplit;
  concept: LabelledSplit;
  test: LabelledSplit;
  balanced: LabelledSplit;
}

function labels(rng: Rng, nTrain: number, nConcept: number, nTestPerGroup: number): Labels {
  const y: number[] = [];
  const z: number[] = [];
  const add = (n: number, f: (i: number) => [number, number]): LabelledSplit => {
    const rows: number[] = [];
    const ys: number[] = [];
    const zs: number[] = [];
    for (let i = 0; i < n; i++) {
      const [a, b] = f(i);
      rows.push(y.length);
      y.push(a);
      z.push(b);
      ys.push(a);
      zs.push(b);
    }
    return split(rows, ys, zs);
  };
  const train = add(nTrain, (i) => [i % 2, i % 2]);
  const concept = add(nConcept, () => [rng() < 0.5 ? 0 : 1, rng() < 0.5 ? 0 : 1]);
  const test = add(4 * nTestPerGroup, (i) => [i % 2, Math.floor(i / 2) % 2]);
  const balanced = add(4 * nTestPerGroup, (i) => [i % 2, Math.floor(i / 2) % 2]);
  return { y, z, train, concept, test, balanced };
}

/** A uniformly random orthogonal matrix [d, d] (QR of a Gaussian matrix by Gram-Schmidt), float64. */
export function randomRotation(d: number, rng: Rng): Float64Array {
  const q = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    const v = Float64Array.from({ length: d }, () => randomNormal(rng));
    for (let k = 0; k < i; k++) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += v[j]! * q[k * d + j]!;
      for (let j = 0; j < d; j++) v[j]! -= dot * q[k * d + j]!;
    }
    const norm = Math.hypot(...v);
    for (let j = 0; j < d; j++) q[i * d + j] = v[j]! / norm;
  }
  return q;
}

export function plantedPooled(options: PlantedOptions): PlantedPooled {
  const rng = mulberry32(options.seed ?? 42);
  const { y, z, train, concept, test, balanced } = labels(rng, options.nTrain ?? 160, options.nConcept ?? 200, options.nTestPerGroup ?? 50);
  const n = y.length;
  const d = D;
  const pooled = new Float32Array(n * d);
  if (options.kind === 'sae') {
    const m = options.dSae ?? 10;
    // Decoder rows: random unit directions; b_dec nonzero. The encoder is never used on pooled data.
    const dec = new Float32Array(m * d);
    for (let k = 0; k < m; k++) {
      const v = Array.from({ length: d }, () => randomNormal(rng));
      const norm = Math.hypot(...v);
      v.forEach((x, j) => (dec[k * d + j] = x / norm));
    }
    const bDec = Float32Array.from({ length: d }, () => randomNormal(rng, 0, 0.2));
    const codes = new Float32Array(n * m);
    const errors = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      codes[i * m] = z[i]! === 1 ? 1 + 0.1 * rng() : 0.05 * rng();
      codes[i * m + 1] = Math.max(0, 0.4 + 0.5 * y[i]! + randomNormal(rng, 0, 0.18));
      for (let k = 2; k < m; k++) codes[i * m + k] = rng() < 0.5 ? 0 : Math.abs(randomNormal(rng, 0, 0.15));
      for (let j = 0; j < d; j++) errors[i * d + j] = randomNormal(rng, 0, 0.05);
      for (let j = 0; j < d; j++) {
        let s = bDec[j]! + errors[i * d + j]!;
        for (let k = 0; k < m; k++) s += codes[i * m + k]! * dec[k * d + j]!;
        pooled[i * d + j] = s;
      }
    }
    const enc = Float32Array.from({ length: d * m }, () => randomNormal(rng, 0, 0.5));
    const sae = new ToySae(tf.tensor2d(enc, [d, m]), tf.zeros([m]) as tf.Tensor1D, tf.tensor2d(dec, [m, d]), tf.tensor1d(bDec));
    const cache = ActivationCache.fromArrays(n, { [HOOK]: pooled }, { [HOOK]: { codes: denseToCsr(codes, n, m), errors } });
    return { cache, train, concept, test, balanced, sae, pooled, n };
  }
  const axis = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    axis[i * d] = (2 * z[i]! - 1) * 0.8 + randomNormal(rng, 0, 0.1);
    axis[i * d + 1] = (2 * y[i]! - 1) * 0.4 + randomNormal(rng, 0, 0.2);
    for (let j = 2; j < d; j++) axis[i * d + j] = randomNormal(rng, 0, 0.3);
  }
  let rotation: Float64Array | undefined;
  if (options.kind === 'das') {
    rotation = randomRotation(d, rng);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) {
        let s = 0;
        for (let k = 0; k < d; k++) s += axis[i * d + k]! * rotation[k * d + j]!;
        pooled[i * d + j] = s;
      }
    }
  } else {
    pooled.set(axis);
  }
  const cache = ActivationCache.fromArrays(n, { [HOOK]: pooled });
  return { cache, train, concept, test, balanced, pooled, n, ...(rotation === undefined ? {} : { rotation }) };
}

/** Probe options for the small planted problems (the SHIFT default of one epoch is too short here). */
export const PROBE_OPTIONS = { epochs: 40, lr: 0.05, batchSize: 32, shuffle: true, seed: 42 } as const;

/** The biased probe: trained on the pooled activations of the ambiguous training split. */
export function biasedProbe(cache: ActivationCache, train: LabelledSplit, hook = HOOK): LinearProbe {
  const probe = new LinearProbe(cache.dim(hook), 2, PROBE_OPTIONS);
  const X = cache.pooled(hook, train.rows);
  probe.fit(X, train.y);
  X.dispose();
  return probe;
}

/** Accuracy per (y, z) group and the worst of them. */
export function groupAccuracy(probe: Probe, X: tf.Tensor2D, s: LabelledSplit): { groups: number[]; worst: number; overall: number } {
  const pred = probe.predict(X);
  const hit = [0, 0, 0, 0];
  const count = [0, 0, 0, 0];
  let right = 0;
  for (let i = 0; i < pred.length; i++) {
    const g = 2 * s.y[i]! + s.z[i]!;
    count[g]!++;
    if (pred[i] === s.y[i]) {
      hit[g]!++;
      right++;
    }
  }
  const groups = hit.map((h, g) => h / Math.max(1, count[g]!));
  return { groups, worst: Math.min(...groups), overall: right / pred.length };
}

/**
 * A model that only names its hooks (those of a 1-layer toy model) and throws when run: the pooled
 * path must never run the model.
 */
export function hooksOnlyModel(): Model {
  return {
    config: { modelType: 'hooks-only', nLayers: 1, dModel: D, vocabSize: 1, maxPositions: 1 },
    hookNames: standardHookNames(1),
    run: () => {
      throw new Error('hooks-only model: run() was called on the pooled path');
    },
    dispose: () => undefined,
  };
}

/** A fit context over the planted pooled problem (the pooled path never re-caches). */
export function pooledContext(p: PlantedPooled, probe: Probe, model: Model = hooksOnlyModel()): FitContext {
  return {
    model,
    tokenize: toyTokenize,
    cache: p.cache,
    recache: () => Promise.reject(new Error('pooled mask fixtures: recache() was called')),
    batchSize: 32,
    saes: p.sae === undefined ? {} : { [HOOK]: p.sae },
    probeHook: HOOK,
    probe,
    train: p.train,
    concept: p.concept,
    balanced: p.balanced,
    seed: 42,
  };
}
