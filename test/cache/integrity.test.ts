/**
 * Faults 2 and 3: a cache with a missing, damaged or misplaced shard, or an unreadable index.
 * Building recomputes from the first bad shard (byte-identical to a fresh build); reading a damaged
 * cache fails naming the folder and the fix.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { ActivationCache, buildActivationCache, type CacheSpec } from '../../src/cache/cache.js';
import type { Batch } from '../../src/models/model.js';
import { cacheBytes, fakeModel, fakeSae, texts, tokenize } from './fixtures.js';

beforeAll(async () => {
  await initEngine();
});

const HOOK = 'layers.1.resid_out';
// 23 texts in shards of 6: rows 0-5, 6-11, 12-17, 18-22; two batches of at most 4 per shard.
const OPTS = { batchSize: 4, shardSize: 6 };
const BATCHES_PER_SHARD = 2;

interface IndexJson {
  complete: boolean;
  shards: { file: string; start: number; count: number; sha256: string }[];
}

function setup(): { spec: CacheSpec; model: ReturnType<typeof fakeModel>; root: string } {
  const spec: CacheSpec = { modelId: 'fake', hooks: ['embed', HOOK], saes: { [HOOK]: { sae: fakeSae(), id: 'sae' } }, tokenizerId: 't', texts };
  return { spec, model: fakeModel(), root: mkdtempSync(join(tmpdir(), 'cache-integrity-')) };
}

/** All of a cache's values, as bytes. */
const bytesOf = (cache: ActivationCache): Buffer => cacheBytes(cache, ['embed', HOOK], HOOK);

async function freshBytes(spec: CacheSpec): Promise<Buffer> {
  return bytesOf(await buildActivationCache(spec, { model: fakeModel(), tokenize, root: mkdtempSync(join(tmpdir(), 'cache-integrity-')), ...OPTS }));
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function readIndex(dir: string): IndexJson {
  return JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as IndexJson;
}

/** Flips one byte near the end of a file (in the tensor data), keeping its size. */
function corrupt(path: string): void {
  const bytes = readFileSync(path);
  bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 0x40;
  writeFileSync(path, bytes);
}

describe('activation cache integrity', () => {
  it('records each shard with its row range and checksum', async () => {
    const { spec, model, root } = setup();
    const cache = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    const index = readIndex(join(root, cache.key));
    expect(index.complete).toBe(true);
    expect(index.shards.map((s) => [s.file, s.start, s.count])).toEqual([
      ['shard-00000.safetensors', 0, 6],
      ['shard-00001.safetensors', 6, 6],
      ['shard-00002.safetensors', 12, 6],
      ['shard-00003.safetensors', 18, 5],
    ]);
    for (const s of index.shards) expect(s.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  for (const damage of ['deleted', 'corrupted'] as const) {
    it(`recomputes a complete cache from a ${damage} middle shard on, byte-identical to a fresh build`, async () => {
      const { spec, model, root } = setup();
      const built = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
      const dir = join(root, built.key);
      const shard = join(dir, 'shard-00001.safetensors');
      if (damage === 'deleted') rmSync(shard);
      else corrupt(shard);

      // Reading it fails, naming the folder, the shard and the fix.
      const problem = damage === 'deleted' ? 'is missing' : 'does not match its checksum';
      expect(() => ActivationCache.open(dir)).toThrow(
        new RegExp(`^${escape(dir)}: activation cache shard shard-00001.safetensors ${problem}.*delete the folder to rebuild`),
      );

      // Building it again recomputes shards 1, 2 and 3 and keeps shard 0.
      const calls = model.calls;
      const rebuilt = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
      expect(model.calls - calls).toBe(3 * BATCHES_PER_SHARD);
      expect(rebuilt.key).toBe(built.key);
      expect(bytesOf(rebuilt).equals(await freshBytes(spec))).toBe(true);
      expect(readIndex(dir).shards.map((s) => s.start)).toEqual([0, 6, 12, 18]);
      expect(bytesOf(ActivationCache.open(dir)).equals(bytesOf(rebuilt))).toBe(true);
    });
  }

  it('resumes an interrupted build from a missing middle shard, not from the rows the remaining shards hold', async () => {
    const { spec, model, root } = setup();
    let batches = 0;
    const failing = (t: string[]): Batch => {
      // Killed in the first batch of shard 3, after shards 0, 1 and 2 finished.
      if (++batches === 3 * BATCHES_PER_SHARD + 1) throw new Error('killed');
      return tokenize(t);
    };
    await expect(buildActivationCache(spec, { model, tokenize: failing, root, ...OPTS })).rejects.toThrow('killed');
    const [key] = readdirSync(root);
    const dir = join(root, key!);
    expect(readIndex(dir)).toMatchObject({ complete: false, shards: [{ start: 0 }, { start: 6 }, { start: 12 }] });
    rmSync(join(dir, 'shard-00001.safetensors'));

    const calls = model.calls;
    const resumed = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    expect(model.calls - calls).toBe(3 * BATCHES_PER_SHARD);
    expect(bytesOf(resumed).equals(await freshBytes(spec))).toBe(true);
  });

  it('recomputes from a shard whose row range in the index does not follow the one before', async () => {
    const { spec, model, root } = setup();
    const built = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    const dir = join(root, built.key);
    const index = readIndex(dir);
    index.shards[2]!.start = 13;
    writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
    expect(() => ActivationCache.open(dir)).toThrow(/shard-00002.safetensors starts at row 13 in the index, but the shards before it end at row 12/);
    const calls = model.calls;
    const rebuilt = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    expect(model.calls - calls).toBe(2 * BATCHES_PER_SHARD);
    expect(bytesOf(rebuilt).equals(await freshBytes(spec))).toBe(true);
  });

  it('reports an unreadable index when reading, and rebuilds the cache when building', async () => {
    const { spec, model, root } = setup();
    const built = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    const dir = join(root, built.key);
    const indexPath = join(dir, 'index.json');
    const text = readFileSync(indexPath, 'utf8');
    writeFileSync(indexPath, text.slice(0, text.length / 2));
    expect(() => ActivationCache.open(dir)).toThrow(
      new RegExp(`^${escape(indexPath)}: activation cache index is not valid JSON .*delete the folder to rebuild`),
    );

    const calls = model.calls;
    const rebuilt = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    expect(model.calls - calls).toBe(4 * BATCHES_PER_SHARD);
    expect(bytesOf(rebuilt).equals(bytesOf(built))).toBe(true);
    expect(readIndex(dir).complete).toBe(true);

    // An index of another version, or with fields missing, is named as such.
    writeFileSync(indexPath, JSON.stringify({ ...JSON.parse(text), version: 1 }));
    expect(() => ActivationCache.open(dir)).toThrow(
      /index.json: was written by another version of sae-eraser \(index version 1, expected 2\); delete the folder/,
    );
    writeFileSync(indexPath, JSON.stringify({ ...JSON.parse(text), shards: 'none' }));
    expect(() => ActivationCache.open(dir)).toThrow(/index.json: is not a valid activation cache index \(shards: .*\); delete the folder/);
    const again = await buildActivationCache(spec, { model, tokenize, root, ...OPTS });
    expect(bytesOf(again).equals(bytesOf(built))).toBe(true);
  });
});
