import { describe, expect, it, beforeAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { loadSafetensorsTensors, readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { pythonBin, runPythonReference } from '../reference/python.js';

let ref: string;
beforeAll(async () => {
  await initEngine();
  ref = await runPythonReference('safetensors_reference.py');
});

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe('safetensors reader', () => {
  it('reads every dtype written by the reference library', () => {
    const f = readSafetensors(join(ref, 'all_dtypes.safetensors'));
    const expected = JSON.parse(readFileSync(join(ref, 'all_dtypes.json'), 'utf8')) as Record<string, { shape: number[]; values: number[] }>;
    expect(f.metadata).toEqual({ format: 'pt', note: 'hello' });
    for (const [name, e] of Object.entries(expected)) {
      const t = f.tensor(name);
      expect(t.shape, name).toEqual(e.shape);
      // F16/BF16 values were rounded by torch; our decode must be exact, so compare to the rounded values.
      expect(maxAbsDiff(t.dataSync(), e.values), name).toBeLessThan(name === 'f64' ? 1e-6 : 1e-7 * 10);
      t.dispose();
    }
    expect(f.info('bf16').dtype).toBe('BF16');
  });

  it('loads a sharded checkpoint through its index', () => {
    const t = loadSafetensorsTensors(join(ref, 'sharded'));
    const expected = JSON.parse(readFileSync(join(ref, 'sharded/expected.json'), 'utf8')) as Record<string, number[]>;
    expect(Object.keys(t).sort()).toEqual(['a.weight', 'b.bias']);
    for (const [k, v] of Object.entries(expected)) expect(maxAbsDiff(t[k]!.dataSync(), v)).toBeLessThan(1e-7);
    tf.dispose(Object.values(t));
  });
});

describe('safetensors writer', () => {
  it('writes files the reference library reads back exactly, in every dtype', () => {
    const dir = mkdtempSync(join(tmpdir(), 'st-'));
    const path = join(dir, 'out.safetensors');
    const values = Float32Array.from([1.5, -2.25, 3e-3, 65504, -0.0001, 7]);
    writeSafetensors(
      path,
      {
        f32: tf.tensor(values, [2, 3]),
        f16: { dtype: 'F16', shape: [6], data: values },
        bf16: { dtype: 'BF16', shape: [6], data: values },
        i32: tf.tensor([1, -2, 3], [3], 'int32'),
        i64: { dtype: 'I64', shape: [2], data: BigInt64Array.from([5n, -6n]) },
        u8: { dtype: 'U8', shape: [2], data: Uint8Array.from([0, 200]) },
        flag: tf.tensor([true, false], [2], 'bool'),
      },
      { who: 'sae-eraser' },
    );
    const out = JSON.parse(
      execFileSync(pythonBin(), [join('test/reference/safetensors_reference.py'), '--out', dir, '--check', path], { encoding: 'utf8' }),
    ) as Record<string, { dtype: string; shape: number[]; values: number[] }>;
    expect(out.f32!.shape).toEqual([2, 3]);
    expect(maxAbsDiff(out.f32!.values, values)).toBe(0);
    expect(out.f16!.dtype).toBe('torch.float16');
    expect(maxAbsDiff(out.f16!.values, values)).toBeLessThan((1e-3 * 65504) / 1000);
    expect(out.bf16!.dtype).toBe('torch.bfloat16');
    for (let i = 0; i < values.length; i++) expect(Math.abs(out.bf16!.values[i]! - values[i]!)).toBeLessThanOrEqual(Math.abs(values[i]!) / 128);
    expect(out.i32!.values).toEqual([1, -2, 3]);
    expect(out.i64!.values).toEqual([5, -6]);
    expect(out.u8!.values).toEqual([0, 200]);
    expect(out.flag!.dtype).toBe('torch.bool');
    // Our own reader round-trips F16 to the same rounded values the reference produced.
    const back = readSafetensors(path);
    expect(maxAbsDiff(back.float32('f16'), out.f16!.values)).toBe(0);
    expect(maxAbsDiff(back.float32('bf16'), out.bf16!.values)).toBe(0);
    expect(back.metadata).toEqual({ who: 'sae-eraser' });
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });
});

describe('safetensors bad input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'st-bad-'));
  const good = (): Buffer => {
    const p = join(dir, 'good.safetensors');
    writeSafetensors(p, {
      w: { dtype: 'F32', shape: [4], data: new Float32Array([1, 2, 3, 4]) },
      b: { dtype: 'F32', shape: [2], data: new Float32Array([5, 6]) },
    });
    return readFileSync(p);
  };
  const withHeader = (header: object): Buffer => {
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, Buffer.alloc(24)]);
  };

  it('names the file when it is truncated', () => {
    const p = join(dir, 'trunc.safetensors');
    const g = good();
    writeFileSync(p, g.subarray(0, g.length - 5));
    expect(() => readSafetensors(p)).toThrow(/trunc\.safetensors.*tensor "[wb]".*truncated file/);
    writeFileSync(p, g.subarray(0, 4));
    expect(() => readSafetensors(p)).toThrow(/trunc\.safetensors: truncated/);
  });

  it('names the tensor when the header lies about offsets', () => {
    const p = join(dir, 'lies.safetensors');
    writeFileSync(p, withHeader({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [3], data_offsets: [16, 24] } }));
    expect(() => readSafetensors(p)).toThrow(/lies\.safetensors: tensor "b": data_offsets \[16, 24\] hold 8 bytes but F32 \[3\] needs 12/);
    writeFileSync(p, withHeader({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }));
    expect(() => readSafetensors(p)).toThrow(/"w" and "b" overlap/);
    writeFileSync(p, withHeader({ w: { dtype: 'F32', shape: [16], data_offsets: [0, 64] } }));
    expect(() => readSafetensors(p)).toThrow(/tensor "w": data ends at byte 64/);
    writeFileSync(p, withHeader({ w: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }));
    expect(() => readSafetensors(p)).toThrow(/tensor "w": unsupported dtype "Q4"/);
  });

  it('rejects a header length larger than the file and non-JSON headers', () => {
    const p = join(dir, 'junk.safetensors');
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(1000n);
    writeFileSync(p, b);
    expect(() => readSafetensors(p)).toThrow(/junk\.safetensors: safetensors header length 1000 exceeds/);
    b.writeBigUInt64LE(8n);
    b.write('not json', 8);
    writeFileSync(p, b);
    expect(() => readSafetensors(p)).toThrow(/junk\.safetensors: safetensors header is not valid JSON/);
  });

  it('rejects a shard index that maps a tensor to the wrong shard', () => {
    const d = mkdtempSync(join(tmpdir(), 'st-shard-'));
    writeSafetensors(join(d, 's1.safetensors'), { x: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { y: 's1.safetensors' } }));
    expect(() => loadSafetensorsTensors(d)).toThrow(/tensor "y" is mapped to s1\.safetensors, which does not contain it/);
  });
});

describe('inputs found by fuzzing (test/fuzz/safetensors.test.ts), shrunk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'st-regress-'));
  /** A file from a header object and data bytes. */
  const fileFrom = (header: unknown, data: Uint8Array): Buffer => {
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, data]);
  };

  it('reads an empty tensor whose offsets point inside another tensor (it overlaps nothing)', () => {
    const path = join(dir, 'empty.safetensors');
    writeFileSync(
      path,
      fileFrom({ a: { dtype: 'F64', shape: [], data_offsets: [0, 8] }, b: { dtype: 'F64', shape: [0], data_offsets: [0, 0] } }, new Uint8Array(8)),
    );
    const f = readSafetensors(path);
    expect(f.bytes('b')).toEqual(new Uint8Array(0));
    expect(f.float64('a')).toEqual(new Float64Array([0]));
  });

  it('writes and reads back a tensor named "__proto__"', () => {
    const path = join(dir, 'proto.safetensors');
    writeSafetensors(
      path,
      JSON.parse('{"__proto__": {"dtype": "U8", "shape": [1], "data": null}}', (k, v) => (k === 'data' ? Uint8Array.from([9]) : v)),
    );
    expect(readSafetensors(path).names()).toEqual(['__proto__']);
    expect(readSafetensors(path).bytes('__proto__')).toEqual(Uint8Array.from([9]));
  });

  it('refuses a shard index that maps a tensor to a non-string or to a file outside the folder', () => {
    const sharded = join(dir, 'sharded');
    writeSafetensors(join(sharded, 'model-1.safetensors'), { w: { dtype: 'U8', shape: [1], data: Uint8Array.from([1]) } });
    const index = join(sharded, 'model.safetensors.index.json');
    writeFileSync(index, JSON.stringify({ weight_map: { w: 1 } }));
    expect(() => loadSafetensorsTensors(sharded)).toThrow(`${index}: "weight_map" maps tensor "w" to 1, not a file name`);
    writeFileSync(index, JSON.stringify({ weight_map: { w: '../model-1.safetensors' } }));
    expect(() => loadSafetensorsTensors(sharded)).toThrow(/outside the checkpoint folder/);
    writeFileSync(index, JSON.stringify({ weight_map: { w: '.' } }));
    expect(() => loadSafetensorsTensors(sharded)).toThrow(`${sharded}: not a safetensors file (a folder or special file)`);
    writeFileSync(index, JSON.stringify({ weight_map: [] }));
    expect(() => loadSafetensorsTensors(sharded)).toThrow(`${index}: missing "weight_map"`);
  });

  it('refuses __metadata__ that is not an object of strings', () => {
    const path = join(dir, 'meta.safetensors');
    writeFileSync(path, fileFrom({ __metadata__: { format: 1 } }, new Uint8Array(0)));
    expect(() => readSafetensors(path)).toThrow(`${path}: safetensors "__metadata__" must be an object of strings`);
  });

  it('refuses shape dimensions beyond 2^53 even with a zero dimension', () => {
    const path = join(dir, 'huge-dim.safetensors');
    writeFileSync(path, fileFrom({ w: { dtype: 'F32', shape: [0, 1e300], data_offsets: [0, 0] } }, new Uint8Array(0)));
    expect(() => readSafetensors(path)).toThrow(`${path}: tensor "w": invalid shape [0,1e+300]`);
  });
});
