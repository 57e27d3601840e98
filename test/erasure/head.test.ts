/**
 * The one head-retraining recipe: the biased probe's options, trained on the eraser's erased
 * training split; attached with `withHead`, which owns and frees both.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { createLeaceFitter, leaceOptionsSchema } from '../../src/erasure/closed-form.js';
import { erasedPooled } from '../../src/erasure/erased.js';
import { retrainHead, withHead } from '../../src/erasure/head.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { parseStrict } from '../../src/util/schema.js';
import { setQuiet } from '../../src/util/progress.js';
import { biasedProbe, plantedPooled, pooledContext } from './mask/mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

describe('retrainHead and withHead', () => {
  it('trains with the biased probe options on the erased training split, and withHead frees both', async () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 64, nConcept: 64 });
    const probe = biasedProbe(p.cache, p.train);
    const ctx = pooledContext(p, probe);
    const before = tf.memory().numTensors;
    const eraser = await createLeaceFitter(parseStrict(leaceOptionsSchema, { retrainHead: false }, 'leace options')).fit(ctx);
    const head = await retrainHead(eraser, ctx, { epochs: 3 });
    expect(head).toBeInstanceOf(LinearProbe);
    expect((head as LinearProbe).options).toMatchObject({ ...probe.options, epochs: 3, progressLabel: undefined });
    // The same probe trained by hand on the erased representations.
    const X = await erasedPooled(eraser, ctx.train, ctx);
    const manual = new LinearProbe(X.shape[1], 2, { ...probe.options, epochs: 3 });
    manual.fit(X, ctx.train.y);
    const [a, b] = [head, manual].map((h) => tf.tidy(() => Array.from(h.logits(X).dataSync())));
    expect(a).toEqual(b);
    manual.dispose();
    X.dispose();
    const headed = withHead(eraser, head);
    expect(headed.head).toBe(head);
    expect(() => withHead(headed, head)).toThrow(/already has a head/);
    headed.dispose();
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
  });

  it('leaks nothing when training the head fails', async () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 64, nConcept: 64 });
    const probe = biasedProbe(p.cache, p.train);
    const ctx = pooledContext(p, probe);
    const eraser = await createLeaceFitter(parseStrict(leaceOptionsSchema, { retrainHead: false }, 'leace options')).fit(ctx);
    const before = tf.memory().numTensors;
    const badLabels = { ...ctx, train: { ...ctx.train, y: ctx.train.y.map(() => 7) } };
    await expect(retrainHead(eraser, badLabels)).rejects.toThrow(/label/);
    expect(tf.memory().numTensors).toBe(before);
    eraser.dispose();
    probe.dispose();
  });
});
