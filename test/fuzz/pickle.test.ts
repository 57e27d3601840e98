/**
 * Fuzzing the allow-list unpickler and the torch.save zip reader (src/io/pickle.ts): generated
 * values pickle and unpickle to themselves, generated state_dicts load tensor for tensor, and
 * mutated pickles and zips (byte edits, truncation, random opcode streams, deep nesting, huge
 * declared lengths and sizes) either load or fail with an error naming the file, never with an
 * engine error, a hang or an allocation the file cannot back.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTorchFile, loadTorchStateDict, PickledTensor, PySet, PyTuple, unpickle, type PyValue, type TorchDtype } from '../../src/io/pickle.js';
import { breathe, FuzzTally, fuzzParams } from './budget.js';
import { applyByteEdits, byteEdits, expectClear, fuzzDir } from './mutate.js';
import { pickle, torchZip, type PickleInput, type TensorSpec } from './torch-writer.js';

const tmp = fuzzDir('pickle');
const values = new FuzzTally('pickle: generated values');
const mutatedPickles = new FuzzTally('pickle: byte-mutated pickles');
const opcodeStreams = new FuzzTally('pickle: random opcode streams');
const hugeLengths = new FuzzTally('pickle: huge declared lengths');
const nesting = new FuzzTally('pickle: deep nesting');
const stateDicts = new FuzzTally('torch zip: generated state_dicts');
const mutatedZips = new FuzzTally('torch zip: byte-mutated archives');
const lyingTensors = new FuzzTally('torch zip: lying tensor metadata');
afterAll(() => {
  for (const t of [values, mutatedPickles, opcodeStreams, hugeLengths, nesting, stateDicts, mutatedZips, lyingTensors]) t.save();
  tmp.done();
});

/** A generated value and what the unpickler must return for it. */
interface Case {
  input: PickleInput;
  want: PyValue;
}

const safe = (n: bigint): number | bigint => (n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n);

const leaf: fc.Arbitrary<Case> = fc.oneof(
  fc.constantFrom<Case>({ input: null, want: null }, { input: true, want: true }, { input: false, want: false }),
  fc.integer().map((n): Case => ({ input: n, want: n })),
  fc.bigInt({ min: -(2n ** 100n), max: 2n ** 100n }).map((n): Case => ({ input: n, want: safe(n) })),
  fc.double().map((x): Case => ({ input: x, want: x })),
  fc.string({ unit: 'binary', maxLength: 20 }).map((s): Case => ({ input: s, want: s })),
  fc.uint8Array({ maxLength: 20 }).map((b): Case => ({ input: b, want: b })),
);

const { value: pyCase } = fc.letrec<{ value: Case }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('value'), { maxLength: 4 }).map((xs): Case => ({ input: xs.map((x) => x.input), want: xs.map((x) => x.want) })),
    fc
      .array(tie('value'), { maxLength: 4 })
      .map((xs): Case => ({ input: new PyTuple(xs.map((x) => x.input) as PyValue[]), want: new PyTuple(xs.map((x) => x.want)) })),
    fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 6 }), fc.integer()), tie('value')), { maxLength: 4 }).map((kvs): Case => {
      const input = new Map<PickleInput, PickleInput>();
      const want = new Map<PyValue, PyValue>();
      for (const [k, v] of kvs) {
        input.set(k, v.input);
        want.set(k, v.want);
      }
      return { input, want };
    }),
    fc.array(fc.tuple(fc.string({ maxLength: 6 }), tie('value')), { maxLength: 4 }).map((kvs): Case => {
      const ordered = new Map<string, PickleInput>();
      const want = new Map<PyValue, PyValue>();
      for (const [k, v] of kvs) {
        ordered.set(k, v.input);
        want.set(k, v.want);
      }
      return { input: { ordered }, want };
    }),
    fc.array(fc.integer(), { maxLength: 4 }).map((xs): Case => ({ input: new PySet(xs), want: new PySet(xs) })),
  ),
}));

/**
 * Touches everything a loaded value holds, tensors' data included, without recursion (a mutated
 * pickle can nest as deep as it is long) and without looping on self-references.
 */
function materialise(root: PyValue): void {
  const seen = new Set<object>();
  const todo: PyValue[] = [root];
  while (todo.length > 0) {
    const v = todo.pop()!;
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array || seen.has(v)) continue;
    seen.add(v);
    if (v instanceof PickledTensor) {
      if (['float32', 'float64', 'float16', 'bfloat16'].includes(v.dtype)) v.float32();
      else v.int64();
    } else if (Array.isArray(v)) for (const x of v) todo.push(x);
    else if (v instanceof PyTuple || v instanceof PySet) for (const x of v.items) todo.push(x);
    else if (v instanceof Map) for (const [k, x] of v) todo.push(k, x);
  }
}

describe('unpickler', () => {
  it('unpickles every generated value to exactly itself', async () => {
    await fc.assert(
      fc.asyncProperty(pyCase, async ({ input, want }) => {
        await breathe();
        const got = values.run(() => unpickle(pickle(input), { source: 'gen.pkl' }));
        if (!got.ok) throw got.error;
        expect(got.value).toStrictEqual(want);
      }),
      fuzzParams(150),
    );
  });

  it('loads or refuses byte-mutated pickles with an error naming the source', async () => {
    await fc.assert(
      fc.asyncProperty(pyCase, byteEdits(), async ({ input }, edits) => {
        await breathe();
        const bytes = applyByteEdits(pickle(input), edits);
        const got = mutatedPickles.run(() => materialise(unpickle(bytes, { source: 'mutated.pkl' })));
        if (!got.ok) expectClear(got.error, 'mutated.pkl');
      }),
      fuzzParams(300),
    );
  });

  /** Opcodes of protocols 0-5 (and a few bytes that are none), each followed by up to 9 argument bytes. */
  const OPCODES = Array.from(new TextEncoder().encode('(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])')).concat([
    0x80, 0x81, 0x82, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x00, 0xff,
  ]);
  const chunk = fc.tuple(fc.constantFrom(...OPCODES), fc.uint8Array({ maxLength: 9 }));

  it('loads or refuses random opcode streams', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(chunk, { maxLength: 40 }), async (chunks) => {
        await breathe();
        const parts: number[] = [0x80, 0x02];
        for (const [op, args] of chunks) parts.push(op, ...args);
        parts.push(0x2e);
        const got = opcodeStreams.run(() => materialise(unpickle(Uint8Array.from(parts), { source: 'ops.pkl' })));
        if (!got.ok) expectClear(got.error, 'ops.pkl');
      }),
      fuzzParams(400),
    );
  });

  it('refuses huge declared lengths without allocating them', async () => {
    // Opcodes followed by a length: [opcode, bytes of the length field].
    const LENGTH_OPS: readonly [number, number][] = [
      [0x58, 4], // BINUNICODE
      [0x42, 4], // BINBYTES
      [0x54, 4], // BINSTRING (signed)
      [0x8b, 4], // LONG4 (signed)
      [0x8d, 8], // BINUNICODE8
      [0x8e, 8], // BINBYTES8
      [0x96, 8], // BYTEARRAY8
      [0x95, 8], // FRAME
      [0x72, 4], // LONG_BINPUT
      [0x6a, 4], // LONG_BINGET
    ];
    const huge = fc.oneof(
      fc.constantFrom(0xffffffffn, 0x7fffffffn, 0x80000000n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...LENGTH_OPS), huge, fc.uint8Array({ maxLength: 32 }), async ([op, width], n, tail) => {
        await breathe();
        const len = new Uint8Array(width);
        for (let i = 0; i < width; i++) len[i] = Number((n >> BigInt(8 * i)) & 0xffn);
        const bytes = Uint8Array.from([0x80, 0x04, 0x4e, op, ...len, ...tail, 0x2e]);
        const got = hugeLengths.run(() => materialise(unpickle(bytes, { source: 'huge.pkl' })));
        if (!got.ok) expectClear(got.error, 'huge.pkl');
      }),
      fuzzParams(200),
    );
  });

  it('unpickles deep nesting without recursion', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 100_000 }), fc.constantFrom('list', 'tuple', 'marks'), async (depth, kind) => {
        await breathe();
        const parts: number[] = [0x80, 0x02];
        if (kind === 'list') {
          for (let i = 0; i < depth; i++) parts.push(0x5d, 0x28); // EMPTY_LIST, MARK
          parts.push(0x5d);
          for (let i = 0; i < depth; i++) parts.push(0x65); // APPENDS
        } else if (kind === 'tuple') {
          parts.push(0x4e);
          for (let i = 0; i < depth; i++) parts.push(0x85); // TUPLE1
        } else {
          for (let i = 0; i < depth; i++) parts.push(0x28); // MARK
          parts.push(0x4e);
          for (let i = 0; i < depth; i++) parts.push(0x74); // TUPLE
        }
        parts.push(0x2e);
        const got = nesting.run(() => unpickle(Uint8Array.from(parts), { source: 'deep.pkl' }));
        if (!got.ok) {
          expectClear(got.error, 'deep.pkl');
          return;
        }
        // Count the depth iteratively: every level holds exactly one inner value.
        let level = 0;
        let v: PyValue = got.value;
        for (;;) {
          const items = Array.isArray(v) ? v : v instanceof PyTuple ? v.items : undefined;
          if (items === undefined || items.length === 0) break;
          v = items[0]!;
          level++;
        }
        expect(level).toBe(depth);
      }),
      fuzzParams(20),
    );
  });
});

// ------------------------------------------------------------------------------------------------
// torch.save zips
// ------------------------------------------------------------------------------------------------

const DTYPES: readonly TorchDtype[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];
const SIZE: Record<TorchDtype, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 };
const isFloat = (d: TorchDtype): boolean => d.startsWith('float') || d === 'bfloat16';

/** A tensor view over a fresh storage: a shape, a permutation of its axes, a step per axis and an offset. */
const tensorSpec: fc.Arbitrary<TensorSpec> = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
    order: fc.nat(),
    steps: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 3, maxLength: 3 }),
    offset: fc.integer({ min: 0, max: 5 }),
    slack: fc.integer({ min: 0, max: 3 }),
    seed: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  })
  .map(({ dtype, shape, order, steps, offset, slack, seed }) => {
    const rank = shape.length;
    // Lay the axes out in a permuted order (a transposed view), each with a step (a strided view).
    const axes = Array.from({ length: rank }, (_, i) => i);
    for (let i = rank - 1; i > 0; i--) {
      const j = (order >> i) % (i + 1);
      [axes[i], axes[j]] = [axes[j]!, axes[i]!];
    }
    const stride = new Array<number>(rank).fill(0);
    let span = 1;
    for (let k = rank - 1; k >= 0; k--) {
      const ax = axes[k]!;
      stride[ax] = span * steps[k]!;
      span = stride[ax]! * Math.max(1, shape[ax]!);
    }
    const last = shape.some((d) => d === 0) ? -1 : shape.reduce((acc, d, i) => acc + (d - 1) * stride[i]!, 0);
    const numel = offset + last + 1 + slack;
    const storageBytes = new Uint8Array(numel * SIZE[dtype]);
    for (let i = 0; i < storageBytes.length; i++) storageBytes[i] = seed[i % seed.length]! ^ (i * 37);
    if (dtype === 'bool') for (let i = 0; i < storageBytes.length; i++) storageBytes[i]! &= 1;
    return { tensor: true as const, key: '', dtype, numel, storageBytes, offset, shape, stride };
  });

const stateDict = fc
  .uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 8 }), tensorSpec), { minLength: 1, maxLength: 4, selector: ([k]) => k })
  .map((kvs) => {
    const ordered = new Map<string, PickleInput>();
    kvs.forEach(([k, t], i) => ordered.set(k, { ...t, key: String(i) }));
    return ordered;
  });

/** The values of `spec` read the slow way: element by element from its storage, as int64 or float32 bits. */
function expectedValues(spec: TensorSpec): number[] | bigint[] {
  const view = new DataView(spec.storageBytes.buffer);
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const out: (number | bigint)[] = [];
  for (let flat = 0; flat < n; flat++) {
    let rest = flat;
    let at = spec.offset;
    for (let d = spec.shape.length - 1; d >= 0; d--) {
      at += (rest % spec.shape[d]!) * spec.stride[d]!;
      rest = Math.floor(rest / spec.shape[d]!);
    }
    const b = SIZE[spec.dtype] * at;
    switch (spec.dtype) {
      case 'float32':
        out.push(view.getFloat32(b, true));
        break;
      case 'float64':
        out.push(Math.fround(view.getFloat64(b, true)));
        break;
      case 'bfloat16':
        out.push(new Float32Array(new Uint32Array([view.getUint16(b, true) << 16]).buffer)[0]!);
        break;
      case 'float16':
        out.push(view.getUint16(b, true)); // compared through the contiguous read below
        break;
      case 'int64':
        out.push(view.getBigInt64(b, true));
        break;
      case 'int32':
        out.push(BigInt(view.getInt32(b, true)));
        break;
      case 'int16':
        out.push(BigInt(view.getInt16(b, true)));
        break;
      case 'int8':
        out.push(BigInt(view.getInt8(b)));
        break;
      default:
        out.push(BigInt(view.getUint8(b)));
    }
  }
  return out as number[] | bigint[];
}

describe('torch.save zip reader', () => {
  it('loads every generated state_dict tensor for tensor, stored or deflated', async () => {
    await fc.assert(
      fc.asyncProperty(stateDict, fc.constantFrom<0 | 6>(0, 6), async (dict, level) => {
        await breathe();
        const path = tmp.write('gen.pt', torchZip({ ordered: dict }, level));
        const got = stateDicts.run(() => loadTorchStateDict(path));
        if (!got.ok) throw got.error;
        expect([...got.value.keys()]).toEqual([...dict.keys()]);
        for (const [name, spec] of dict as Map<string, TensorSpec>) {
          const t = got.value.get(name)!;
          expect([t.dtype, t.shape, t.stride, t.storageOffset], name).toEqual([spec.dtype, spec.shape, spec.stride, spec.offset]);
          const want = expectedValues(spec);
          if (spec.dtype === 'float16') {
            // The element order must be the view's: compare against the whole storage read contiguously.
            const whole = new PickledTensor(t.storage, 0, [spec.numel], [1]).float32();
            const bits = new Uint16Array(spec.storageBytes.buffer);
            const byBits = new Map<number, number>();
            bits.forEach((b, i) => byBits.set(b, whole[i]!));
            expect(Array.from(t.float32()), name).toEqual((want as number[]).map((b) => byBits.get(b)));
          } else if (isFloat(spec.dtype)) expect(Array.from(t.float32()), name).toEqual(want);
          else expect(Array.from(t.int64()), name).toEqual(want);
        }
      }),
      fuzzParams(100),
    );
  });

  it('loads or refuses byte-mutated and truncated archives, naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(stateDict, fc.constantFrom<0 | 6>(0, 6), byteEdits(3), async (dict, level, edits) => {
        await breathe();
        const path = tmp.write('mutated.pt', applyByteEdits(torchZip({ ordered: dict }, level), edits));
        const got = mutatedZips.run(() => materialise(loadTorchFile(path)));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(300),
    );
  });

  it('refuses tensors whose sizes, strides, offsets or storage sizes lie, without allocating what they claim', async () => {
    const lie = fc.oneof(fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 40, 2 ** 53 - 1, 2 ** 53 + 2, 1e300, -1, 0), fc.integer({ min: -2, max: 2 ** 31 }));
    const field = fc.constantFrom('numel', 'offset', 'shape', 'stride', 'zero-stride');
    await fc.assert(
      fc.asyncProperty(tensorSpec, field, lie, async (spec, which, value) => {
        await breathe();
        const bad: TensorSpec = { ...spec, key: '0', shape: [...spec.shape], stride: [...spec.stride] };
        if (which === 'numel') bad.numel = value;
        else if (which === 'offset') bad.offset = value;
        else if (which === 'shape') bad.shape = [...bad.shape, value];
        else if (which === 'stride') bad.stride = bad.stride.length === 0 ? [value] : [value, ...bad.stride.slice(1)];
        else {
          // An expanded view: a long axis with stride 0 over a one-element storage.
          bad.shape = [Math.abs(value) % 2 ** 40];
          bad.stride = [0];
        }
        const path = tmp.write('lying.pt', torchZip({ ordered: new Map([['w', bad]]) }));
        const got = lyingTensors.run(() => materialise(loadTorchFile(path)));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(200),
    );
  });
});
