/**
 * Fuzzing the safetensors reader (src/io/safetensors.ts): generated tensors written and read back
 * are byte-exact; mutated files (byte edits, truncation, header-JSON edits, huge declared lengths,
 * shapes and offsets, lying shard indexes) either read to consistent tensors or fail with an error
 * naming the file, without an engine error or an allocation the file cannot back.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { initEngine, tf } from '../../src/engine/engine.js';
import { openCheckpoint, readSafetensors, writeSafetensors, type RawTensor, type SafetensorsDtype, type SafetensorsFile } from '../../src/io/safetensors.js';
import { breathe, FuzzTally, fuzzParams } from './budget.js';
import { applyByteEdits, applyJsonEdits, byteEdits, expectClear, fuzzDir, jsonEdits } from './mutate.js';

const tmp = fuzzDir('safetensors');
const roundTrips = new FuzzTally('safetensors: generated files');
const mutatedBytes = new FuzzTally('safetensors: byte-mutated files');
const mutatedHeaders = new FuzzTally('safetensors: header JSON edits');
const hugeSizes = new FuzzTally('safetensors: huge declared sizes');
const indexes = new FuzzTally('safetensors: shard index edits');
beforeAll(async () => {
  await initEngine();
});
afterAll(() => {
  for (const t of [roundTrips, mutatedBytes, mutatedHeaders, hugeSizes, indexes]) t.save();
  tmp.done();
});

const DTYPES: readonly SafetensorsDtype[] = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'];
const SIZE: Record<SafetensorsDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** `bytes` as the typed array the writer takes for `dtype` (F16 and BF16 as raw 16-bit words, which it writes unchanged). */
function typedView(dtype: SafetensorsDtype, bytes: Uint8Array): RawTensor['data'] {
  const b = bytes.buffer;
  switch (dtype) {
    case 'F64':
      return new Float64Array(b);
    case 'F32':
      return new Float32Array(b);
    case 'F16':
    case 'BF16':
      return new Uint16Array(b);
    case 'I64':
      return new BigInt64Array(b);
    case 'I32':
      return new Int32Array(b);
    case 'I16':
      return new Int16Array(b);
    case 'I8':
      return new Int8Array(b);
    default:
      return bytes;
  }
}

/** A tensor as raw bytes of its dtype (any bit pattern: NaNs, infinities, subnormals included). */
const rawTensor: fc.Arbitrary<RawTensor & { bytes: Uint8Array }> = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
    seed: fc.uint8Array({ minLength: 1, maxLength: 32 }),
  })
  .map(({ dtype, shape, seed }) => {
    const count = shape.reduce((a, b) => a * b, 1);
    const bytes = new Uint8Array(count * SIZE[dtype]);
    for (let i = 0; i < bytes.length; i++) bytes[i] = seed[i % seed.length]! ^ ((i * 101) & 0xff);
    if (dtype === 'BOOL') for (let i = 0; i < bytes.length; i++) bytes[i]! &= 1;
    const data = typedView(dtype, bytes);
    return { dtype, shape, data, bytes };
  });

/** Tensor names the writer sorts; any string but the reserved `__metadata__`. */
const tensorName = fc.string({ minLength: 1, maxLength: 10 }).filter((n) => n !== '__metadata__');
const tensorSet = fc.dictionary(tensorName, rawTensor, { minKeys: 1, maxKeys: 5 });
const metadata = fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 12 }), { maxKeys: 3 }), { nil: undefined });

/** Reads every tensor of an opened file every way the reader offers, checking sizes agree with shapes. */
function readAll(f: SafetensorsFile): void {
  for (const name of f.names()) {
    const { dtype, shape, dataOffsets } = f.info(name);
    const count = shape.reduce((a, b) => a * b, 1);
    const bytes = f.bytes(name);
    if (bytes.length !== count * SIZE[dtype] || dataOffsets[1] - dataOffsets[0] !== bytes.length) {
      throw new Error(`accepted tensor "${name}" whose ${bytes.length} bytes do not match ${dtype} ${JSON.stringify(shape)}`);
    }
    if (dtype.startsWith('F') || dtype === 'BF16') f.float64(name);
    else f.int32(name);
    tf.dispose(f.tensor(name));
  }
}

/** A safetensors file from a header object and a data buffer (the header JSON written as given). */
function fileFrom(header: unknown, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** The header object and data buffer of a safetensors file. */
function split(bytes: Uint8Array): { header: unknown; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as unknown, data: bytes.subarray(8 + n) };
}

function written(tensors: Record<string, RawTensor>, meta?: Record<string, string>): Uint8Array {
  const path = tmp.path('written.safetensors');
  writeSafetensors(path, tensors, meta);
  return new Uint8Array(readFileSync(path));
}

describe('safetensors reader', () => {
  it('reads every generated file back byte for byte, metadata included', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSet, metadata, async (tensors, meta) => {
        await breathe();
        const path = tmp.path('gen.safetensors');
        writeSafetensors(path, tensors, meta);
        const got = roundTrips.run(() => readSafetensors(path));
        if (!got.ok) throw got.error;
        const f = got.value;
        expect(f.names().sort()).toEqual(Object.keys(tensors).sort());
        expect(f.metadata).toEqual(meta ?? {});
        for (const [name, t] of Object.entries(tensors)) {
          expect(f.info(name).dtype, name).toBe(t.dtype);
          expect(f.info(name).shape, name).toEqual(t.shape);
          expect(f.bytes(name), name).toEqual(t.bytes);
        }
      }),
      fuzzParams(150),
    );
  });

  it('reads a header with its entries reordered, its offsets permuted and trailing spaces to the same tensors', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSet, fc.nat(), fc.integer({ min: 0, max: 64 }), async (tensors, order, pad) => {
        await breathe();
        // Lay the tensors out in a shuffled order in the data buffer, with the header's keys shuffled the other way.
        const names = Object.keys(tensors);
        const perm = [...names];
        for (let i = perm.length - 1; i > 0; i--) {
          const j = (order >> i) % (i + 1);
          [perm[i], perm[j]] = [perm[j]!, perm[i]!];
        }
        const header = Object.create(null) as Record<string, unknown>;
        const chunks: Uint8Array[] = [];
        let offset = 0;
        for (const name of perm) {
          const t = tensors[name]!;
          chunks.push(t.bytes);
          header[name] = { data_offsets: [offset, offset + t.bytes.length], shape: t.shape, dtype: t.dtype };
          offset += t.bytes.length;
        }
        const reversed = Object.fromEntries(Object.entries(header).reverse());
        const json = new TextEncoder().encode(JSON.stringify(reversed) + ' '.repeat(pad));
        const data = new Uint8Array(offset);
        let at = 0;
        for (const c of chunks) {
          data.set(c, at);
          at += c.length;
        }
        const file = new Uint8Array(8 + json.length + data.length);
        new DataView(file.buffer).setBigUint64(0, BigInt(json.length), true);
        file.set(json, 8);
        file.set(data, 8 + json.length);
        const path = tmp.write('permuted.safetensors', file);
        const got = roundTrips.run(() => readSafetensors(path));
        if (!got.ok) throw got.error;
        for (const name of names) expect(got.value.bytes(name), name).toEqual(tensors[name]!.bytes);
      }),
      fuzzParams(100),
    );
  });

  it('reads or refuses byte-mutated and truncated files, naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSet, metadata, byteEdits(), async (tensors, meta, edits) => {
        await breathe();
        const path = tmp.write('mutated.safetensors', applyByteEdits(written(tensors, meta), edits));
        const got = mutatedBytes.run(() => readAll(readSafetensors(path)));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(300),
    );
  });

  it('reads or refuses header JSON edits (deleted fields, swapped types, boundary values), naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSet, metadata, jsonEdits(), async (tensors, meta, edits) => {
        await breathe();
        const { header, data } = split(written(tensors, meta));
        const path = tmp.write('header.safetensors', fileFrom(applyJsonEdits(header, edits), data));
        const got = mutatedHeaders.run(() => readAll(readSafetensors(path)));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(400),
    );
  });

  it('refuses huge declared header lengths, shapes and offsets without allocating them', async () => {
    const huge = fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 40, 2 ** 53 - 1, 2 ** 53, 2 ** 64, 1e300);
    await fc.assert(
      fc.asyncProperty(rawTensor, huge, fc.constantFrom('header length', 'shape', 'end offset', 'both offsets', 'zero dim'), async (t, n, where) => {
        await breathe();
        const good = { w: { dtype: t.dtype, shape: t.shape, data_offsets: [0, t.bytes.length] } };
        let file: Uint8Array;
        if (where === 'header length') {
          file = fileFrom(good, t.bytes);
          new DataView(file.buffer).setBigUint64(0, BigInt(Math.min(n, 2 ** 64 - 1)) & 0xffffffffffffffffn, true);
        } else if (where === 'shape') file = fileFrom({ w: { ...good.w, shape: [n, n] } }, t.bytes);
        else if (where === 'end offset') file = fileFrom({ w: { ...good.w, data_offsets: [0, n] } }, t.bytes);
        else if (where === 'both offsets') file = fileFrom({ w: { ...good.w, data_offsets: [n, n + t.bytes.length] } }, t.bytes);
        else file = fileFrom({ w: { ...good.w, shape: [0, n], data_offsets: [0, 0] } }, t.bytes);
        const path = tmp.write('huge.safetensors', file);
        const got = hugeSizes.run(() => readAll(readSafetensors(path)));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(100),
    );
  });

  it('opens or refuses sharded checkpoints whose index is edited, naming the index or the shard', async () => {
    await fc.assert(
      fc.asyncProperty(tensorSet, jsonEdits(), async (tensors, edits) => {
        await breathe();
        const dir = tmp.path('sharded');
        rmSync(dir, { recursive: true, force: true });
        const names = Object.keys(tensors);
        const half = Math.ceil(names.length / 2);
        const shards = [names.slice(0, half), names.slice(half)];
        const weightMap: Record<string, string> = {};
        shards.forEach((shard, i) => {
          const file = `model-0000${i + 1}-of-00002.safetensors`;
          tmp.write(`sharded/${file}`, written(Object.fromEntries(shard.map((n) => [n, tensors[n]!]))));
          for (const n of shard) weightMap[n] = file;
        });
        const index = applyJsonEdits({ metadata: { total_size: 0 }, weight_map: weightMap }, edits);
        tmp.write('sharded/model.safetensors.index.json', JSON.stringify(index));
        const got = indexes.run(() => {
          for (const [name, f] of openCheckpoint(dir)) if (!f.has(name)) throw new Error(`mapped "${name}" to a shard without it`);
        });
        if (!got.ok) expectClear(got.error, dir);
      }),
      fuzzParams(200),
    );
  });
});
