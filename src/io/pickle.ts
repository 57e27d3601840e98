/**
 * PyTorch `.pt` files (the zip format written by `torch.save` since PyTorch 1.6) read through an
 * allow-list unpickler.
 *
 * A `.pt` file is a zip archive `<name>/data.pkl` + `<name>/data/<key>` (one raw little-endian
 * storage per key) + `<name>/byteorder`. `data.pkl` is a Python pickle: a small stack-machine
 * program that may call any importable Python function through `GLOBAL`/`STACK_GLOBAL` + `REDUCE`,
 * which is how a malicious file runs `os.system`. This unpickler never calls anything: a global is
 * looked up in a closed allow-list the moment it is named, and anything else (os.system,
 * builtins.eval, posix.system, subprocess.*, ...) stops the load with an error naming the file and
 * the global. What the allow-list can build:
 *  - tensors: `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` over storages
 *    named by persistent ids `('storage', torch.<Type>Storage, key, location, numel)`, including
 *    non-contiguous views (strides, storage offsets, storages shared by several tensors);
 *  - `collections.OrderedDict`, and plain containers: dict, list, tuple, set, str, bytes, int,
 *    float, bool, None.
 * Storage dtypes: float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool.
 *
 * The zip reader here is a small random-access one (central directory, zip64, stored and deflated
 * entries), so a big archive is read entry by entry from disk, never whole into memory.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { inflateSync } from 'fflate';
import { f16ToF32 } from './safetensors.js';
import { pushAll } from '../util/arrays.js';

// ------------------------------------------------------------------------------------------------
// Zip
// ------------------------------------------------------------------------------------------------

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

/** Deflate's largest expansion: a 258-byte match costs at least 2 bits, about 1032:1. */
const MAX_DEFLATE_RATIO = 1032;

/** Reads `length` bytes at `position` of an open file, failing loudly on a short read. */
function readExactly(fd: number, path: string, length: number, position: number): Uint8Array {
  const out = new Uint8Array(length);
  let off = 0;
  while (off < length) {
    // readSync reads at most 2 GiB per call.
    const want = Math.min(length - off, 1 << 30);
    const got = readSync(fd, out, off, want, position + off);
    if (got === 0) throw new Error(`${path}: unexpected end of file at byte ${position + off} (truncated zip?)`);
    off += got;
  }
  return out;
}

/** A zip archive opened for random access; entries are read one at a time. */
export class ZipArchive {
  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly entries: ReadonlyMap<string, ZipEntry>,
    /** The file's size in bytes, which bounds every size the archive declares. */
    private readonly size: number,
  ) {}

  /** Opens a zip file and reads its central directory; throws a clear error for a non-zip file. */
  static open(path: string): ZipArchive {
    const fd = openSync(path, 'r');
    try {
      const entries = readCentralDirectory(fd, path);
      return new ZipArchive(path, fd, entries, fstatSync(fd).size);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  /**
   * The uncompressed bytes of one entry. Every size the archive declares is checked against the
   * file before anything is allocated: a stored entry must lie inside the file, and a deflated one
   * cannot expand more than deflate's maximum ratio, so a corrupt or hostile directory cannot make
   * this allocate gigabytes.
   */
  read(name: string): Uint8Array {
    const e = this.entries.get(name);
    if (e === undefined) throw new Error(`${this.path}: the zip has no entry "${name}"`);
    if (e.method !== 0 && e.method !== 8) {
      throw new Error(`${this.path}: entry "${name}" uses zip compression method ${e.method}; only stored (0) and deflate (8) are supported`);
    }
    if (e.localHeaderOffset + 30 > this.size) throw new Error(`${this.path}: entry "${name}" starts past the end of the file (corrupt or truncated zip)`);
    const local = readExactly(this.fd, this.path, 30, e.localHeaderOffset);
    const lv = new DataView(local.buffer);
    if (lv.getUint32(0, true) !== 0x04034b50) throw new Error(`${this.path}: entry "${name}" has a bad local header (corrupt zip)`);
    const dataStart = e.localHeaderOffset + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
    if (dataStart + e.compressedSize > this.size) {
      throw new Error(
        `${this.path}: entry "${name}" declares ${e.compressedSize} bytes at byte ${dataStart}, past the end of the file (${this.size} bytes; truncated zip?)`,
      );
    }
    if (e.method === 0 && e.size !== e.compressedSize) {
      throw new Error(`${this.path}: stored entry "${name}" declares ${e.size} bytes but holds ${e.compressedSize} (corrupt zip)`);
    }
    if (e.method === 8 && e.size > MAX_DEFLATE_RATIO * e.compressedSize + 64) {
      throw new Error(`${this.path}: entry "${name}" claims to inflate ${e.compressedSize} bytes to ${e.size}, more than deflate can (corrupt zip)`);
    }
    const raw = readExactly(this.fd, this.path, e.compressedSize, dataStart);
    if (e.method === 0) return raw;
    let out: Uint8Array;
    try {
      out = inflateSync(raw, { out: new Uint8Array(e.size) });
    } catch (err) {
      throw new Error(`${this.path}: entry "${name}" does not inflate (${(err as Error).message}; corrupt zip)`, { cause: err });
    }
    if (out.length !== e.size) throw new Error(`${this.path}: entry "${name}" inflated to ${out.length} bytes, expected ${e.size}`);
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }
}

function readCentralDirectory(fd: number, path: string): Map<string, ZipEntry> {
  const size = fstatSync(fd).size;
  if (size < 22) throw new Error(`${path}: not a zip archive (${size} bytes)`);
  const tailLen = Math.min(size, 65_557);
  const tail = readExactly(fd, path, tailLen, size - tailLen);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(`${path}: not a zip archive (no end-of-central-directory record)`);
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  // zip64: the locator sits just before the classic record.
  if (eocd >= 20 && tv.getUint32(eocd - 20, true) === 0x07064b50) {
    const z64Offset = Number(tv.getBigUint64(eocd - 20 + 8, true));
    if (z64Offset + 56 > size) throw new Error(`${path}: the zip64 end-of-central-directory record lies outside the file (truncated?)`);
    const z = new DataView(readExactly(fd, path, 56, z64Offset).buffer);
    if (z.getUint32(0, true) !== 0x06064b50) throw new Error(`${path}: bad zip64 end-of-central-directory record`);
    count = Number(z.getBigUint64(32, true));
    cdSize = Number(z.getBigUint64(40, true));
    cdOffset = Number(z.getBigUint64(48, true));
  }
  if (cdOffset + cdSize > size) throw new Error(`${path}: zip central directory lies outside the file (truncated?)`);
  const cd = readExactly(fd, path, cdSize, cdOffset);
  const v = new DataView(cd.buffer);
  const entries = new Map<string, ZipEntry>();
  const decoder = new TextDecoder();
  let p = 0;
  for (let n = 0; n < count; n++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== 0x02014b50) throw new Error(`${path}: corrupt zip central directory at entry ${n}`);
    const method = v.getUint16(p + 10, true);
    let compressedSize = v.getUint32(p + 20, true);
    let uncompressed = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) throw new Error(`${path}: corrupt zip central directory at entry ${n} (runs past its end)`);
    const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // zip64 extended information: present fields are those saturated at 0xFFFFFFFF, in this order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      const fieldEnd = e + 4 + len;
      if (fieldEnd > extraEnd) throw new Error(`${path}: corrupt zip extra field in entry "${name}"`);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (): number => {
          if (q + 8 > fieldEnd) throw new Error(`${path}: zip64 extra field of entry "${name}" is too short`);
          const value = Number(v.getBigUint64(q, true));
          q += 8;
          return value;
        };
        if (uncompressed === 0xffffffff) uncompressed = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
      e = fieldEnd;
    }
    entries.set(name, { name, method, compressedSize, size: uncompressed, localHeaderOffset });
    p = extraEnd + commentLen;
  }
  return entries;
}

// ------------------------------------------------------------------------------------------------
// Python values
// ------------------------------------------------------------------------------------------------

export type TorchDtype = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

const STORAGE_TYPES: Readonly<Record<string, TorchDtype>> = {
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

const DTYPE_BYTES: Readonly<Record<TorchDtype, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** A Python tuple (kept apart from lists so that the shape of the data is not lost). */
export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

/** A Python set or frozenset. */
export class PySet {
  constructor(readonly items: PyValue[]) {}
}

/** A reference to one of the allow-listed Python globals (never a callable JS function). */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** One storage of the archive (`<name>/data/<key>`), read on first use. */
export class TorchStorage {
  private bytesCache: Uint8Array | undefined;
  constructor(
    readonly key: string,
    readonly dtype: TorchDtype,
    readonly numel: number,
    private readonly load: () => Uint8Array,
  ) {}

  bytes(): Uint8Array {
    if (this.bytesCache === undefined) {
      const b = this.load();
      const want = this.numel * DTYPE_BYTES[this.dtype];
      if (b.byteLength < want) throw new Error(`storage "${this.key}" has ${b.byteLength} bytes but ${this.numel} ${this.dtype} values need ${want}`);
      this.bytesCache = b;
    }
    return this.bytesCache;
  }
}

/** A tensor rebuilt from a pickle: a strided view into a storage. */
export class PickledTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}

  get dtype(): TorchDtype {
    return this.storage.dtype;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Storage element indices of the tensor's elements in row-major (C) order. */
  private elementIndices(): Int32Array | undefined {
    const n = this.size;
    const rank = this.shape.length;
    let contiguous = true;
    let expect = 1;
    for (let d = rank - 1; d >= 0; d--) {
      if (this.shape[d]! !== 1 && this.stride[d] !== expect) contiguous = false;
      expect *= this.shape[d]!;
    }
    if (contiguous) return undefined;
    const out = new Int32Array(n);
    const counter = new Array<number>(rank).fill(0);
    let pos = this.storageOffset;
    for (let i = 0; i < n; i++) {
      out[i] = pos;
      for (let d = rank - 1; d >= 0; d--) {
        counter[d]!++;
        pos += this.stride[d]!;
        if (counter[d]! < this.shape[d]!) break;
        pos -= this.stride[d]! * this.shape[d]!;
        counter[d] = 0;
      }
    }
    return out;
  }

  /** The values as float32 in row-major order (float16/bfloat16/float64 converted exactly or rounded). */
  float32(): Float32Array {
    const { dtype } = this;
    if (dtype !== 'float32' && dtype !== 'float64' && dtype !== 'float16' && dtype !== 'bfloat16') {
      throw new Error(`tensor has dtype ${dtype}, expected a floating-point dtype`);
    }
    const bytes = this.storage.bytes();
    const n = this.size;
    // An empty view may carry any offset; there is nothing to read at it.
    if (n === 0) return new Float32Array(0);
    const idx = this.elementIndices();
    const at = (i: number): number => (idx === undefined ? this.storageOffset + i : idx[i]!);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (dtype === 'float32' && idx === undefined && (bytes.byteOffset + 4 * this.storageOffset) % 4 === 0) {
      return new Float32Array(bytes.buffer, bytes.byteOffset + 4 * this.storageOffset, n).slice();
    }
    const out = new Float32Array(n);
    if (dtype === 'float32') for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * at(i), true);
    else if (dtype === 'float64') for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * at(i), true);
    else if (dtype === 'float16') for (let i = 0; i < n; i++) out[i] = f16ToF32(view.getUint16(2 * at(i), true));
    else {
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u32[i] = view.getUint16(2 * at(i), true) << 16;
    }
    return out;
  }

  /** The values of an integer or bool tensor as int64 in row-major order. */
  int64(): BigInt64Array {
    const { dtype } = this;
    const bytes = this.storage.bytes();
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = this.size;
    const idx = this.elementIndices();
    const at = (i: number): number => (idx === undefined ? this.storageOffset + i : idx[i]!);
    const out = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const j = at(i);
      switch (dtype) {
        case 'int64':
          out[i] = view.getBigInt64(8 * j, true);
          break;
        case 'int32':
          out[i] = BigInt(view.getInt32(4 * j, true));
          break;
        case 'int16':
          out[i] = BigInt(view.getInt16(2 * j, true));
          break;
        case 'int8':
          out[i] = BigInt(view.getInt8(j));
          break;
        case 'uint8':
        case 'bool':
          out[i] = BigInt(view.getUint8(j));
          break;
        default:
          throw new Error(`tensor has dtype ${dtype}, expected an integer dtype`);
      }
    }
    return out;
  }
}

/** What the allow-list unpickler can produce. Dicts (and OrderedDicts) are Maps, in insertion order. */
export type PyValue =
  null | boolean | number | bigint | string | Uint8Array | PyValue[] | PyTuple | PySet | Map<PyValue, PyValue> | PyGlobal | TorchStorage | PickledTensor;

// ------------------------------------------------------------------------------------------------
// The allow-list
// ------------------------------------------------------------------------------------------------

/** Globals the unpickler accepts; every other global is refused the moment it is named. */
const ALLOWED_GLOBALS = new Set<string>([
  'collections.OrderedDict',
  // Protocol 2 spells bytes and sets as calls: _codecs.encode(str, 'latin1'), builtins.set(list).
  '_codecs.encode',
  'builtins.set',
  'builtins.frozenset',
  '__builtin__.set',
  '__builtin__.frozenset',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_TYPES).map((t) => `torch.${t}`),
]);

export class UnsafePickleError extends Error {
  constructor(
    readonly file: string,
    readonly global: string,
  ) {
    super(
      `${file}: refusing to unpickle the global "${global}": it is not on the allow-list (only tensors, ` +
        'collections.OrderedDict and plain containers can be loaded from a .pt file). The file may be ' +
        'malicious; nothing in it was executed.',
    );
    this.name = 'UnsafePickleError';
  }
}

// ------------------------------------------------------------------------------------------------
// The unpickler
// ------------------------------------------------------------------------------------------------

export interface UnpickleOptions {
  /** The file name shown in errors. */
  source: string;
  /** Resolves a persistent id (a torch storage reference); without it, persistent ids are refused. */
  persistentLoad?: (pid: PyValue) => PyValue;
}

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

class Reader {
  pos = 0;
  private readonly view: DataView;
  constructor(
    private readonly buf: Uint8Array,
    private readonly source: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    // A negative length (BINSTRING and LONG4 read signed ones) would move the reader backwards, forever.
    if (n < 0) throw new Error(`${this.source}: malformed pickle (negative length ${n} at offset ${this.pos})`);
    if (this.pos + n > this.buf.length) throw new Error(`${this.source}: truncated pickle (needed ${n} bytes at offset ${this.pos})`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${this.source}: pickle length ${v} is too large`);
    return Number(v);
  }
  f64be(): number {
    this.need(8);
    const v = this.view.getFloat64(this.pos, false);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.slice(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  /** `n` bytes of UTF-8 text. */
  utf8(n: number): string {
    const start = this.pos;
    const b = this.bytes(n);
    try {
      return utf8.decode(b);
    } catch (err) {
      throw new Error(`${this.source}: malformed pickle (invalid UTF-8 in the string at offset ${start})`, { cause: err });
    }
  }
  line(): string {
    const end = this.buf.indexOf(0x0a, this.pos);
    if (end < 0) throw new Error(`${this.source}: truncated pickle (unterminated text line at offset ${this.pos})`);
    const s = new TextDecoder('latin1').decode(this.buf.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Little-endian two's-complement bytes to a number (or bigint when not a safe integer). */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  // Through one hex string: shifting a bigint byte by byte is quadratic in the length.
  let hex = '';
  for (let i = b.length - 1; i >= 0; i--) hex += b[i]!.toString(16).padStart(2, '0');
  let v = BigInt(`0x${hex}`);
  if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** A protocol-0 float literal (Python's repr: digits, exponent, inf, nan); anything else is an error, not NaN. */
function parseTextFloat(s: string, source: string): number {
  const t = s.trim();
  if (/^[-+]?(inf|infinity)$/i.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
  if (/^[-+]?nan$/i.test(t)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(t)) throw new Error(`${source}: bad float literal "${s}" in pickle`);
  return Number(t);
}

function parseTextInt(s: string, source: string): number | bigint | boolean {
  const t = s.endsWith('L') ? s.slice(0, -1) : s;
  if (t === '00') return false;
  if (t === '01') return true;
  if (!/^[-+]?\d+$/.test(t)) throw new Error(`${source}: bad integer literal "${s}" in pickle`);
  const v = BigInt(t);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function asInt(v: PyValue, what: string, source: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  throw new Error(`${source}: ${what} must be an integer`);
}

function intTuple(v: PyValue, what: string, source: string): number[] {
  if (!(v instanceof PyTuple) && !Array.isArray(v)) throw new Error(`${source}: ${what} must be a tuple of integers`);
  const items = v instanceof PyTuple ? v.items : v;
  return items.map((x) => asInt(x, what, source));
}

function rebuildTensor(args: readonly PyValue[], source: string): PickledTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof TorchStorage)) throw new Error(`${source}: _rebuild_tensor called without a storage`);
  const shape = intTuple(size ?? null, 'tensor size', source);
  const strides = intTuple(stride ?? null, 'tensor stride', source);
  const off = asInt(offset ?? null, 'storage offset', source);
  if (shape.length !== strides.length) throw new Error(`${source}: tensor size ${JSON.stringify(shape)} and stride ${JSON.stringify(strides)} differ in rank`);
  if (shape.some((d) => d < 0) || strides.some((s) => s < 0) || off < 0) throw new Error(`${source}: negative tensor size, stride or offset`);
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel > storage.numel) {
    // Only overlapping strides (an expanded view) give a tensor more elements than its storage;
    // materialising one would allocate what the file never held.
    throw new Error(
      `${source}: a tensor view of size ${JSON.stringify(shape)} (stride ${JSON.stringify(strides)}) has ${numel} elements, more than its storage "${storage.key}" holds (${storage.numel}); expanded views are not supported`,
    );
  }
  if (numel > 0) {
    const last = off + shape.reduce((acc, d, i) => acc + (d - 1) * strides[i]!, 0);
    if (last >= storage.numel) {
      throw new Error(
        `${source}: a tensor view (offset ${off}, size ${JSON.stringify(shape)}, stride ${JSON.stringify(strides)}) reaches element ${last} of storage "${storage.key}", which has only ${storage.numel}`,
      );
    }
  }
  return new PickledTensor(storage, off, shape, strides);
}

/** Applies an allow-listed callable (REDUCE / NEWOBJ). Nothing else can be called. */
function callGlobal(fn: PyValue, args: readonly PyValue[], source: string): PyValue {
  if (!(fn instanceof PyGlobal)) throw new Error(`${source}: pickle calls a value that is not an allow-listed function`);
  switch (fn.qualifiedName) {
    case 'collections.OrderedDict': {
      const m = new Map<PyValue, PyValue>();
      const init = args[0];
      if (init instanceof Map) for (const [k, v] of init) m.set(k, v);
      else if (Array.isArray(init) || init instanceof PyTuple) {
        for (const pair of init instanceof PyTuple ? init.items : init) {
          const kv = pair instanceof PyTuple ? pair.items : Array.isArray(pair) ? pair : [];
          if (kv.length !== 2) throw new Error(`${source}: OrderedDict initialiser is not a sequence of pairs`);
          m.set(kv[0]!, kv[1]!);
        }
      }
      return m;
    }
    case '_codecs.encode': {
      const [text, encoding] = args;
      if (typeof text !== 'string' || (encoding !== 'latin1' && encoding !== 'latin-1'))
        throw new Error(`${source}: _codecs.encode is only accepted as (str, 'latin1') (pickled bytes)`);
      const out = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (c > 255) throw new Error(`${source}: _codecs.encode with a non-latin1 character`);
        out[i] = c;
      }
      return out;
    }
    case 'builtins.set':
    case 'builtins.frozenset':
    case '__builtin__.set':
    case '__builtin__.frozenset': {
      const init = args[0];
      if (init === undefined) return new PySet([]);
      if (Array.isArray(init)) return new PySet([...init]);
      if (init instanceof PyTuple) return new PySet([...init.items]);
      throw new Error(`${source}: set() initialiser is not a list or tuple`);
    }
    case 'torch._utils._rebuild_tensor_v2':
    case 'torch._utils._rebuild_tensor':
      return rebuildTensor(args, source);
    case 'torch._utils._rebuild_parameter': {
      const data = args[0];
      if (!(data instanceof PickledTensor)) throw new Error(`${source}: _rebuild_parameter called without a tensor`);
      return data;
    }
    default:
      throw new Error(`${source}: the global "${fn.qualifiedName}" cannot be called`);
  }
}

/**
 * Unpickles `data` (protocols 0-5) with the allow-list. Python dicts become Maps, tuples PyTuple,
 * lists arrays; integers are numbers (bigints beyond 2^53).
 */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PyValue {
  const { source } = options;
  const r = new Reader(data, source);
  let stack: StackItem[] = [];
  const metastack: StackItem[][] = [];
  const memo = new Map<number, PyValue>();

  const pop = (): PyValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw new Error(`${source}: malformed pickle (stack underflow at offset ${r.pos})`);
    return v;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw new Error(`${source}: malformed pickle (empty stack at offset ${r.pos})`);
    return v;
  };
  const popMark = (): PyValue[] => {
    const items = stack as PyValue[];
    const prev = metastack.pop();
    if (prev === undefined) throw new Error(`${source}: malformed pickle (no MARK at offset ${r.pos})`);
    stack = prev;
    if (items.some((x) => (x as StackItem) === MARK)) throw new Error(`${source}: malformed pickle (nested MARK)`);
    return items;
  };
  const lookupGlobal = (module: string, name: string): PyGlobal => {
    const qn = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(qn)) throw new UnsafePickleError(source, qn);
    return new PyGlobal(module, name);
  };
  const setItems = (target: PyValue, items: PyValue[]): void => {
    if (!(target instanceof Map)) throw new Error(`${source}: SETITEM on a value that is not a dict`);
    if (items.length % 2 !== 0) throw new Error(`${source}: SETITEMS with an odd number of items`);
    for (let i = 0; i < items.length; i += 2) target.set(items[i]!, items[i + 1]!);
  };
  const appendItems = (target: PyValue, items: PyValue[]): void => {
    if (Array.isArray(target)) pushAll(target, items);
    else if (target instanceof PySet) pushAll(target.items, items);
    else throw new Error(`${source}: APPEND on a value that is not a list or set`);
  };
  const persistent = (pid: PyValue): PyValue => {
    if (options.persistentLoad === undefined) throw new Error(`${source}: the pickle holds a persistent id but no storage resolver was given`);
    return options.persistentLoad(pid);
  };

  for (;;) {
    const op = r.u8();
    switch (op) {
      case 0x80: {
        // PROTO
        const v = r.u8();
        if (v > 5) throw new Error(`${source}: pickle protocol ${v} is not supported (max 5)`);
        break;
      }
      case 0x95:
        r.u64();
        break; // FRAME
      case 0x2e:
        return pop(); // STOP
      case 0x28:
        metastack.push(stack);
        stack = [];
        break; // MARK
      case 0x30:
        pop();
        break; // POP
      case 0x31:
        popMark();
        break; // POP_MARK
      case 0x32:
        stack.push(top());
        break; // DUP
      // memo
      case 0x70:
        memo.set(Number(r.line()), top());
        break; // PUT
      case 0x71:
        memo.set(r.u8(), top());
        break; // BINPUT
      case 0x72:
        memo.set(r.u32(), top());
        break; // LONG_BINPUT
      case 0x94:
        memo.set(memo.size, top());
        break; // MEMOIZE
      case 0x67:
      case 0x68:
      case 0x6a: {
        // GET, BINGET, LONG_BINGET
        const k = op === 0x67 ? Number(r.line()) : op === 0x68 ? r.u8() : r.u32();
        if (!memo.has(k)) throw new Error(`${source}: malformed pickle (memo key ${k} missing)`);
        stack.push(memo.get(k)!);
        break;
      }
      // constants and numbers
      case 0x4e:
        stack.push(null);
        break; // NONE
      case 0x88:
        stack.push(true);
        break; // NEWTRUE
      case 0x89:
        stack.push(false);
        break; // NEWFALSE
      case 0x49:
        stack.push(parseTextInt(r.line(), source));
        break; // INT
      case 0x4c:
        stack.push(parseTextInt(r.line(), source) as number | bigint);
        break; // LONG
      case 0x4a:
        stack.push(r.i32());
        break; // BININT
      case 0x4b:
        stack.push(r.u8());
        break; // BININT1
      case 0x4d:
        stack.push(r.u16());
        break; // BININT2
      case 0x8a:
        stack.push(decodeLong(r.bytes(r.u8())));
        break; // LONG1
      case 0x8b: {
        // LONG4
        const n = r.i32();
        if (n < 0) throw new Error(`${source}: negative LONG4 length`);
        stack.push(decodeLong(r.bytes(n)));
        break;
      }
      case 0x46:
        stack.push(parseTextFloat(r.line(), source));
        break; // FLOAT
      case 0x47:
        stack.push(r.f64be());
        break; // BINFLOAT
      // strings and bytes
      case 0x53: {
        // STRING (protocol 0, quoted repr)
        const s = r.line();
        stack.push(s.replace(/^(['"])(.*)\1$/, '$2'));
        break;
      }
      case 0x54:
        stack.push(new TextDecoder('latin1').decode(r.bytes(r.i32())));
        break; // BINSTRING
      case 0x55:
        stack.push(new TextDecoder('latin1').decode(r.bytes(r.u8())));
        break; // SHORT_BINSTRING
      case 0x56:
        stack.push(r.line());
        break; // UNICODE (raw-unicode-escape; ASCII in practice)
      case 0x58:
        stack.push(r.utf8(r.u32()));
        break; // BINUNICODE
      case 0x8c:
        stack.push(r.utf8(r.u8()));
        break; // SHORT_BINUNICODE
      case 0x8d:
        stack.push(r.utf8(r.u64()));
        break; // BINUNICODE8
      case 0x42:
        stack.push(r.bytes(r.u32()));
        break; // BINBYTES
      case 0x43:
        stack.push(r.bytes(r.u8()));
        break; // SHORT_BINBYTES
      case 0x8e:
      case 0x96:
        stack.push(r.bytes(r.u64()));
        break; // BINBYTES8, BYTEARRAY8
      // containers
      case 0x5d:
        stack.push([]);
        break; // EMPTY_LIST
      case 0x6c: {
        const items = popMark();
        stack.push(items);
        break;
      } // LIST
      case 0x61: {
        const v = pop();
        appendItems(top(), [v]);
        break;
      } // APPEND
      case 0x65: {
        const items = popMark();
        appendItems(top(), items);
        break;
      } // APPENDS
      case 0x29:
        stack.push(new PyTuple([]));
        break; // EMPTY_TUPLE
      case 0x74: {
        const items = popMark();
        stack.push(new PyTuple(items));
        break;
      } // TUPLE
      case 0x85:
        stack.push(new PyTuple([pop()]));
        break; // TUPLE1
      case 0x86: {
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b]));
        break;
      } // TUPLE2
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push(new PyTuple([a, b, c]));
        break;
      } // TUPLE3
      case 0x7d:
        stack.push(new Map());
        break; // EMPTY_DICT
      case 0x64: {
        const items = popMark();
        const m = new Map<PyValue, PyValue>();
        setItems(m, items);
        stack.push(m);
        break;
      } // DICT
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      } // SETITEM
      case 0x75: {
        const items = popMark();
        setItems(top(), items);
        break;
      } // SETITEMS
      case 0x8f:
        stack.push(new PySet([]));
        break; // EMPTY_SET
      case 0x90: {
        const items = popMark();
        appendItems(top(), items);
        break;
      } // ADDITEMS
      case 0x91: {
        const items = popMark();
        stack.push(new PySet(items));
        break;
      } // FROZENSET
      // globals and calls: every name goes through the allow-list before anything else happens
      case 0x63: {
        const module = r.line();
        const name = r.line();
        stack.push(lookupGlobal(module, name));
        break;
      } // GLOBAL
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw new Error(`${source}: STACK_GLOBAL with non-string names`);
        stack.push(lookupGlobal(module, name));
        break;
      }
      case 0x69: {
        // INST
        const module = r.line();
        const name = r.line();
        const cls = lookupGlobal(module, name);
        const args = popMark();
        stack.push(callGlobal(cls, args, source));
        break;
      }
      case 0x6f: {
        // OBJ
        const items = popMark();
        const cls = items.shift() ?? null;
        stack.push(callGlobal(cls, items, source));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(args instanceof PyTuple)) throw new Error(`${source}: REDUCE arguments are not a tuple`);
        stack.push(callGlobal(fn, args.items, source));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args); only OrderedDict is constructible
        const args = pop();
        const cls = pop();
        if (!(cls instanceof PyGlobal) || cls.qualifiedName !== 'collections.OrderedDict')
          throw new Error(`${source}: NEWOBJ of a class that is not allow-listed`);
        void args;
        stack.push(new Map());
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        pop();
        pop();
        const cls = pop();
        if (!(cls instanceof PyGlobal) || cls.qualifiedName !== 'collections.OrderedDict')
          throw new Error(`${source}: NEWOBJ_EX of a class that is not allow-listed`);
        stack.push(new Map());
        break;
      }
      case 0x62: {
        // BUILD: object state. Only attributes of OrderedDicts (a state_dict's `_metadata`)
        // and tensors (backward-compat fields) occur; they carry nothing we use and are dropped.
        pop();
        const obj = top();
        if (!(obj instanceof Map) && !(obj instanceof PickledTensor)) throw new Error(`${source}: BUILD on a value that is not an OrderedDict or tensor`);
        break;
      }
      case 0x50:
        stack.push(persistent(r.line()));
        break; // PERSID
      case 0x51:
        stack.push(persistent(pop()));
        break; // BINPERSID
      case 0x82:
      case 0x83:
      case 0x84: // EXT1, EXT2, EXT4: the copyreg extension registry names globals too
        throw new Error(`${source}: refusing pickle extension codes (EXT opcodes): they resolve to arbitrary globals`);
      case 0x97:
      case 0x98: // NEXT_BUFFER, READONLY_BUFFER
        throw new Error(`${source}: out-of-band pickle buffers are not supported`);
      default:
        throw new Error(`${source}: unknown pickle opcode 0x${op.toString(16)} at offset ${r.pos - 1}`);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// torch.save files
// ------------------------------------------------------------------------------------------------

/** Reads a `torch.save` file (zip format) through the allow-list; tensors come back as PickledTensor. */
export function loadTorchFile(path: string): PyValue {
  const head = new Uint8Array(4);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, head, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  if (!(head[0] === 0x50 && head[1] === 0x4b)) {
    if (head[0] === 0x80) {
      throw new Error(
        `${path}: this is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; re-save it with a recent PyTorch (torch.save(torch.load(f), f))`,
      );
    }
    throw new Error(`${path}: not a PyTorch .pt file (expected a zip archive written by torch.save)`);
  }
  const zip = ZipArchive.open(path);
  try {
    const pkl = zip.names().filter((n) => n.endsWith('data.pkl') && n.split('/').length === 2);
    if (pkl.length !== 1)
      throw new Error(`${path}: expected one <name>/data.pkl in the archive, found ${pkl.length} (entries: ${zip.names().slice(0, 10).join(', ')})`);
    const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
    const byteorderName = `${prefix}byteorder`;
    if (zip.entries.has(byteorderName)) {
      const order = new TextDecoder().decode(zip.read(byteorderName)).trim();
      if (order !== 'little') throw new Error(`${path}: storages are ${order}-endian; only little-endian files are supported`);
    }
    const storages = new Map<string, TorchStorage>();
    const persistentLoad = (pid: PyValue): PyValue => {
      const items = pid instanceof PyTuple ? pid.items : undefined;
      if (items === undefined || items[0] !== 'storage' || items.length < 5)
        throw new Error(`${path}: unsupported persistent id in data.pkl (expected a torch storage reference)`);
      const [, type, key, , numel] = items;
      if (!(type instanceof PyGlobal) || !(type.name in STORAGE_TYPES)) throw new Error(`${path}: unsupported storage type in data.pkl`);
      if (typeof key !== 'string') throw new Error(`${path}: storage key is not a string`);
      const dtype = STORAGE_TYPES[type.name]!;
      const entry = `${prefix}data/${key}`;
      let s = storages.get(key);
      if (s === undefined) {
        if (!zip.entries.has(entry)) throw new Error(`${path}: storage "${key}" (${entry}) is missing from the archive`);
        const size = asInt(numel ?? null, 'storage size', path);
        if (size < 0) throw new Error(`${path}: storage "${key}" has a negative size ${size}`);
        s = new TorchStorage(key, dtype, size, () => zip.read(entry));
        storages.set(key, s);
      }
      return s;
    };
    const value = unpickle(zip.read(pkl[0]!), { source: path, persistentLoad });
    // Read every referenced storage now, while the archive is open.
    for (const s of storages.values()) {
      try {
        s.bytes();
      } catch (err) {
        // Zip errors name the file already; a storage's own size check does not.
        if ((err as Error).message.includes(path)) throw err;
        throw new Error(`${path}: ${(err as Error).message}`, { cause: err });
      }
    }
    return value;
  } finally {
    zip.close();
  }
}

/**
 * Reads a `torch.save(state_dict)` file: a flat mapping from parameter names to tensors. Other values
 * (plain numbers, nested dicts) are an error naming the key.
 */
export function loadTorchStateDict(path: string): Map<string, PickledTensor> {
  const value = loadTorchFile(path);
  if (!(value instanceof Map)) throw new Error(`${path}: expected a state_dict (a dict of tensors) at the top level`);
  const out = new Map<string, PickledTensor>();
  for (const [k, v] of value) {
    if (typeof k !== 'string') throw new Error(`${path}: state_dict has a non-string key`);
    if (!(v instanceof PickledTensor)) throw new Error(`${path}: state_dict entry "${k}" is not a tensor`);
    out.set(k, v);
  }
  return out;
}
