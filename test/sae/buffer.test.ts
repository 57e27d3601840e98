/** Spilled activations (src/sae/buffer.ts, `spillActivations`): one pass to disk, read back shuffled. */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomNormalArray } from '../../src/data/prng.js';
import { arrayActivationSource, collectActivations, spillActivations, type ActivationSource } from '../../src/sae/buffer.js';

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
