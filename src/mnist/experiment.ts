/**
 * The MNIST digit erasure experiment (`sae-eraser mnist`), the original project's toy experiment
 * made measurable:
 *
 *  1. split the 10k MNIST images seeded 8000 / 2000 (src/data/mnist.ts) and train the small CNN
 *     (src/models/mnist-cnn.ts) on the 8000;
 *  2. train a ReLU SAE (src/sae/train.ts) on the CNN's hidden layer over the training images;
 *  3. for each of sae_mask, neuron_mask and das_mask, learn a gate over the hidden layer's units
 *     (masks.ts) with the CNN's output layer frozen, so that kept digits stay classified and erased
 *     digits get uniform predictions (the bounded objective of objective.ts);
 *  4. score each hard mask on the 2000 test images: accuracy on kept digits, accuracy on erased
 *     digits, and recoverability: a fresh linear classifier trained on the masked hidden layer of
 *     the training split (all digits), scored on the erased test digits.
 *
 * What good erasure looks like. `erased_acc` goes below chance (10%) toward 0, not to chance. The
 * head is frozen and a mask can only remove units; the units that carry evidence for the erased
 * digits are what raise their logits, so once they are gone an erased image's logits are nearly
 * level and the small differences left come from units the kept digits need, which point at kept
 * digits: always wrong for an erased image. (Measured: neuron_mask and das_mask send most erased
 * images to 0-2 and score 2-5%.) sae_mask stays higher because it keeps the SAE error and cannot
 * remove the decoder bias b_dec: with every feature removed an image becomes b_dec + error, which
 * the head reads as some erased digit (`sae.decoder_bias_probs`), right for that digit's images.
 * `erased_recoverability` is the stricter test: with the digits' information gone, a fresh linear
 * classifier could at best tell "an erased digit" and guess the most common one
 * (`chance.erased_majority`, about 1/7 for 3-9); a mask trained against the frozen head removes
 * only what that head reads, and the measured recoverability stays far above that (the objective
 * does not ask for more).
 *
 * Outputs in the run folder: metrics.json and table.md (written atomically), the CNN
 * (cnn.safetensors), the SAE (sae/, SAELens format) and the gate logits of every mask with the DAS
 * basis (masks.safetensors).
 */
import { join } from 'node:path';
import { initEngine, tf } from '../engine/engine.js';
import { writeFileAtomic, writeJsonAtomic } from '../io/atomic.js';
import { writeSafetensors, type RawTensor } from '../io/safetensors.js';
import { loadMnistTestSet, normaliseMnist, splitMnist, subset, type MnistSet } from '../data/mnist.js';
import { MnistCnn } from '../models/mnist-cnn.js';
import { arrayActivationSource } from '../sae/buffer.js';
import { evaluateSae, saveTrainedSae, trainSaeOnSource } from '../sae/train.js';
import type { AffineSae } from '../sae/sae.js';
import { LinearProbe } from '../probe/linear.js';
import { accuracy, wilson, type Interval } from '../eval/metrics.js';
import { maxOf } from '../util/arrays.js';
import type { HistoryLog } from '../util/history.js';
import { progress } from '../util/progress.js';
import { parseStrict } from '../util/schema.js';
import { hiddenActivations, predictFromHidden, trainMnistCnn } from './classifier.js';
import { MnistMaskTrainer, NeuronUnits, SaeUnits, SubspaceUnits, type HiddenUnits } from './masks.js';
import { mnistOptionsSchema, type MnistMaskMethod, type MnistOptions, type MnistOptionsInput } from './options.js';

export const MNIST_METRICS_FORMAT = 'sae-eraser/mnist-metrics';

/** Scores of one representation of the hidden layer (masked or not). */
export interface MnistScores {
  /** Accuracy of the frozen head on kept test digits. */
  kept_acc: Interval;
  /** Accuracy of the frozen head on erased test digits. */
  erased_acc: Interval;
  /** Accuracy on erased test digits of a fresh linear classifier trained on this representation of the training split. */
  erased_recoverability: Interval;
}

export interface MnistMethodResult extends MnistScores {
  /** Units whose hard gate is 0. */
  units_removed: number;
  /** Units the mask gates (SAE features, neurons, or rotated directions). */
  units_total: number;
  /** Loss parts of the last training step. */
  final_kept_loss: number;
  final_erased_loss: number;
  seconds: number;
}

export interface MnistMetrics {
  format: typeof MNIST_METRICS_FORMAT;
  version: 1;
  erase: number[];
  keep: number[];
  /** Accuracy of the trained CNN on all test images. */
  test_acc: Interval;
  /** The unmasked hidden layer, scored as the masks are. */
  base: MnistScores;
  chance: {
    /** 1/10: the accuracy of uniform random guessing. */
    uniform: number;
    /** Share of the most common digit among erased test images: what a classifier that can only tell "erased" reaches. */
    erased_majority: Interval;
  };
  sae: {
    d_sae: number;
    /** Fraction of variance explained, L0 and dead features on the test split's hidden activations. */
    fve: number;
    l0: number;
    dead_fraction: number;
    /**
     * The head's predictions at the decoder bias b_dec, softmax over digits 0-9: what an image with
     * every SAE feature removed (and no SAE error) is classified as, the floor of sae_mask.
     */
    decoder_bias_probs: number[];
  };
  methods: Partial<Record<MnistMaskMethod, MnistMethodResult>>;
  data: { dir: string; train: number; test: number };
  cnn: { epoch_losses: number[] };
  seconds: { cnn: number; sae: number; total: number };
  options: MnistOptions;
}

/** Fills the defaults and checks the options (errors name the field). */
export function resolveMnistOptions(input: MnistOptionsInput): MnistOptions {
  const o = parseStrict(mnistOptionsSchema, input, 'mnist options');
  if (o.mask.dasRank > o.cnn.hidden)
    throw new Error(`mnist options: field "mask.dasRank" is ${o.mask.dasRank}, more than the hidden width cnn.hidden = ${o.cnn.hidden}`);
  return o;
}

function digitsKept(erase: readonly number[]): number[] {
  return Array.from({ length: 10 }, (_, d) => d).filter((d) => !erase.includes(d));
}

/** The rows of `labels` whose digit is (`erased`) or is not in `erase`. */
function rowsWhere(labels: Uint8Array, erase: readonly number[], erased: boolean): Int32Array {
  const set = new Set(erase);
  const rows: number[] = [];
  for (let i = 0; i < labels.length; i++) if (set.has(labels[i]!) === erased) rows.push(i);
  return Int32Array.from(rows);
}

function pick<T extends Int32Array | Uint8Array>(values: T, rows: Int32Array): number[] {
  return Array.from(rows, (i) => values[i]!);
}

/**
 * Each column standardised with the training rows' mean and standard deviation (constant columns
 * become 0): an affine map, so it changes nothing a linear classifier can read, but AdamW on
 * unit-scale inputs converges in the same few epochs whatever the layer's scale.
 */
function standardised(train: Float32Array, test: Float32Array, d: number): [Float32Array, Float32Array] {
  const n = train.length / d;
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const v = train[i * d + j]!;
      mean[j]! += v / n;
      sq[j]! += (v * v) / n;
    }
  }
  const scale = Float64Array.from(mean, (m, j) => {
    const sd = Math.sqrt(Math.max(0, sq[j]! - m * m));
    return sd > 1e-6 ? 1 / sd : 0;
  });
  const apply = (x: Float32Array): Float32Array => Float32Array.from(x, (v, k) => (v - mean[k % d]!) * scale[k % d]!);
  return [apply(train), apply(test)];
}

/**
 * Accuracy on erased test rows of a fresh linear classifier (10 classes, AdamW, seeded, rows
 * reshuffled every epoch) trained on the training rows of a representation `[n * d]` (standardised).
 */
export function erasedRecoverability(
  train: { hidden: Float32Array; labels: Uint8Array },
  test: { hidden: Float32Array; labels: Uint8Array },
  erase: readonly number[],
  d: number,
  probe: MnistOptions['probe'],
  seed: number,
): Interval {
  const clf = new LinearProbe(d, 10, { epochs: probe.epochs, batchSize: probe.batchSize, lr: probe.lr, shuffle: true, seed });
  const [trainX, testX] = standardised(train.hidden, test.hidden, d);
  const xTrain = tf.tensor2d(trainX, [train.labels.length, d]);
  const xTest = tf.tensor2d(testX, [test.labels.length, d]);
  try {
    clf.fit(xTrain, train.labels);
    const rows = rowsWhere(test.labels, erase, true);
    const pred = clf.predict(xTest);
    return accuracy(pick(pred, rows), pick(Int32Array.from(test.labels), rows));
  } finally {
    tf.dispose([xTrain, xTest]);
    clf.dispose();
  }
}

function scores(
  model: MnistCnn,
  train: { hidden: Float32Array; labels: Uint8Array },
  test: { hidden: Float32Array; labels: Uint8Array },
  o: MnistOptions,
): MnistScores {
  const pred = predictFromHidden(model, test.hidden, test.labels.length);
  const y = Int32Array.from(test.labels);
  const kept = rowsWhere(test.labels, o.erase, false);
  const erased = rowsWhere(test.labels, o.erase, true);
  return {
    kept_acc: accuracy(pick(pred, kept), pick(y, kept)),
    erased_acc: accuracy(pick(pred, erased), pick(y, erased)),
    erased_recoverability: erasedRecoverability(train, test, o.erase, model.config.hidden, o.probe, o.seed + 3),
  };
}

/** Softmax of the head's logits at one hidden vector `[H]`. */
function headProbabilities(model: MnistCnn, h: tf.Tensor1D): number[] {
  const p = tf.tidy(() => tf.softmax(model.head(tf.reshape(h, [1, model.config.hidden]))));
  const out = Array.from(p.dataSync());
  p.dispose();
  return out;
}

function unitsFor(method: MnistMaskMethod, sae: AffineSae, d: number, o: MnistOptions): HiddenUnits {
  switch (method) {
    case 'sae_mask':
      return new SaeUnits(sae);
    case 'neuron_mask':
      return new NeuronUnits(d);
    case 'das_mask':
      return new SubspaceUnits(d, o.mask.dasRank, o.seed + 5);
  }
}

function firstRows(set: MnistSet, limit: number | undefined, what: string): MnistSet {
  if (limit === undefined) return set;
  if (limit > set.n) throw new Error(`mnist options: ${what} is ${limit}, but the split has ${set.n} images`);
  return subset(
    set,
    Int32Array.from({ length: limit }, (_, i) => i),
  );
}

function seconds(since: number): number {
  return Math.round((performance.now() - since) / 100) / 10;
}

/** Runs the experiment of the module docstring into the folder `out`; returns what metrics.json holds. */
/**
 * Runs the MNIST experiment into `out` (metrics.json, table.md, cnn.safetensors, sae/, masks).
 * `log` receives the training curves: the CNN's loss per epoch, the SAE's loss, FVE and L0 per step,
 * and each mask's losses and temperature per step.
 */
export async function runMnistExperiment(input: MnistOptionsInput, out: string, log?: HistoryLog): Promise<MnistMetrics> {
  const o = resolveMnistOptions(input);
  const t0 = performance.now();
  // Data first: a wrong folder fails before anything trains.
  const all = loadMnistTestSet(o.data);
  const split = splitMnist(all, { trainSize: o.trainSize, seed: o.seed });
  const trainSet = firstRows(split.train, o.trainExamples, 'trainExamples');
  const testSet = firstRows(split.test, o.testExamples, 'testExamples');
  for (const [set, name] of [
    [trainSet, 'training'],
    [testSet, 'test'],
  ] as const) {
    const present = new Set(set.labels);
    if (!o.erase.some((d) => present.has(d)) || !digitsKept(o.erase).some((d) => present.has(d))) {
      throw new Error(`mnist: the ${name} split (${set.n} images) needs both erased and kept digits`);
    }
  }
  await initEngine();

  const tCnn = performance.now();
  const model = MnistCnn.init({ channels: o.cnn.channels, hidden: o.cnn.hidden }, o.seed);
  let sae: AffineSae | undefined;
  try {
    const report = trainMnistCnn(
      model,
      { x: normaliseMnist(trainSet.images), labels: trainSet.labels, n: trainSet.n },
      { ...o.cnn, seed: o.seed + 1, label: 'mnist cnn' },
    );
    model.save(join(out, 'cnn.safetensors'));
    report.epochLosses.forEach((loss, e) => log?.({ stage: 'cnn', step: e + 1, values: { loss } }));
    const d = model.config.hidden;
    const train = { hidden: hiddenActivations(model, normaliseMnist(trainSet.images), trainSet.n), labels: trainSet.labels };
    const test = { hidden: hiddenActivations(model, normaliseMnist(testSet.images), testSet.n), labels: testSet.labels };
    const testAcc = accuracy(predictFromHidden(model, test.hidden, testSet.n), testSet.labels);
    const cnnSeconds = seconds(tCnn);

    const tSae = performance.now();
    const saeResult = await trainSaeOnSource(arrayActivationSource(train.hidden, d, { seed: o.seed + 2 }), {
      arch: 'relu',
      dSae: o.sae.dSae,
      l1: o.sae.l1,
      lr: o.sae.lr,
      batchSize: Math.min(o.sae.batchSize, trainSet.n),
      tokens: o.sae.epochs * trainSet.n,
      bufferTokens: trainSet.n,
      seed: o.seed + 2,
      hook: 'mnist.hidden',
      model: 'mnist-cnn',
      label: 'mnist sae',
      onStep: log === undefined ? undefined : ({ step, loss, fve, l0 }) => log({ stage: 'sae', step, values: { loss, fve, l0 } }),
    });
    sae = saeResult.sae;
    const saeMetrics = evaluateSae(sae, test.hidden);
    saveTrainedSae(sae, join(out, 'sae'), { ...o.sae, steps: saeResult.steps, heldOut: saeMetrics });
    const saeSeconds = seconds(tSae);

    const erasedTest = rowsWhere(test.labels, o.erase, true);
    const counts = new Map<number, number>();
    for (const i of erasedTest) counts.set(test.labels[i]!, (counts.get(test.labels[i]!) ?? 0) + 1);
    const majority = maxOf(counts.values());

    const metrics: MnistMetrics = {
      format: MNIST_METRICS_FORMAT,
      version: 1,
      erase: [...o.erase].sort((a, b) => a - b),
      keep: digitsKept(o.erase),
      test_acc: testAcc,
      base: scores(model, train, test, o),
      chance: { uniform: 0.1, erased_majority: wilson(majority, erasedTest.length) },
      sae: {
        d_sae: sae.dSae,
        fve: saeMetrics.fve,
        l0: saeMetrics.l0,
        dead_fraction: saeMetrics.deadFraction,
        decoder_bias_probs: headProbabilities(model, sae.bDec),
      },
      methods: {},
      data: { dir: o.data, train: trainSet.n, test: testSet.n },
      cnn: { epoch_losses: report.epochLosses },
      seconds: { cnn: cnnSeconds, sae: saeSeconds, total: 0 },
      options: o,
    };

    const saved: Record<string, tf.Tensor | RawTensor> = {};
    try {
      for (const method of o.methods) {
        const tMask = performance.now();
        const units = unitsFor(method, sae, d, o);
        const trainer = new MnistMaskTrainer({
          units,
          head: model.headWeights(),
          hidden: train.hidden,
          labels: train.labels,
          erase: o.erase,
          config: o.mask,
          seed: o.seed + 4,
        });
        try {
          const bar = progress(`mnist ${method}`, trainer.totalSteps, 'steps');
          while (!trainer.done) {
            const info = trainer.step();
            log?.({
              stage: method,
              step: info.step,
              values: { loss: info.loss, kept_loss: info.keptLoss, erased_loss: info.erasedLoss, temperature: info.temperature },
            });
            bar.tick(1, `kept ${info.keptLoss.toFixed(3)} erased ${info.erasedLoss.toFixed(3)}`);
          }
          bar.done();
          const last = trainer.loss()!;
          const removed = trainer.unitsRemoved();
          const masked = {
            train: { hidden: trainer.apply(train.hidden), labels: train.labels },
            test: { hidden: trainer.apply(test.hidden), labels: test.labels },
          };
          metrics.methods[method] = {
            ...scores(model, masked.train, masked.test, o),
            units_removed: removed,
            units_total: units.nUnits,
            final_kept_loss: last.keptLoss,
            final_erased_loss: last.erasedLoss,
            seconds: seconds(tMask),
          };
          saved[`${method}.logits`] = { dtype: 'F32', shape: [units.nUnits], data: trainer.maskLogits() };
          for (const [name, t] of Object.entries(units.saved())) saved[`${method}.${name}`] = t;
        } finally {
          trainer.dispose();
          units.dispose();
        }
      }
      writeSafetensors(join(out, 'masks.safetensors'), saved, { erase: JSON.stringify(metrics.erase) });
    } finally {
      tf.dispose(Object.values(saved).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
    }
    metrics.seconds.total = seconds(t0);
    writeJsonAtomic(join(out, 'metrics.json'), metrics);
    writeFileAtomic(join(out, 'table.md'), mnistTable(metrics));
    return metrics;
  } finally {
    model.dispose();
    sae?.dispose();
  }
}

function pct(i: Interval): string {
  return `${(100 * i.value).toFixed(1)} [${(100 * i.lo).toFixed(1)}, ${(100 * i.hi).toFixed(1)}]`;
}

/** The metrics as a Markdown table (percentages with 95% Wilson intervals). */
export function mnistTable(m: MnistMetrics): string {
  const lines = [
    `MNIST digit erasure: erase ${m.erase.join(',')}, keep ${m.keep.join(',')}; ${m.data.train} training / ${m.data.test} test images.`,
    `CNN test accuracy ${pct(m.test_acc)}; SAE ${m.sae.d_sae} features, FVE ${m.sae.fve.toFixed(3)}, L0 ${m.sae.l0.toFixed(1)}.`,
    `Chance on erased digits: ${(100 * m.chance.uniform).toFixed(1)} (uniform guess), ${(100 * m.chance.erased_majority.value).toFixed(1)} (most common erased digit).`,
    '',
    '| method | units removed | kept acc | erased acc | erased recoverability |',
    '| --- | --- | --- | --- | --- |',
    `| none (base model) | 0 | ${pct(m.base.kept_acc)} | ${pct(m.base.erased_acc)} | ${pct(m.base.erased_recoverability)} |`,
  ];
  for (const [method, r] of Object.entries(m.methods)) {
    lines.push(`| ${method} | ${r.units_removed} / ${r.units_total} | ${pct(r.kept_acc)} | ${pct(r.erased_acc)} | ${pct(r.erased_recoverability)} |`);
  }
  return lines.join('\n') + '\n';
}
