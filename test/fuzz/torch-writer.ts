/**
 * A byte-level pickle writer and `torch.save` zip builder for the fuzz tests, so that they need no
 * Python: it writes the opcodes CPython's pickler (protocol 2, as torch.save uses) emits for the
 * values the allow-list unpickler reads, and lays a state_dict out as torch.save does
 * (`archive/data.pkl`, `archive/byteorder`, `archive/data/<key>`).
 */
import { zipSync } from 'fflate';
import { PyGlobal, PySet, PyTuple, type TorchDtype } from '../../src/io/pickle.js';

/** A value to pickle: the unpickler's plain values, plus storages and tensors to write by reference. */
export type PickleInput =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleInput[]
  | PyTuple
  | PySet
  | Map<PickleInput, PickleInput>
  | { ordered: Map<string, PickleInput> }
  | TensorSpec;

/** A tensor view to write: `storage` elements of `dtype` (raw little-endian bytes) viewed with offset, shape and stride. */
export interface TensorSpec {
  tensor: true;
  key: string;
  dtype: TorchDtype;
  numel: number;
  storageBytes: Uint8Array;
  offset: number;
  shape: number[];
  stride: number[];
}

const STORAGE_NAME: Record<TorchDtype, string> = {
  float32: 'FloatStorage',
  float64: 'DoubleStorage',
  float16: 'HalfStorage',
  bfloat16: 'BFloat16Storage',
  int64: 'LongStorage',
  int32: 'IntStorage',
  int16: 'ShortStorage',
  int8: 'CharStorage',
  uint8: 'ByteStorage',
  bool: 'BoolStorage',
};

class Out {
  private readonly bytes: number[] = [];
  op(...b: number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  u32(v: number): this {
    return this.op(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  line(s: string): this {
    return this.raw(new TextEncoder().encode(`${s}\n`));
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** Two's-complement little-endian bytes of `v`, as few as hold it (LONG1's payload). */
function longBytes(v: bigint): number[] {
  if (v === 0n) return [];
  const out: number[] = [];
  let x = v;
  for (;;) {
    out.push(Number(x & 0xffn));
    x >>= 8n;
    const sign = out[out.length - 1]! & 0x80;
    if ((x === 0n && sign === 0) || (x === -1n && sign !== 0)) return out;
  }
}

function writeValue(o: Out, v: PickleInput): void {
  if (v === null) o.op(0x4e);
  else if (v === true) o.op(0x88);
  else if (v === false) o.op(0x89);
  else if (typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v) && !Object.is(v, -0))) {
    const n = BigInt(v);
    if (n >= 0n && n < 256n) o.op(0x4b, Number(n));
    else if (n >= 0n && n < 65536n) o.op(0x4d, Number(n) & 0xff, Number(n) >> 8);
    else if (n >= -(2n ** 31n) && n < 2n ** 31n) o.op(0x4a).u32(Number(BigInt.asUintN(32, n)));
    else {
      const b = longBytes(n);
      o.op(0x8a, b.length, ...b);
    }
  } else if (typeof v === 'number') {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, false);
    o.op(0x47).raw(b);
  } else if (typeof v === 'string') {
    const b = new TextEncoder().encode(v);
    o.op(0x58).u32(b.length).raw(b);
  } else if (v instanceof Uint8Array) {
    // Protocol 2 has no bytes opcode: CPython writes _codecs.encode(latin1 text, 'latin1').
    o.op(0x63).line('_codecs').line('encode');
    const text = new TextEncoder().encode(Array.from(v, (c) => String.fromCharCode(c)).join(''));
    o.op(0x58).u32(text.length).raw(text);
    o.op(0x58).u32(6).raw(new TextEncoder().encode('latin1')).op(0x86, 0x52);
  } else if (Array.isArray(v)) {
    o.op(0x5d);
    if (v.length > 0) {
      o.op(0x28);
      for (const x of v) writeValue(o, x);
      o.op(0x65);
    }
  } else if (v instanceof PyTuple) {
    if (v.items.length === 0) o.op(0x29);
    else {
      o.op(0x28);
      for (const x of v.items) writeValue(o, x as PickleInput);
      o.op(0x74);
    }
  } else if (v instanceof PySet) {
    o.op(0x63).line('builtins').line('set');
    writeValue(o, v.items as PickleInput[]);
    o.op(0x85, 0x52);
  } else if (v instanceof Map) {
    o.op(0x7d);
    if (v.size > 0) {
      o.op(0x28);
      for (const [k, x] of v) {
        writeValue(o, k);
        writeValue(o, x);
      }
      o.op(0x75);
    }
  } else if (v instanceof PyGlobal) {
    o.op(0x63).line(v.module).line(v.name);
  } else if ('ordered' in v) {
    o.op(0x63).line('collections').line('OrderedDict').op(0x29, 0x52);
    if (v.ordered.size > 0) {
      o.op(0x28);
      for (const [k, x] of v.ordered) {
        writeValue(o, k);
        writeValue(o, x);
      }
      o.op(0x75);
    }
  } else {
    // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)
    o.op(0x63).line('torch._utils').line('_rebuild_tensor_v2');
    o.op(0x28);
    o.op(0x28);
    writeValue(o, 'storage');
    o.op(0x63).line('torch').line(STORAGE_NAME[v.dtype]);
    writeValue(o, v.key);
    writeValue(o, 'cpu');
    writeValue(o, v.numel);
    o.op(0x74, 0x51); // TUPLE, BINPERSID
    writeValue(o, v.offset);
    writeValue(o, new PyTuple(v.shape));
    writeValue(o, new PyTuple(v.stride));
    writeValue(o, false);
    writeValue(o, { ordered: new Map() });
    o.op(0x74, 0x52); // TUPLE, REDUCE
  }
}

/** The protocol-2 pickle of `value`. */
export function pickle(value: PickleInput): Uint8Array {
  const o = new Out().op(0x80, 0x02);
  writeValue(o, value);
  return o.op(0x2e).done();
}

/** Every tensor spec inside `value`. */
function tensorsOf(value: PickleInput, out: TensorSpec[] = []): TensorSpec[] {
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return out;
  if (Array.isArray(value)) value.forEach((x) => tensorsOf(x, out));
  else if (value instanceof PyTuple || value instanceof PySet) value.items.forEach((x) => tensorsOf(x as PickleInput, out));
  else if (value instanceof Map) for (const [k, x] of value) tensorsOf(k, tensorsOf(x, out));
  else if ('ordered' in value) for (const x of value.ordered.values()) tensorsOf(x, out);
  else if ('tensor' in value) out.push(value);
  return out;
}

/**
 * The bytes of a `torch.save(value)` zip: the pickle and one entry per storage key. `level` 0
 * stores entries (as torch does), above 0 deflates them.
 */
export function torchZip(value: PickleInput, level: 0 | 6 = 0): Uint8Array {
  const files: Record<string, Uint8Array> = { 'archive/data.pkl': pickle(value), 'archive/byteorder': new TextEncoder().encode('little') };
  for (const t of tensorsOf(value)) files[`archive/data/${t.key}`] = t.storageBytes;
  return zipSync(files, { level });
}
