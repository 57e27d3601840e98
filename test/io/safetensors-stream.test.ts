import { describe, expect, it } from 'vitest';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type RawTensor } from '../../src/io/safetensors.js';
import { SafetensorsStreamWriter, safetensorsLayout, type TensorPlan } from '../../src/io/safetensors-stream.js';

const fresh = (): string => mkdtempSync(join(tmpdir(), 'st-stream-'));

/** Tensors of several dtypes and shapes, with their values. */
function sample(): Record<string, RawTensor> {
  return {
    'layers.1.resid_out': { dtype: 'F32', shape: [5, 3, 2], data: Float32Array.from({ length: 30 }, (_, i) => Math.sin(i) * 1e3) },
    attention_mask: { dtype: 'I64', shape: [5, 3], data: BigInt64Array.from({ length: 15 }, (_, i) => BigInt(i % 3 < 2 ? 1 : 0)) },
    embed: { dtype: 'F32', shape: [5, 4], data: Float32Array.from({ length: 20 }, (_, i) => -i / 7) },
    ids: { dtype: 'I32', shape: [5], data: Int32Array.from([3, -1, 4, 1, -5]) },
    flags: { dtype: 'U8', shape: [5, 1], data: Uint8Array.from([1, 0, 1, 1, 0]) },
  };
}

const planOf = (tensors: Record<string, RawTensor>): Record<string, TensorPlan> =>
  Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape }]));

const temps = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.tmp'));

describe('SafetensorsStreamWriter', () => {
  it('writes, in row blocks and any tensor order, the bytes writeSafetensors writes at once', () => {
    const dir = fresh();
    const tensors = sample();
    const metadata = { model: '/models/x', pool: 'none', input: 'in.jsonl' };
    writeSafetensors(join(dir, 'whole.safetensors'), tensors, metadata);
    const writer = SafetensorsStreamWriter.create(join(dir, 'streamed.safetensors'), planOf(tensors), metadata);
    // Blocks of 2, 2 and 1 rows, tensors interleaved, in reverse name order.
    for (const [from, to] of [
      [0, 2],
      [2, 4],
      [4, 5],
    ] as const) {
      for (const name of Object.keys(tensors).sort().reverse()) {
        const t = tensors[name]!;
        const perRow = t.data.length / t.shape[0]!;
        writer.writeRows(name, from, t.data.subarray(from * perRow, to * perRow));
      }
    }
    writer.finish();
    const streamed = readFileSync(join(dir, 'streamed.safetensors'));
    expect(streamed.equals(readFileSync(join(dir, 'whole.safetensors')))).toBe(true);
    expect(writer.size).toBe(streamed.length);
    const f = readSafetensors(join(dir, 'streamed.safetensors'));
    expect(f.metadata).toEqual(metadata);
    expect(Array.from(f.float32('embed'))).toEqual(Array.from(tensors.embed!.data as Float32Array));
    expect(temps(dir)).toEqual([]);
  });

  it('refuses rows out of order, partial rows, the wrong element size and unknown tensors', () => {
    const dir = fresh();
    const w = SafetensorsStreamWriter.create(join(dir, 'x.safetensors'), { a: { dtype: 'F32', shape: [4, 3] }, m: { dtype: 'I64', shape: [4, 2] } });
    expect(() => w.writeRows('a', 1, new Float32Array(3))).toThrow(/tensor "a": rows must be written in order; expected row 0, got 1/);
    expect(() => w.writeRows('a', 0, new Float32Array(4))).toThrow(/tensor "a": 16 bytes from row 0 are not whole rows of 12 bytes within its 4 rows/);
    expect(() => w.writeRows('a', 0, new Float32Array(15))).toThrow(/not whole rows of 12 bytes within its 4 rows/);
    expect(() => w.writeRows('m', 0, new Float32Array(2))).toThrow(/tensor "m" is I64, but a Float32Array was given/);
    expect(() => w.writeRows('b', 0, new Float32Array(3))).toThrow(/no tensor "b" was declared/);
    w.abort();
    expect(temps(dir)).toEqual([]);
    expect(existsSync(join(dir, 'x.safetensors'))).toBe(false);
  });

  it('refuses to finish a file with rows never written, and leaves the previous file in place', () => {
    const dir = fresh();
    const path = join(dir, 'out.safetensors');
    writeFileSync(path, 'previous');
    const w = SafetensorsStreamWriter.create(path, { a: { dtype: 'F32', shape: [3, 2] }, b: { dtype: 'F32', shape: [3] } });
    w.writeRows('a', 0, new Float32Array(6));
    w.writeRows('b', 0, new Float32Array(2));
    expect(() => w.finish()).toThrow(/out\.safetensors: tensor "b" got 2 of its 3 rows; the file was not written/);
    expect(readFileSync(path, 'utf8')).toBe('previous');
    expect(temps(dir)).toEqual([]);
  });

  it('lays out and writes tensors past 2^32 elements and 4 GiB at exact offsets (a sparse file)', () => {
    const dir = fresh();
    const path = join(dir, 'huge.safetensors');
    // "a" is 2^31 rows of 3 floats (24 GiB, 3 * 2^31 elements); "b" comes after it in name order.
    const plan: Record<string, TensorPlan> = { a: { dtype: 'F32', shape: [2 ** 31, 3] }, b: { dtype: 'F32', shape: [2, 2] } };
    const layout = safetensorsLayout(plan);
    const header = JSON.parse(Buffer.from(layout.header.subarray(8)).toString('utf8')) as Record<string, { data_offsets: number[] }>;
    expect(header.a!.data_offsets).toEqual([0, 3 * 2 ** 33]);
    expect(header.b!.data_offsets).toEqual([3 * 2 ** 33, 3 * 2 ** 33 + 16]);
    expect(layout.places.get('b')!.start).toBe(layout.header.byteLength + 3 * 2 ** 33);
    expect(layout.size).toBe(layout.header.byteLength + 3 * 2 ** 33 + 16);
    // Write "b" only: its bytes land past 24 GiB in the (sparse) temp file; then abort.
    const w = SafetensorsStreamWriter.create(path, plan);
    w.writeRows('b', 0, Float32Array.from([1.5, -2, 3, 4]));
    const [tmp] = temps(dir);
    const tmpPath = join(dir, tmp!);
    expect(statSync(tmpPath).size).toBe(layout.size);
    const back = new Float32Array(4);
    const fd = openSync(tmpPath, 'r');
    try {
      readSync(fd, new Uint8Array(back.buffer), 0, 16, layout.places.get('b')!.start);
    } finally {
      closeSync(fd);
    }
    expect(Array.from(back)).toEqual([1.5, -2, 3, 4]);
    expect(() => w.finish()).toThrow(/tensor "a" got 0 of its 2147483648 rows/);
    expect(temps(dir)).toEqual([]);
  });

  it('names a bad dtype or shape before creating anything', () => {
    const dir = fresh();
    expect(() => SafetensorsStreamWriter.create(join(dir, 'x.safetensors'), { a: { dtype: 'F32', shape: [] } })).toThrow(
      /tensor "a" has shape \[\]; expected one or more non-negative integer dimensions/,
    );
    expect(() => safetensorsLayout({ a: { dtype: 'F8' as 'F32', shape: [1] } })).toThrow(/tensor "a" has unknown dtype "F8"/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
