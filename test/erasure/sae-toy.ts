/**
 * A tiny, fast, differentiable stand-in for a transformer, SAEs and a planted bias problem, for the
 * SHIFT / attribution / ablation tests.
 *
 * Model (hooks as in src/models/model.ts, run through the real HookRunner):
 *   embed      = E[token]
 *   attn_out_i = causalMean(x) W_a           (mean over real tokens up to t: mixes tokens)
 *   mlp_out_i  = tanh((x + attn) W_1) W_2
 *   resid_out_i = x + attn + mlp
 * Vocabulary: words whose embeddings lie on planted axes: e0 male words, e1 female words, e2
 * surgeon words, e3 nurse words, e4..e7 generic filler words.
 */
import { matMulT, tf } from '../../src/engine/engine.js';
import { mulberry32, randomNormal, type Rng } from '../../src/data/prng.js';
import { HookRunner, tidyRun } from '../../src/models/hook-runner.js';
import { standardHookNames, type Batch, type HookName, type Model, type ForwardOptions, type ForwardResult } from '../../src/models/model.js';
import type { EraserSae, FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { ActivationCache, buildActivationCache } from '../../src/cache/cache.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const D = 8;

export const MALE_WORDS = ['he', 'his', 'him'];
export const FEMALE_WORDS = ['she', 'her', 'hers'];
export const SURGEON_WORDS = ['surgery', 'scalpel', 'operating'];
export const NURSE_WORDS = ['nursing', 'care', 'ward'];
export const FILLER_WORDS = ['the', 'a', 'and', 'works', 'at', 'in', 'hospital', 'patients', 'years', 'team'];
export const VOCAB = ['<pad>', ...MALE_WORDS, ...FEMALE_WORDS, ...SURGEON_WORDS, ...NURSE_WORDS, ...FILLER_WORDS];

/** Whitespace tokeniser over VOCAB, right-padded with id 0 and mask 0. */
export function toyTokenize(texts: string[]): Batch {
  const ids = texts.map((t) =>
    t
      .split(/\s+/)
      .filter((w) => w !== '')
      .map((w) => {
        const id = VOCAB.indexOf(w);
        if (id < 1) throw new Error(`toy tokenizer: unknown word "${w}"`);
        return id;
      }),
  );
  const len = Math.max(1, ...ids.map((r) => r.length));
  return {
    inputIds: tf.tensor2d(
      ids.map((r) => Array.from({ length: len }, (_, i) => r[i] ?? 0)),
      [texts.length, len],
      'int32',
    ),
    attentionMask: tf.tensor2d(
      ids.map((r) => Array.from({ length: len }, (_, i) => (i < r.length ? 1 : 0))),
      [texts.length, len],
      'int32',
    ),
  };
}

function axisFor(word: string): number {
  if (MALE_WORDS.includes(word)) return 0;
  if (FEMALE_WORDS.includes(word)) return 1;
  if (SURGEON_WORDS.includes(word)) return 2;
  if (NURSE_WORDS.includes(word)) return 3;
  return 4 + (FILLER_WORDS.indexOf(word) % 4);
}

function gaussian(rng: Rng, n: number, std: number): Float32Array {
  return Float32Array.from({ length: n }, () => randomNormal(rng, 0, std));
}

export interface ToyModelOptions {
  nLayers?: number;
  seed?: number;
  /** Scale of the layer weights (small keeps the planted axes readable downstream). */
  layerScale?: number;
}

export class ToyModel implements Model {
  readonly config: { modelType: string; nLayers: number; dModel: number; vocabSize: number; maxPositions: number };
  readonly hookNames: readonly HookName[];
  private readonly embedding: tf.Tensor2D;
  private readonly layers: { wA: tf.Tensor2D; w1: tf.Tensor2D; w2: tf.Tensor2D }[];
  calls = 0;

  constructor(options: ToyModelOptions = {}) {
    const nLayers = options.nLayers ?? 1;
    const scale = options.layerScale ?? 0.15;
    const rng = mulberry32(options.seed ?? 42);
    this.config = { modelType: 'toy', nLayers, dModel: D, vocabSize: VOCAB.length, maxPositions: 64 };
    this.hookNames = standardHookNames(nLayers);
    const e = new Float32Array(VOCAB.length * D);
    VOCAB.forEach((w, id) => {
      if (id === 0) return;
      for (let j = 0; j < D; j++) e[id * D + j] = randomNormal(rng, 0, 0.05);
      const k = id * D + axisFor(w);
      e[k] = (e[k] ?? 0) + (1 + 0.2 * rng());
    });
    this.embedding = tf.tensor2d(e, [VOCAB.length, D]);
    const H = 12;
    this.layers = Array.from({ length: nLayers }, () => ({
      wA: tf.tensor2d(gaussian(rng, D * D, scale), [D, D]),
      w1: tf.tensor2d(gaussian(rng, D * H, 2 * scale), [D, H]),
      w2: tf.tensor2d(gaussian(rng, H * D, scale), [H, D]),
    }));
  }

  run(batch: Batch, options: ForwardOptions = {}): ForwardResult {
    this.calls++;
    const runner = new HookRunner(this.hookNames, this.config.nLayers, options);
    return tidyRun(() => {
      const [n, seq] = batch.inputIds.shape;
      const mask = tf.cast(batch.attentionMask, 'float32');
      // lower[t, s] = 1 for s <= t.
      const tri = new Float32Array(seq * seq);
      for (let t = 0; t < seq; t++) for (let u = 0; u <= t; u++) tri[t * seq + u] = 1;
      const lower = tf.tile(tf.tensor3d(tri, [1, seq, seq]), [n, 1, 1]);
      const counts = tf.maximum(tf.matMul(lower, tf.expandDims(mask, 2)), 1);
      let x: tf.Tensor3D | undefined;
      if (runner.needs('embed')) x = runner.at('embed', tf.gather(this.embedding, batch.inputIds) as unknown as tf.Tensor3D);
      for (let i = 0; i < this.config.nLayers && x !== undefined; i++) {
        const { wA, w1, w2 } = this.layers[i]!;
        if (!runner.needs(`layers.${i}.attn_out`)) break;
        const prefixMean = tf.div(tf.matMul(lower, tf.mul(x, tf.expandDims(mask, 2))), counts);
        const attn = runner.at(`layers.${i}.attn_out`, matMulT(prefixMean, wA) as tf.Tensor3D);
        if (!runner.needs(`layers.${i}.mlp_out`)) break;
        const mid = tf.add(x, attn);
        const mlp = runner.at(`layers.${i}.mlp_out`, matMulT(tf.tanh(matMulT(mid, w1)), w2) as tf.Tensor3D);
        if (!runner.needs(`layers.${i}.resid_out`)) break;
        x = runner.at(`layers.${i}.resid_out`, tf.add(mid, mlp) as tf.Tensor3D);
      }
      return { captures: runner.captures };
    });
  }

  dispose(): void {
    tf.dispose([this.embedding, ...this.layers.flatMap((l) => [l.wA, l.w1, l.w2])]);
  }
}

/** A ReLU SAE f = relu((x - b_dec) W_enc + b_enc), decode(f) = f W_dec + b_dec. */
export class ToySae implements EraserSae {
  readonly dIn: number;
  readonly dSae: number;

  constructor(
    readonly wEnc: tf.Tensor2D,
    readonly bEnc: tf.Tensor1D,
    readonly wDec: tf.Tensor2D,
    readonly bDec: tf.Tensor1D,
  ) {
    [this.dIn, this.dSae] = wEnc.shape;
  }

  encode(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const flat = tf.reshape(x, [-1, this.dIn]);
      return tf.reshape(tf.relu(tf.add(matMulT(tf.sub(flat, this.bDec), this.wEnc), this.bEnc)), [...lead, this.dSae]);
    });
  }

  decode(f: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = f.shape.slice(0, -1);
      return tf.reshape(tf.add(matMulT(tf.reshape(f, [-1, this.dSae]), this.wDec), this.bDec), [...lead, this.dIn]);
    });
  }

  decoderDirections(): tf.Tensor2D {
    return tf.clone(this.wDec);
  }

  dispose(): void {
    tf.dispose([this.wEnc, this.bEnc, this.wDec, this.bDec]);
  }
}

/**
 * The "axis" SAE: features 0..D-1 read the positive part of each planted axis (decoder row e_j),
 * features D..D+extra-1 read random directions (small decoder rows); b_dec = 0.
 */
export function axisSae(extra = 2, seed = 5): ToySae {
  const rng = mulberry32(seed);
  const m = D + extra;
  const enc = new Float32Array(D * m);
  const dec = new Float32Array(m * D);
  for (let j = 0; j < D; j++) {
    enc[j * m + j] = 1;
    dec[j * D + j] = 1;
  }
  for (let k = D; k < m; k++) {
    for (let j = 0; j < D; j++) {
      const v = randomNormal(rng, 0, 0.3);
      enc[j * m + k] = v;
      dec[k * D + j] = 0.1 * v;
    }
  }
  return new ToySae(tf.tensor2d(enc, [D, m]), tf.tensor1d(new Float32Array(m).fill(-0.05)), tf.tensor2d(dec, [m, D]), tf.zeros([D]) as tf.Tensor1D);
}

/** An SAE with random weights and nonzero biases (for exact-math checks). */
export function randomSae(dSae: number, seed: number): ToySae {
  const rng = mulberry32(seed);
  return new ToySae(
    tf.tensor2d(gaussian(rng, D * dSae, 0.6), [D, dSae]),
    tf.tensor1d(gaussian(rng, dSae, 0.1)),
    tf.tensor2d(gaussian(rng, dSae * D, 0.5), [dSae, D]),
    tf.tensor1d(gaussian(rng, D, 0.2)),
  );
}

function pick(rng: Rng, words: readonly string[]): string {
  return words[Math.floor(rng() * words.length)]!;
}

/** A sentence with gender words by z, profession words by y and fillers, shuffled. */
export function sentence(rng: Rng, y: number, z: number): string {
  const words: string[] = [];
  const nGender = 1 + Math.floor(rng() * 2);
  const nTask = 1 + Math.floor(rng() * 2);
  const nFill = 3 + Math.floor(rng() * 5);
  for (let i = 0; i < nGender; i++) words.push(pick(rng, z === 0 ? MALE_WORDS : FEMALE_WORDS));
  for (let i = 0; i < nTask; i++) words.push(pick(rng, y === 0 ? SURGEON_WORDS : NURSE_WORDS));
  for (let i = 0; i < nFill; i++) words.push(pick(rng, FILLER_WORDS));
  for (let i = words.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [words[i], words[j]] = [words[j]!, words[i]!];
  }
  return words.join(' ');
}

export interface PlantedSplits {
  texts: string[];
  /** Ambiguous: y = z. */
  train: LabelledSplit;
  /** Natural distribution: z = y with probability `agree`. */
  concept: LabelledSplit;
  /** The four (y, z) groups in equal numbers. */
  balanced: LabelledSplit;
}

/** Splits over one text list (the cache rows are positions in `texts`). */
export function plantedSplits(options: { nTrain?: number; nConcept?: number; nBalanced?: number; agree?: number; seed?: number } = {}): PlantedSplits {
  const rng = mulberry32(options.seed ?? 42);
  const texts: string[] = [];
  const make = (n: number, label: (i: number) => [number, number]): LabelledSplit => {
    const rows = new Int32Array(n);
    const y = new Int32Array(n);
    const z = new Int32Array(n);
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const [yi, zi] = label(i);
      rows[i] = texts.length;
      y[i] = yi;
      z[i] = zi;
      const t = sentence(rng, yi, zi);
      texts.push(t);
      out.push(t);
    }
    return { rows, y, z, texts: out };
  };
  const agree = options.agree ?? 0.75;
  const train = make(options.nTrain ?? 160, (i) => [i % 2, i % 2]);
  const concept = make(options.nConcept ?? 400, () => {
    const yi = rng() < 0.5 ? 0 : 1;
    return [yi, rng() < agree ? yi : 1 - yi];
  });
  const balanced = make(options.nBalanced ?? 160, (i) => [i % 2, Math.floor(i / 2) % 2]);
  return { texts, train, concept, balanced };
}

/** The probe's hook in the toy fits: the residual output of the one layer. */
export const TOY_PROBE_HOOK = 'layers.0.resid_out';

/** The planted problem ready to fit erasers on: a one-layer toy model, axis SAEs at `embed` and the probe hook, a cache and the biased probe. */
export interface ToyFit {
  model: ToyModel;
  saes: Record<HookName, ToySae>;
  splits: PlantedSplits;
  cache: ActivationCache;
  /** Trained on the ambiguous split at the probe hook. */
  probe: LinearProbe;
  /** A fit context over all of it; `recache` caches edited texts at the probe hook. */
  context(extra?: Partial<FitContext>): FitContext;
  dispose(): void;
}

/** Builds a `ToyFit` (call `initEngine()` first); `tokenize` replaces `toyTokenize`, `splits` the seed-42 planted splits. */
export async function toyFit(options: { tokenize?: (texts: string[]) => Batch; splits?: PlantedSplits } = {}): Promise<ToyFit> {
  const tokenize = options.tokenize ?? toyTokenize;
  const model = new ToyModel({ nLayers: 1, seed: 42 });
  const saes = { embed: axisSae(2, 5), [TOY_PROBE_HOOK]: axisSae(2, 6) };
  const splits = options.splits ?? plantedSplits({ seed: 42 });
  const root = mkdtempSync(join(tmpdir(), 'toy-fit-'));
  const cache = await buildActivationCache(
    {
      modelId: 'toy',
      hooks: ['embed', TOY_PROBE_HOOK],
      tokenizerId: 'toy',
      texts: splits.texts,
      saes: { embed: { sae: saes.embed, id: 'embed' }, [TOY_PROBE_HOOK]: { sae: saes[TOY_PROBE_HOOK], id: 'resid' } },
    },
    { model, tokenize, root, batchSize: 64 },
  );
  const probe = new LinearProbe(D, 2, { epochs: 40, batchSize: 32 });
  const X = cache.pooled(TOY_PROBE_HOOK, splits.train.rows);
  probe.fit(X, splits.train.y);
  X.dispose();
  const context = (extra: Partial<FitContext> = {}): FitContext => ({
    model,
    tokenize,
    cache,
    recache: (texts) =>
      buildActivationCache({ modelId: 'toy', hooks: [TOY_PROBE_HOOK], tokenizerId: 'toy', texts, saes: {} }, { model, tokenize, root, batchSize: 64 }),
    batchSize: 64,
    saes,
    probeHook: TOY_PROBE_HOOK,
    probe,
    train: splits.train,
    concept: splits.concept,
    seed: 42,
    ...extra,
  });
  return {
    model,
    saes,
    splits,
    cache,
    probe,
    context,
    dispose: () => {
      probe.dispose();
      Object.values(saes).forEach((s) => s.dispose());
      model.dispose();
    },
  };
}
