/**
 * Spilled activations (src/sae/buffer.ts, `spillActivations`): one pass to disk, read back shuffled;
 * and one pass of a model at several hooks (`modelHookSource`, `spillHookActivations`), one file per hook.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { openModel, type OpenedModel } from '../../src/models/open.js';
import {
  arrayActivationSource,
  collectActivations,
  modelActivationSource,
  modelHookSource,
  spillActivations,
  spillHookActivations,
  type ActivationSource,
} from '../../src/sae/buffer.js';
import { writeTinyBert } from '../cli/tiny-bert.js';

/** Opening a spill file fails once this many more have opened (Infinity: never). */
const failOpen = vi.hoisted(() => ({ after: Infinity }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return {
    ...fs,
    openSync: (...args: Parameters<typeof fs.openSync>): number => {
      if (String(args[0]).endsWith('rows.f32') && failOpen.after-- <= 0) throw new Error('test: cannot open the spill file');
      return fs.openSync(...args);
    },
  };
});

const D = 6;

/** Rows as sorted strings, to compare multisets of rows. */
function rowSet(rows: Float32Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < rows.length; i += D) out.push(Array.from(rows.subarray(i, i + D)).join(','));
  return out.sort();
}

async function pass(source: ActivationSource, epoch: number): Promise<Float32Array[]> {
  source.restart(epoch);
  const chunks: Float32Array[] = [];
  for (let c = await source.nextChunk(); c !== undefined; c = await source.nextChunk()) chunks.push(c);
  return chunks;
}

describe('spillActivations', () => {
  it('reads back every row of the pass, chunks in a new seeded order per epoch, and deletes its file', async () => {
    const rows = randomNormalArray(1000 * D, 3);
    const dir = mkdtempSync(join(tmpdir(), 'spill-'));
    const spilled = await spillActivations(arrayActivationSource(rows, D, { chunkTokens: 37, seed: 1 }), dir, 9);
    expect(spilled.tokens).toBe(1000);
    const first = await pass(spilled, 0);
    const again = await pass(spilled, 0);
    const second = await pass(spilled, 1);
    const flat = (chunks: Float32Array[]): Float32Array => Float32Array.from(chunks.flatMap((c) => Array.from(c)));
    expect(rowSet(flat(first))).toEqual(rowSet(rows));
    expect(rowSet(flat(second))).toEqual(rowSet(rows));
    expect(flat(again)).toEqual(flat(first));
    expect(flat(second)).not.toEqual(flat(first));
    // Resuming mid-pass gives the rest of that pass.
    spilled.seek(1, 5);
    expect(flat(await pass({ ...spilled, restart: () => {} }, 1))).toEqual(flat(second.slice(5)));
    expect(() => spilled.seek(0, 10_000)).toThrow(/cannot continue pass 0 at item 10000/);
    // collectActivations reads one pass and frees the source: the file is gone.
    expect(rowSet(await collectActivations(spilled, Number.MAX_SAFE_INTEGER))).toEqual(rowSet(rows));
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a source with no rows and leaves nothing behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spill-empty-'));
    const empty: ActivationSource = { dIn: D, restart: () => {}, nextChunk: () => Promise.resolve(undefined), position: () => 0, seek: () => {} };
    await expect(spillActivations(empty, dir)).rejects.toThrow(/yielded no rows/);
    expect(readdirSync(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
  });
});

describe('one model pass at several hooks', () => {
  let dir: string;
  let opened: OpenedModel;
  const texts = Array.from({ length: 21 }, (_, i) => `bio number ${i}: she works as a ${i % 2 === 0 ? 'nurse' : 'surgeon'} in town ${i * 7}.`);
  beforeAll(async () => {
    await initEngine();
    dir = mkdtempSync(join(tmpdir(), 'hook-spill-'));
    opened = await openModel(writeTinyBert(join(dir, 'model'), { d: 16, layers: 2, heads: 2, maxPositions: 32 }), { maxLength: 32 });
  });
  afterAll(() => {
    opened.model.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The model source with a count of the forward passes it makes (one tokenized batch each). */
  function counted(hooks: string[], executor: 'onnx' | 'tfjs'): { source: ReturnType<typeof modelHookSource>; passes: () => number } {
    let passes = 0;
    const tokenize = (t: string[]): ReturnType<OpenedModel['tokenize']> => {
      passes++;
      return opened.tokenize(t);
    };
    return { source: modelHookSource({ model: opened.model, tokenize, texts, hooks, docsPerBatch: 4, seed: 3, executor }), passes: () => passes };
  }

  it.each(['onnx', 'tfjs'] as const)('spills every hook from one pass, each file holding what a one-hook pass spills (%s)', async (executor) => {
    const hooks = ['layers.1.resid_out', 'embed', 'layers.0.mlp_out'];
    const { source, passes } = counted(hooks, executor);
    expect(source.hooks).toEqual(['embed', 'layers.0.mlp_out', 'layers.1.resid_out']);
    const spillDir = mkdtempSync(join(dir, 'spill-'));
    const files = await spillHookActivations(source, Object.fromEntries(hooks.map((h) => [h, { dir: spillDir, seed: 5 }])));
    // One forward pass per 4 documents, whatever the number of hooks.
    expect(passes()).toBe(Math.ceil(texts.length / 4));
    expect(readdirSync(spillDir)).toHaveLength(3);
    const tokens = files.embed!.tokens;
    expect(tokens).toBeGreaterThan(texts.length * 5);
    for (const hook of hooks) {
      expect(files[hook]!.tokens).toBe(tokens);
      const alone = await spillActivations(
        modelActivationSource({ model: opened.model, tokenize: opened.tokenize, texts, hook, docsPerBatch: 4, seed: 3, executor }),
        spillDir,
        5,
      );
      // The same tokens in the same chunks, read back in the same order: the same rows, bit for bit.
      const [got, want] = [await collectActivations(files[hook]!, Infinity), await collectActivations(alone, Infinity)];
      expect(got.length).toBe(tokens * 16);
      expect(got).toEqual(want);
    }
    // Reading a file back to its end disposed it: nothing is left.
    expect(readdirSync(spillDir)).toEqual([]);
    const again = await collectActivations(files.embed!, Infinity).catch((err: Error) => err);
    expect(again).toBeInstanceOf(Error);
  });

  it('stops the pass after maxTokens tokens, and refuses a hook the source does not capture', async () => {
    const { source, passes } = counted(['embed', 'layers.0.attn_out'], 'onnx');
    const spillDir = mkdtempSync(join(dir, 'spill-max-'));
    const files = await spillHookActivations(source, { 'layers.0.attn_out': { dir: spillDir } }, { maxTokens: 50 });
    expect(files['layers.0.attn_out']!.tokens).toBe(50);
    expect(passes()).toBeLessThan(Math.ceil(texts.length / 4));
    expect(Object.keys(files)).toEqual(['layers.0.attn_out']);
    await files['layers.0.attn_out']!.dispose();
    await expect(spillHookActivations(counted(['embed'], 'onnx').source, { 'layers.1.resid_out': { dir: spillDir } })).rejects.toThrow(
      /does not capture hook "layers\.1\.resid_out"/,
    );
    expect(() => modelHookSource({ model: opened.model, tokenize: opened.tokenize, texts, hooks: ['layers.9.resid_out'] })).toThrow(
      /unknown hook "layers\.9\.resid_out"/,
    );
    expect(readdirSync(spillDir)).toEqual([]);
  });

  it('leaves no folder behind when a spill file cannot be opened', async () => {
    const spillDir = mkdtempSync(join(dir, 'spill-open-'));
    failOpen.after = 1;
    try {
      const err = await spillHookActivations(counted(['embed', 'layers.0.mlp_out'], 'onnx').source, {
        embed: { dir: spillDir },
        'layers.0.mlp_out': { dir: spillDir },
      }).catch((e: Error) => e);
      expect(String(err)).toMatch(/cannot open the spill file/);
      // Both the opened file's folder and the folder of the one that failed to open are gone.
      expect(failOpen.after).toBe(-1);
      expect(readdirSync(spillDir)).toEqual([]);
    } finally {
      failOpen.after = Infinity;
    }
  });
});
