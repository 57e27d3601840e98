/**
 * The two executors of the activation cache's batch values (src/cache/collect.ts) agree: ONNX
 * Runtime (model, SAE and pooling in one graph) against tfjs, on a tiny BERT with a ReLU SAE, and
 * a whole cache built on each holds the same values.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { buildActivationCache } from '../../src/cache/cache.js';
import { createCollector, type BatchValues } from '../../src/cache/collect.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { openModel, type OpenedModel } from '../../src/models/open.js';
import { AffineSae } from '../../src/sae/sae.js';
import { writeTinyBert } from '../cli/tiny-bert.js';

const HOOKS = ['layers.0.mlp_out', 'layers.1.resid_out'];
const SAE_HOOK = 'layers.1.resid_out';
const TEXTS = ['The nurse said hello.', 'He performs cardiac surgery at the hospital every single weekday.', 'Short.', 'She is a nurse and a pilot.'];
const TOLERANCE = 1e-4;

let dir: string;
let opened: OpenedModel;
let sae: AffineSae;

beforeAll(async () => {
  await initEngine();
  dir = mkdtempSync(join(tmpdir(), 'collect-'));
  opened = await openModel(writeTinyBert(join(dir, 'model'), { d: 32, layers: 2, heads: 4, maxPositions: 64 }));
  sae = new AffineSae(
    {
      wEnc: tf.tensor2d(randomNormalArray(32 * 64, 1, 0, 0.3), [32, 64]),
      bEnc: tf.tensor1d(randomNormalArray(64, 2, -0.1, 0.1)),
      wDec: tf.tensor2d(randomNormalArray(64 * 32, 3, 0, 0.3), [64, 32]),
      bDec: tf.tensor1d(randomNormalArray(32, 4, 0, 0.1)),
      subtractDecoderBiasFromInput: true,
      activation: { kind: 'relu' },
    },
    { format: 'sae-eraser', source: 'test' },
  );
});

afterAll(() => {
  sae.dispose();
  opened.model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function maxDiff(a: Float32Array, b: Float32Array, rows?: { lengths: number[]; seq: number; width: number }): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    // Per-token values: compare real tokens only (pad positions are not defined by either side).
    if (rows !== undefined) {
      const position = Math.floor(i / rows.width);
      if (position % rows.seq >= rows.lengths[Math.floor(position / rows.seq)]!) continue;
    }
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
  }
  return m;
}

describe('activation cache executors', () => {
  it('ONNX Runtime and tfjs give the same pooled, SAE and per-token values', async () => {
    const spec = { hooks: HOOKS, saes: { [SAE_HOOK]: sae }, perToken: true };
    const onnx = await createCollector(opened.model, spec, 'onnx');
    const tfjs = await createCollector(opened.model, spec, 'tfjs');
    expect([onnx.executor, tfjs.executor]).toEqual(['onnx', 'tfjs']);
    const before = tf.memory().numTensors;
    try {
      const batch = opened.tokenize(TEXTS);
      let a: BatchValues;
      let b: BatchValues;
      try {
        a = await onnx.values(batch);
        b = await tfjs.values(batch);
      } finally {
        tf.dispose([batch.inputIds, batch.attentionMask]);
      }
      expect(a.lengths).toEqual(b.lengths);
      expect(Math.min(...a.lengths)).toBeLessThan(a.seq); // the batch has padding
      const tokens = (width: number): { lengths: number[]; seq: number; width: number } => ({ lengths: a.lengths, seq: a.seq, width });
      for (const hook of HOOKS) {
        expect(maxDiff(a.pooled.get(hook)!, b.pooled.get(hook)!), `${hook} pooled`).toBeLessThan(TOLERANCE);
        expect(maxDiff(a.tokenActs.get(hook)!, b.tokenActs.get(hook)!, tokens(32)), `${hook} per token`).toBeLessThan(TOLERANCE);
      }
      expect(maxDiff(a.codesPooled.get(SAE_HOOK)!, b.codesPooled.get(SAE_HOOK)!)).toBeLessThan(TOLERANCE);
      expect(maxDiff(a.errorPooled.get(SAE_HOOK)!, b.errorPooled.get(SAE_HOOK)!)).toBeLessThan(TOLERANCE);
      expect(maxDiff(a.tokenCodes.get(SAE_HOOK)!, b.tokenCodes.get(SAE_HOOK)!, tokens(64))).toBeLessThan(TOLERANCE);
      expect(maxDiff(a.tokenErrors.get(SAE_HOOK)!, b.tokenErrors.get(SAE_HOOK)!, tokens(32))).toBeLessThan(TOLERANCE);
      // Not trivially equal: the SAE is sparse but active.
      const codes = a.codesPooled.get(SAE_HOOK)!;
      expect(codes.some((v) => v > 0)).toBe(true);
      expect(codes.some((v) => v === 0)).toBe(true);
      expect(a.codesPooled.has('layers.0.mlp_out')).toBe(false);
    } finally {
      await onnx.dispose();
      await tfjs.dispose();
    }
    expect(tf.memory().numTensors, 'tensors left').toBe(before);
  });

  it('a cache built on each executor holds the same values (the executor is not part of the key)', async () => {
    const spec = { modelId: 'tiny-bert', hooks: HOOKS, saes: { [SAE_HOOK]: { sae, id: 'sae' } }, tokenizerId: 'tiny', texts: TEXTS };
    const build = (executor: 'onnx' | 'tfjs', root: string) =>
      buildActivationCache(spec, { model: opened.model, tokenize: opened.tokenize, root: join(dir, root), batchSize: 3, executor, label: executor });
    const [a, b] = [await build('onnx', 'onnx'), await build('tfjs', 'tfjs')];
    expect(a.key).toBe(b.key);
    for (const hook of HOOKS) {
      const [x, y] = [a.pooled(hook), b.pooled(hook)];
      expect(tf.max(tf.abs(tf.sub(x, y))).dataSync()[0]).toBeLessThan(TOLERANCE);
      tf.dispose([x, y]);
    }
    const [x, y] = [a.saePooledDense(SAE_HOOK), b.saePooledDense(SAE_HOOK)];
    expect(tf.max(tf.abs(tf.sub(x, y))).dataSync()[0]).toBeLessThan(TOLERANCE);
    tf.dispose([x, y]);
  });

  it('asking for the ONNX executor where there is no ONNX form is an error, not a silent fallback', async () => {
    const noGraph = { ...sae, dIn: sae.dIn, dSae: sae.dSae, encode: (x: tf.Tensor) => sae.encode(x), decode: (f: tf.Tensor) => sae.decode(f) };
    await expect(createCollector(opened.model, { hooks: [SAE_HOOK], saes: { [SAE_HOOK]: noGraph }, perToken: false }, 'onnx')).rejects.toThrow(
      /an SAE of this cache has no ONNX form; use the tfjs executor/,
    );
    const fallback = await createCollector(opened.model, { hooks: [SAE_HOOK], saes: { [SAE_HOOK]: noGraph }, perToken: false });
    expect(fallback.executor).toBe('tfjs');
    await fallback.dispose();
  });
});
