/**
 * Fault 1: a model's or SAE's weights overwritten in place must not reuse activations cached with
 * the old weights, while a rerun with nothing changed still reuses the cache.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { buildActivationCache, weightsId, type ActivationCache, type CacheSae, type CacheSpec } from '../../src/cache/cache.js';
import type { Model } from '../../src/models/model.js';
import { cacheBytes, loadFakeModel, loadFakeSae, texts, tick, tokenize, valuesOf, writeFakeModel, writeFakeSae } from './fixtures.js';

beforeAll(async () => {
  await initEngine();
});

const HOOK = 'layers.1.resid_out';

function build(model: Model, modelDir: string, sae: CacheSae, saeDir: string, root: string): Promise<ActivationCache> {
  const spec: CacheSpec = { modelId: weightsId(modelDir), hooks: [HOOK], saes: { [HOOK]: { sae, id: weightsId(saeDir) } }, tokenizerId: 't', texts };
  return buildActivationCache(spec, { model, tokenize, root, batchSize: 8, shardSize: 10 });
}

/** All of a cache's values, as bytes. */
const bytesOf = (cache: ActivationCache): Buffer => cacheBytes(cache, [HOOK], HOOK);

function freshRoot(): string {
  return mkdtempSync(join(tmpdir(), 'cache-weights-'));
}

/** A fresh folder with a fake model and SAE saved in it (seed 1), and where caches of them go. */
function savedModelAndSae(): { modelDir: string; saeDir: string; cacheRoot: string } {
  const root = freshRoot();
  const modelDir = join(root, 'model');
  const saeDir = join(root, 'sae');
  writeFakeModel(modelDir, 1);
  writeFakeSae(saeDir, 1);
  return { modelDir, saeDir, cacheRoot: join(root, 'caches') };
}

describe('weightsId', () => {
  it('is the same while nothing changes and ignores files that hold no weights or config', async () => {
    const dir = join(freshRoot(), 'model');
    writeFakeModel(dir, 1);
    const id = weightsId(dir);
    expect(id.startsWith(`${dir}#`)).toBe(true);
    expect(weightsId(dir)).toBe(id);
    writeFileSync(join(dir, 'README.md'), 'notes');
    writeFileSync(join(dir, '.model.safetensors.123.tmp'), 'a half-written temp file');
    mkdirSync(join(dir, 'runs'));
    expect(weightsId(dir)).toBe(id);
    await tick();
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'fake', d_model: 4, vocab_size: 51 }));
    expect(weightsId(dir)).not.toBe(id);
  });

  it('changes when a weights shard, a tokenizer file or a single-file SAE is overwritten in place', async () => {
    const dir = join(freshRoot(), 'sharded');
    mkdirSync(dir);
    for (const f of ['config.json', 'tokenizer.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'])
      writeFileSync(join(dir, f), `${f} v1`);
    const ids = [weightsId(dir)];
    await tick();
    writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), 'model-00002-of-00002.safetensors v2');
    ids.push(weightsId(dir));
    await tick();
    writeFileSync(join(dir, 'tokenizer.json'), 'tokenizer.json v2');
    ids.push(weightsId(dir));
    expect(new Set(ids).size).toBe(3);

    // A dictionary_learning ae.pt given as a file, and an SAELens weights file with its cfg.json beside it.
    const saeDir = join(freshRoot(), 'sae');
    mkdirSync(saeDir);
    const ae = join(saeDir, 'ae.pt');
    writeFileSync(ae, 'weights v1');
    const aeId = weightsId(ae);
    expect(weightsId(ae)).toBe(aeId);
    await tick();
    writeFileSync(ae, 'weights v2');
    expect(weightsId(ae)).not.toBe(aeId);
    const lensDir = join(freshRoot(), 'lens');
    writeFakeSae(lensDir, 1);
    const file = join(lensDir, 'sae_weights.safetensors');
    const fileIdBefore = weightsId(file);
    await tick();
    writeFileSync(join(lensDir, 'cfg.json'), JSON.stringify({ d_in: 4, d_sae: 6, normalize: true }));
    expect(weightsId(file)).not.toBe(fileIdBefore);
    expect(() => weightsId(join(saeDir, 'nope'))).toThrow(/nope: no such model or SAE file or folder/);
  });
});

describe('activation cache after weights change in place', () => {
  it('recomputes when the model weights file is overwritten, and reuses the cache when nothing changed', async () => {
    const { modelDir, saeDir, cacheRoot } = savedModelAndSae();
    const sae = loadFakeSae(saeDir);
    const model = loadFakeModel(modelDir);
    const first = await build(model, modelDir, sae, saeDir, cacheRoot);
    const index = JSON.parse(readFileSync(join(cacheRoot, first.key, 'index.json'), 'utf8')) as { modelId: string; saes: Record<string, { id: string }> };
    expect(index.modelId).toBe(weightsId(modelDir));
    expect(index.saes[HOOK]!.id).toBe(weightsId(saeDir));

    // A rerun with nothing changed reuses the cache without running the model.
    const calls = model.calls;
    const again = await build(model, modelDir, sae, saeDir, cacheRoot);
    expect(model.calls).toBe(calls);
    expect(again.key).toBe(first.key);

    // The same folder, new weights of the same size written over the old file.
    await tick();
    writeFakeModel(modelDir, 2);
    const changed = loadFakeModel(modelDir);
    const second = await build(changed, modelDir, sae, saeDir, cacheRoot);
    expect(second.key).not.toBe(first.key);
    expect(changed.calls).toBeGreaterThan(0);
    expect(bytesOf(second).equals(bytesOf(first))).toBe(false);
    const fresh = await build(loadFakeModel(modelDir), modelDir, sae, saeDir, freshRoot());
    expect(bytesOf(second).equals(bytesOf(fresh))).toBe(true);
    expect(readdirSync(cacheRoot).sort()).toEqual([first.key, second.key].sort());
  });

  it('recomputes when the SAE weights file is overwritten', async () => {
    const { modelDir, saeDir, cacheRoot } = savedModelAndSae();
    const model = loadFakeModel(modelDir);
    const first = await build(model, modelDir, loadFakeSae(saeDir), saeDir, cacheRoot);

    await tick();
    writeFakeSae(saeDir, 2);
    const calls = model.calls;
    const second = await build(model, modelDir, loadFakeSae(saeDir), saeDir, cacheRoot);
    expect(second.key).not.toBe(first.key);
    expect(model.calls).toBeGreaterThan(calls);
    expect(Buffer.from(valuesOf(second.pooled(HOOK)).buffer).equals(Buffer.from(valuesOf(first.pooled(HOOK)).buffer))).toBe(true);
    expect(bytesOf(second).equals(bytesOf(first))).toBe(false);
    const fresh = await build(loadFakeModel(modelDir), modelDir, loadFakeSae(saeDir), saeDir, freshRoot());
    expect(bytesOf(second).equals(bytesOf(fresh))).toBe(true);
  });

  it('rebuilds a cache whose index names another model or SAE than the spec', async () => {
    const { modelDir, saeDir, cacheRoot } = savedModelAndSae();
    const sae = loadFakeSae(saeDir);
    const model = loadFakeModel(modelDir);
    const first = await build(model, modelDir, sae, saeDir, cacheRoot);
    const indexPath = join(cacheRoot, first.key, 'index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { saes: Record<string, { id: string }> };
    index.saes[HOOK]!.id = 'some other SAE';
    writeFileSync(indexPath, JSON.stringify(index));
    const calls = model.calls;
    const second = await build(model, modelDir, sae, saeDir, cacheRoot);
    expect(model.calls).toBeGreaterThan(calls);
    expect(bytesOf(second).equals(bytesOf(first))).toBe(true);
    expect((JSON.parse(readFileSync(indexPath, 'utf8')) as typeof index).saes[HOOK]!.id).toBe(weightsId(saeDir));
  });
});
