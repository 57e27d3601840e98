import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { buildActivationCache, csrToDense, denseToCsr, type CacheSae, type CacheSpec } from '../../src/cache/cache.js';
import type { Batch, Model } from '../../src/models/model.js';
import { fakeModel, fakeSae, texts, tokenize } from './fixtures.js';

beforeAll(async () => {
  await initEngine();
});

function expectedPooled(model: Model, hook: string, text: string): Float32Array {
  return tf.tidy(() => {
    const b = tokenize([text]);
    return tf.mean(model.run(b, { capture: [hook] }).captures[hook]!, 1).dataSync() as Float32Array;
  });
}

describe('activation cache', () => {
  it('stores mean-pooled activations over real tokens, in dataset order', async () => {
    const model = fakeModel();
    const root = mkdtempSync(join(tmpdir(), 'cache-'));
    const spec: CacheSpec = { modelId: 'fake', hooks: ['layers.0.resid_out', 'embed'], tokenizerId: 't', texts };
    const cache = await buildActivationCache(spec, { model, tokenize, root, batchSize: 5, shardSize: 10 });
    expect(cache.n).toBe(texts.length);
    const pooled = cache.pooled('layers.0.resid_out').arraySync();
    for (const i of [0, 7, 22]) {
      const want = expectedPooled(model, 'layers.0.resid_out', texts[i]!);
      pooled[i]!.forEach((v, j) => expect(v).toBeCloseTo(want[j]!, 5));
    }
    expect(Array.from(cache.tokenCounts)).toEqual(texts.map((t) => t.length));
    expect(() => cache.pooled('layers.1.resid_out')).toThrow(/hook "layers.1.resid_out" is not cached/);
  });

  it('is reused on a second run without running the model', async () => {
    const model = fakeModel();
    const root = mkdtempSync(join(tmpdir(), 'cache-'));
    const spec: CacheSpec = { modelId: 'fake', hooks: ['embed'], tokenizerId: 't', texts };
    const first = await buildActivationCache(spec, { model, tokenize, root, batchSize: 8, shardSize: 8 });
    const calls = model.calls;
    const second = await buildActivationCache(spec, { model, tokenize, root, batchSize: 8, shardSize: 8 });
    expect(model.calls).toBe(calls);
    expect(second.key).toBe(first.key);
    expect(Array.from(second.pooled('embed').dataSync())).toEqual(Array.from(first.pooled('embed').dataSync()));
    // A changed text is a different cache.
    const other = await buildActivationCache({ ...spec, texts: [...texts.slice(1), 'zz'] }, { model, tokenize, root, batchSize: 8, shardSize: 8 });
    expect(other.key).not.toBe(first.key);
    expect(model.calls).toBeGreaterThan(calls);
  });

  it('resumes after an interrupted run and gives the same values', async () => {
    const root = mkdtempSync(join(tmpdir(), 'cache-'));
    const spec: CacheSpec = { modelId: 'fake', hooks: ['embed'], tokenizerId: 't', texts };
    const model = fakeModel();
    let batches = 0;
    const failing = (t: string[]): Batch => {
      if (++batches === 3) throw new Error('killed');
      return tokenize(t);
    };
    await expect(buildActivationCache(spec, { model, tokenize: failing, root, batchSize: 4, shardSize: 8 })).rejects.toThrow('killed');
    const dirs = (await import('node:fs')).readdirSync(root);
    expect(dirs).toHaveLength(1);
    const index = JSON.parse(readFileSync(join(root, dirs[0]!, 'index.json'), 'utf8')) as { complete: boolean; shards: unknown[] };
    expect(index.complete).toBe(false);
    expect(index.shards).toHaveLength(1);
    const before = model.calls;
    const resumed = await buildActivationCache(spec, { model, tokenize, root, batchSize: 4, shardSize: 8 });
    // Only the 15 examples after the finished shard are recomputed: 4 batches of at most 4.
    expect(model.calls - before).toBe(4);
    const fresh = await buildActivationCache(spec, { model, tokenize, root: mkdtempSync(join(tmpdir(), 'cache-')), batchSize: 4, shardSize: 8 });
    const a = resumed.pooled('embed').dataSync();
    const b = fresh.pooled('embed').dataSync();
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i]!, 6);
  });

  it('stores pooled SAE features and errors that reconstruct the pooled activation', async () => {
    const model = fakeModel();
    const sae = fakeSae();
    const root = mkdtempSync(join(tmpdir(), 'cache-'));
    const hook = 'layers.1.resid_out';
    const cache = await buildActivationCache(
      { modelId: 'fake', hooks: [hook], saes: { [hook]: { sae, id: 'sae-a' } }, tokenizerId: 't', texts },
      { model, tokenize, root, batchSize: 6, shardSize: 9 },
    );
    // decode is linear here, so decode(mean f) + mean error = mean x.
    const recon = tf.tidy(() => tf.add(sae.decode(cache.saePooledDense(hook)), cache.saeErrorPooled(hook)));
    const x = cache.pooled(hook);
    expect(tf.max(tf.abs(tf.sub(recon, x))).dataSync()[0]).toBeLessThan(1e-4);
    expect(cache.dSae(hook)).toBe(6);
    // Pooled codes are non-negative (ReLU) and some are exactly zero, so CSR holds fewer entries.
    const csr = cache.saePooledCsr(hook);
    expect(csr.values.every((v) => v > 0)).toBe(true);
  });

  it('rejects an SAE whose width does not match the hook and a hook the model lacks', async () => {
    const model = fakeModel();
    const root = mkdtempSync(join(tmpdir(), 'cache-'));
    const bad: CacheSae = { ...fakeSae(), dIn: 5 };
    await expect(
      buildActivationCache(
        { modelId: 'fake', hooks: ['embed'], saes: { embed: { sae: bad, id: 'wide' } }, tokenizerId: 't', texts },
        { model, tokenize, root },
      ),
    ).rejects.toThrow(/SAE wide has dIn 5 but hook "embed" of fake has width 4/);
    await expect(buildActivationCache({ modelId: 'fake', hooks: ['layers.9.resid_out'], tokenizerId: 't', texts }, { model, tokenize, root })).rejects.toThrow(
      /hook "layers.9.resid_out" does not exist/,
    );
    expect(existsSync(root)).toBe(true);
  });

  it('CSR conversion round-trips', () => {
    const dense = Float32Array.from([0, 1, 0, 2, 0, 0, 3, 0, 0]);
    const csr = denseToCsr(dense, 3, 3);
    expect(Array.from(csr.offsets)).toEqual([0, 1, 2, 3]);
    expect(Array.from(csrToDense(csr))).toEqual(Array.from(dense));
    expect(Array.from(csrToDense(csr, [2, 0]))).toEqual([3, 0, 0, 0, 1, 0]);
  });
});
