import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { mulberry32, randomNormal, randomNormalArray } from '../../src/data/prng.js';
import { AffineSae } from '../../src/sae/sae.js';
import { MnistMaskTrainer, NeuronUnits, SaeUnits, SubspaceUnits, type HiddenUnits } from '../../src/mnist/masks.js';
import { mnistOptionsSchema } from '../../src/mnist/options.js';
import { maxOf } from '../../src/util/arrays.js';

beforeAll(async () => {
  await initEngine();
});

const D = 10;
const ERASE = [3, 4, 5, 6, 7, 8, 9];

/**
 * A toy hidden layer where neuron j fires for digit j: h = 3 onehot(y) + |noise| / 10, read by the
 * head logits = 2 h. Removing neurons 3-9 levels the logits of erased digits (uniform predictions)
 * and leaves kept digits alone; removing a kept neuron costs kept cross-entropy.
 */
function toyData(n: number, seed: number): { hidden: Float32Array; labels: Uint8Array } {
  const rng = mulberry32(seed);
  const labels = Uint8Array.from({ length: n }, (_, i) => i % 10);
  const hidden = new Float32Array(n * D);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < D; j++) hidden[i * D + j] = Math.abs(randomNormal(rng)) / 10;
    hidden[i * D + labels[i]!]! += 3;
  }
  return { hidden, labels };
}

function toyHead(): { weight: Float32Array; bias: Float32Array } {
  const weight = new Float32Array(D * 10);
  for (let j = 0; j < D; j++) weight[j * 10 + j] = 2;
  return { weight, bias: new Float32Array(10) };
}

const maskConfig = (over: Record<string, number> = {}) => mnistOptionsSchema.shape.mask.parse({ epochs: 12, batchSize: 50, lr: 0.05, ...over });

function train(units: HiddenUnits, data: { hidden: Float32Array; labels: Uint8Array }, config = maskConfig()): MnistMaskTrainer {
  const trainer = new MnistMaskTrainer({ units, head: toyHead(), hidden: data.hidden, labels: data.labels, erase: ERASE, config, seed: 3 });
  while (!trainer.done) trainer.step();
  return trainer;
}

/** Logits 2 h' of edited rows, as rows of 10. */
function logitsOf(hidden: Float32Array): number[][] {
  const rows: number[][] = [];
  for (let i = 0; i < hidden.length / D; i++) rows.push(Array.from(hidden.subarray(i * D, (i + 1) * D), (v) => 2 * v));
  return rows;
}

function edit(units: HiddenUnits, h: Float32Array, n: number, gate: number[]): Float32Array {
  const t = tf.tidy(() => units.edit(tf.tensor2d(h, [n, units.dIn]), tf.tensor1d(gate)));
  const out = Float32Array.from(t.dataSync());
  t.dispose();
  return out;
}

describe('MNIST mask units', () => {
  const h = Float32Array.from(randomNormalArray(4 * D, 11), Math.abs);

  it("neurons: h' = s ⊙ h", () => {
    const gate = [1, 0, 0.5, 1, 1, 0, 1, 1, 1, 0.25];
    const out = edit(new NeuronUnits(D), h, 4, gate);
    out.forEach((v, i) => expect(v).toBeCloseTo(h[i]! * gate[i % D]!, 6));
  });

  it('SAE features: gate 1 is the identity and gate 0 leaves the SAE error plus b_dec (the error is kept)', () => {
    const dSae = 16;
    const sae = new AffineSae(
      {
        wEnc: tf.tensor2d(randomNormalArray(D * dSae, 1, 0, 0.5), [D, dSae]),
        bEnc: tf.tensor1d(randomNormalArray(dSae, 2, 0, 0.1)),
        wDec: tf.tensor2d(randomNormalArray(dSae * D, 3, 0, 0.5), [dSae, D]),
        bDec: tf.tensor1d(randomNormalArray(D, 4, 0, 0.1)),
        subtractDecoderBiasFromInput: true,
        activation: { kind: 'relu' },
      },
      { format: 'sae-eraser', source: 'test' },
    );
    const units = new SaeUnits(sae);
    try {
      expect(units.nUnits).toBe(dSae);
      edit(units, h, 4, new Array<number>(dSae).fill(1)).forEach((v, i) => expect(v).toBeCloseTo(h[i]!, 5));
      const removedAll = edit(units, h, 4, new Array<number>(dSae).fill(0));
      const want = tf.tidy(() => tf.add(sae.error(tf.tensor2d(h, [4, D])), sae.bDec));
      want.dataSync().forEach((v, i) => expect(removedAll[i]).toBeCloseTo(v, 5));
      want.dispose();
      // One feature removed: h - f_j v_j.
      const gate = new Array<number>(dSae).fill(1);
      gate[5] = 0;
      const one = edit(units, h, 4, gate);
      const [f, v] = tf.tidy(() => [sae.encode(tf.tensor2d(h, [4, D])), tf.slice(sae.wDec, [5, 0], [1, D])]);
      const fv = f!.dataSync();
      const vv = v!.dataSync();
      for (let i = 0; i < 4; i++) for (let j = 0; j < D; j++) expect(one[i * D + j]).toBeCloseTo(h[i * D + j]! - fv[i * dSae + 5]! * vv[j]!, 5);
      tf.dispose([f!, v!]);
    } finally {
      units.dispose();
      sae.dispose();
    }
  });

  it('DAS directions: orthonormal, gate 1 is the identity, gate 0 removes exactly their span', () => {
    const units = new SubspaceUnits(D, 4, 9);
    try {
      const u = units.basis();
      const gram = tf.tidy(() => tf.matMul(tf.transpose(u), u));
      gram.dataSync().forEach((v, i) => expect(v).toBeCloseTo(i % 5 === 0 ? 1 : 0, 5));
      const uData = u.dataSync();
      tf.dispose([u, gram]);
      edit(units, h, 4, [1, 1, 1, 1]).forEach((v, i) => expect(v).toBeCloseTo(h[i]!, 5));
      const out = edit(units, h, 4, [0, 0, 0, 0]);
      // (h') U = 0 and h - h' lies in span(U): h' is the projection onto the complement.
      for (let i = 0; i < 4; i++) {
        for (let c = 0; c < 4; c++) {
          let s = 0;
          for (let r = 0; r < D; r++) s += out[i * D + r]! * uData[r * 4 + c]!;
          expect(Math.abs(s)).toBeLessThan(1e-5);
        }
      }
      expect(() => new SubspaceUnits(D, D + 1, 1)).toThrow(/rank must be an integer in 1\.\.10/);
    } finally {
      units.dispose();
    }
  });
});

describe('MnistMaskTrainer on a toy layer with one neuron per digit', () => {
  const data = toyData(500, 5);

  it("the neuron mask removes exactly the erased digits' neurons, and erased predictions become near uniform", () => {
    const units = new NeuronUnits(D);
    const trainer = train(units, data);
    try {
      const removed = Array.from(trainer.maskLogits(), (m, j) => (m > 0 ? -1 : j)).filter((j) => j >= 0);
      expect(removed).toEqual(ERASE);
      expect(trainer.unitsRemoved()).toBe(7);
      const info = trainer.loss()!;
      expect(info.step).toBe(trainer.totalSteps);
      // Kept CE: logits 2 * 3 = 6 against ~0.2 for the rest; erased term near 0 (uniform).
      expect(info.keptLoss).toBeLessThan(0.05);
      expect(info.erasedLoss).toBeLessThan(0.05);
      const logits = logitsOf(trainer.apply(data.hidden));
      logits.forEach((row, i) => {
        const spread = maxOf(row) - Math.min(...row);
        if (ERASE.includes(data.labels[i]!)) expect(spread).toBeLessThan(1);
        else expect(row.indexOf(maxOf(row))).toBe(data.labels[i]);
      });
    } finally {
      trainer.dispose();
    }
  });

  it('is deterministic for a seed', () => {
    const a = train(new NeuronUnits(D), data, maskConfig({ epochs: 2 }));
    const b = train(new NeuronUnits(D), data, maskConfig({ epochs: 2 }));
    expect(Array.from(b.maskLogits())).toEqual(Array.from(a.maskLogits()));
    a.dispose();
    b.dispose();
  });

  it("the DAS mask learns directions whose removal levels the erased digits' logits and keeps the kept ones", () => {
    const units = new SubspaceUnits(D, D, 2);
    const before = tf.memory().numTensors;
    const trainer = train(units, data, maskConfig({ epochs: 20 }));
    try {
      const info = trainer.loss()!;
      expect(info.keptLoss).toBeLessThan(0.1);
      expect(info.erasedLoss).toBeLessThan(0.1);
      // Seven digit directions carry the erased digits; fewer removed directions cannot level them.
      expect(trainer.unitsRemoved()).toBeGreaterThanOrEqual(7);
      const logits = logitsOf(trainer.apply(data.hidden));
      let kept = 0;
      let keptRight = 0;
      logits.forEach((row, i) => {
        if (ERASE.includes(data.labels[i]!)) return;
        kept++;
        if (row.indexOf(maxOf(row)) === data.labels[i]) keptRight++;
      });
      expect(keptRight / kept).toBeGreaterThan(0.98);
    } finally {
      trainer.dispose();
      units.dispose();
    }
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });

  it('refuses mismatched inputs and steps past the end', () => {
    const units = new NeuronUnits(D);
    const config = maskConfig({ epochs: 1 });
    expect(() => new MnistMaskTrainer({ units, head: toyHead(), hidden: data.hidden.subarray(1), labels: data.labels, erase: ERASE, config, seed: 1 })).toThrow(
      /neuron_mask: 4999 hidden values are not 500 rows of width 10/,
    );
    const trainer = train(units, data, config);
    expect(() => trainer.step()).toThrow(/all 10 steps are taken/);
    trainer.dispose();
  });
});
