/**
 * safetensors reader and writer.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}}`), then the data
 * buffer; offsets are relative to the buffer start. The reader validates the header against the
 * file (offsets in range, no overlap, byte size = dtype size x element count) before reading any
 * tensor, and reads each tensor straight from the file into its typed array, so a large checkpoint
 * is never held twice. Sharded checkpoints are read through `model.safetensors.index.json`.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { tf } from '../engine/engine.js';
import { writeFileAtomic } from './atomic.js';
import { readUtf8 } from './text.js';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

const FLOAT_DTYPES = new Set<SafetensorsDtype>(['F64', 'F32', 'F16', 'BF16']);

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range inside the data buffer. */
  dataOffsets: [number, number];
}

/** Raw tensor data for the writer, when it is not a tf.Tensor. */
export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: readonly number[];
  data: Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array | Int16Array | BigInt64Array | Uint16Array;
}

/** Converts IEEE half-precision bits to a float. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f === 0 ? s * Infinity : NaN;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** Converts a float to IEEE half-precision bits (round to nearest even). */
function f32ToF16(v: number): number {
  const f32 = new Float32Array([v]);
  const u = new Uint32Array(f32.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  if ((half & 0x7c00) === 0x7c00 && e < 31) e = 31;
  return sign | half;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && s in DTYPE_BYTES;
}

export class SafetensorsFile {
  readonly metadata: Readonly<Record<string, string>>;
  private readonly infos: Map<string, TensorInfo>;
  private readonly dataStart: number;

  private constructor(
    readonly path: string,
    infos: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    dataStart: number,
  ) {
    this.infos = infos;
    this.metadata = metadata;
    this.dataStart = dataStart;
  }

  /** Opens and validates a safetensors file; throws an error naming the file and the bad tensor. */
  static open(path: string): SafetensorsFile {
    if (!existsSync(path)) throw new Error(`${path}: safetensors file not found`);
    if (!statSync(path).isFile()) throw new Error(`${path}: not a safetensors file (a folder or special file)`);
    const fd = openSync(path, 'r');
    try {
      const fileSize = fstatSync(fd).size;
      if (fileSize < 8) throw new Error(`${path}: truncated safetensors file (${fileSize} bytes, no header)`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = lenBuf.readBigUInt64LE(0);
      if (headerLen > BigInt(fileSize - 8) || headerLen > 100_000_000n) {
        throw new Error(`${path}: safetensors header length ${headerLen} exceeds the file size ${fileSize}: truncated or not a safetensors file`);
      }
      const n = Number(headerLen);
      const headerBuf = Buffer.alloc(n);
      readSync(fd, headerBuf, 0, n, 8);
      let header: unknown;
      try {
        header = JSON.parse(headerBuf.toString('utf8'));
      } catch (err) {
        throw new Error(`${path}: safetensors header is not valid JSON (${(err as Error).message})`);
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) {
        throw new Error(`${path}: safetensors header is not a JSON object`);
      }
      const dataStart = 8 + n;
      const dataSize = fileSize - dataStart;
      const infos = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
        if (name === '__metadata__') {
          // The format says a map of strings to strings; anything else would reach callers as a lie of the type.
          if (!isPlainObject(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
            throw new Error(`${path}: safetensors "__metadata__" must be an object of strings, got ${JSON.stringify(raw).slice(0, 80)}`);
          }
          metadata = raw as Record<string, string>;
          continue;
        }
        infos.set(name, validateEntry(path, name, raw, dataSize));
      }
      checkNoOverlap(path, infos);
      return new SafetensorsFile(path, infos, metadata, dataStart);
    } finally {
      closeSync(fd);
    }
  }

  names(): string[] {
    return [...this.infos.keys()];
  }

  has(name: string): boolean {
    return this.infos.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.infos.get(name);
    if (info === undefined) throw new Error(`${this.path}: no tensor named "${name}"`);
    return info;
  }

  /** The raw bytes of one tensor, read straight from the file. */
  bytes(name: string): Uint8Array {
    const info = this.info(name);
    const [begin, end] = info.dataOffsets;
    const out = new Uint8Array(end - begin);
    const fd = openSync(this.path, 'r');
    try {
      let off = 0;
      while (off < out.length) {
        const got = readSync(fd, out, off, out.length - off, this.dataStart + begin + off);
        if (got === 0) throw new Error(`${this.path}: tensor "${name}" is truncated (file changed while reading?)`);
        off += got;
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }

  /** A float tensor's values as float32 (F64, F16 and BF16 are converted). */
  float32(name: string): Float32Array {
    const { dtype } = this.info(name);
    if (!FLOAT_DTYPES.has(dtype)) throw new Error(`${this.path}: tensor "${name}" has dtype ${dtype}, expected a float dtype`);
    const b = this.bytes(name);
    const count = b.byteLength / DTYPE_BYTES[dtype];
    if (dtype === 'F32') return new Float32Array(b.buffer, b.byteOffset, count);
    const out = new Float32Array(count);
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (dtype === 'F64') for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
    else if (dtype === 'F16') for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(2 * i, true));
    else {
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) u32[i] = view.getUint16(2 * i, true) << 16;
    }
    return out;
  }

  /** A float tensor's values as float64 (exact for F64, F32, F16 and BF16). */
  float64(name: string): Float64Array {
    const { dtype } = this.info(name);
    if (dtype !== 'F64') return Float64Array.from(this.float32(name));
    const b = this.bytes(name);
    return new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8);
  }

  /** An integer or bool tensor's values as int32 (I64 values must fit). */
  int32(name: string): Int32Array {
    const { dtype } = this.info(name);
    const b = this.bytes(name);
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const count = b.byteLength / DTYPE_BYTES[dtype];
    const out = new Int32Array(count);
    switch (dtype) {
      case 'I32':
        return new Int32Array(b.buffer, b.byteOffset, count);
      case 'I64':
        for (let i = 0; i < count; i++) {
          const v = view.getBigInt64(8 * i, true);
          if (v > 2147483647n || v < -2147483648n) throw new Error(`${this.path}: tensor "${name}" has an I64 value ${v} that does not fit in int32`);
          out[i] = Number(v);
        }
        return out;
      case 'I16':
        for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
        return out;
      case 'I8':
        for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
        return out;
      case 'U8':
      case 'BOOL':
        for (let i = 0; i < count; i++) out[i] = b[i]!;
        return out;
      default:
        throw new Error(`${this.path}: tensor "${name}" has dtype ${dtype}, expected an integer dtype`);
    }
  }

  /** One tensor as a tf.Tensor: float dtypes become float32, integer dtypes int32, BOOL bool. */
  tensor(name: string): tf.Tensor {
    const { dtype, shape } = this.info(name);
    if (FLOAT_DTYPES.has(dtype)) return tf.tensor(this.float32(name), shape, 'float32');
    if (dtype === 'BOOL') return tf.tensor(this.int32(name), shape, 'bool');
    return tf.tensor(this.int32(name), shape, 'int32');
  }
}

function validateEntry(path: string, name: string, raw: unknown, dataSize: number): TensorInfo {
  const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof raw !== 'object' || raw === null) throw new Error(`${path}: tensor "${name}": header entry is not an object`);
  if (!isDtype(entry.dtype)) throw new Error(`${path}: tensor "${name}": unsupported dtype ${JSON.stringify(entry.dtype)}`);
  const shape = entry.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${path}: tensor "${name}": invalid shape ${JSON.stringify(shape)}`);
  }
  const offs = entry.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]) {
    throw new Error(`${path}: tensor "${name}": invalid data_offsets ${JSON.stringify(offs)}`);
  }
  const [begin, end] = offs as [number, number];
  const count = (shape as number[]).reduce((a, b) => a * b, 1);
  const want = count * DTYPE_BYTES[entry.dtype];
  if (end - begin !== want) {
    throw new Error(
      `${path}: tensor "${name}": data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${entry.dtype} ${JSON.stringify(shape)} needs ${want}`,
    );
  }
  if (end > dataSize) {
    throw new Error(
      `${path}: tensor "${name}": data ends at byte ${end} but the data buffer has only ${dataSize} bytes (truncated file or a header that lies about offsets)`,
    );
  }
  return { dtype: entry.dtype, shape: shape as number[], dataOffsets: [begin, end] };
}

function checkNoOverlap(path: string, infos: Map<string, TensorInfo>): void {
  // Empty tensors occupy no bytes, so they overlap nothing, wherever their offsets point.
  const sorted = [...infos.entries()].filter(([, info]) => info.dataOffsets[1] > info.dataOffsets[0]).sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
  for (let i = 1; i < sorted.length; i++) {
    const [prevName, prev] = sorted[i - 1]!;
    const [name, cur] = sorted[i]!;
    if (cur.dataOffsets[0] < prev.dataOffsets[1]) {
      throw new Error(`${path}: tensors "${prevName}" and "${name}" overlap in the data buffer: the header lies about offsets`);
    }
  }
}

/** Opens a safetensors file (shorthand for `SafetensorsFile.open`). */
export function readSafetensors(path: string): SafetensorsFile {
  return SafetensorsFile.open(path);
}

/**
 * The safetensors files of a checkpoint: a single file, a folder with `model.safetensors`, or a
 * folder with `model.safetensors.index.json` naming its shards. Returns tensor name -> file.
 */
export function openCheckpoint(pathOrDir: string): Map<string, SafetensorsFile> {
  const byName = new Map<string, SafetensorsFile>();
  const isDir = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory();
  if (!isDir) {
    const f = SafetensorsFile.open(pathOrDir);
    for (const n of f.names()) byName.set(n, f);
    return byName;
  }
  const single = join(pathOrDir, 'model.safetensors');
  const index = join(pathOrDir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readUtf8(index));
    } catch (err) {
      throw new Error(`${index}: not a valid safetensors index (${(err as Error).message})`);
    }
    const weightMap = isPlainObject(parsed) ? parsed.weight_map : undefined;
    if (!isPlainObject(weightMap)) throw new Error(`${index}: missing "weight_map" (an object of tensor name -> shard file)`);
    const files = new Map<string, SafetensorsFile>();
    for (const [name, shard] of Object.entries(weightMap)) {
      if (typeof shard !== 'string' || shard === '')
        throw new Error(`${index}: "weight_map" maps tensor "${name}" to ${JSON.stringify(shard)}, not a file name`);
      // Shards sit beside the index; a name reaching out of the folder is a broken or hostile index.
      if (isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
        throw new Error(`${index}: "weight_map" maps tensor "${name}" to ${JSON.stringify(shard)}, outside the checkpoint folder`);
      }
      let f = files.get(shard);
      if (f === undefined) {
        f = SafetensorsFile.open(join(pathOrDir, shard));
        files.set(shard, f);
      }
      if (!f.has(name)) throw new Error(`${index}: tensor "${name}" is mapped to ${shard}, which does not contain it`);
      byName.set(name, f);
    }
    return byName;
  }
  if (existsSync(single)) return openCheckpoint(single);
  throw new Error(`${pathOrDir}: no model.safetensors or model.safetensors.index.json in this folder`);
}

/** Loads every tensor of a checkpoint (file, folder or sharded folder) as tf tensors. */
export function loadSafetensorsTensors(pathOrDir: string): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [name, file] of openCheckpoint(pathOrDir)) out[name] = file.tensor(name);
  return out;
}

function rawFromTensor(name: string, t: tf.Tensor): RawTensor {
  switch (t.dtype) {
    case 'float32':
      return { dtype: 'F32', shape: t.shape, data: t.dataSync() as Float32Array };
    case 'int32':
      return { dtype: 'I32', shape: t.shape, data: t.dataSync() as Int32Array };
    case 'bool':
      return { dtype: 'BOOL', shape: t.shape, data: Uint8Array.from(t.dataSync() as Uint8Array) };
    default:
      throw new Error(`writeSafetensors: tensor "${name}" has dtype ${t.dtype}, which safetensors cannot hold`);
  }
}

function encodeRaw(name: string, raw: RawTensor): Uint8Array {
  const count = raw.shape.reduce((a, b) => a * b, 1);
  if (raw.data.length !== count) {
    throw new Error(`writeSafetensors: tensor "${name}" has ${raw.data.length} values but shape ${JSON.stringify(raw.shape)} needs ${count}`);
  }
  if (raw.dtype === 'F16' && raw.data instanceof Float32Array) {
    const out = new Uint16Array(count);
    for (let i = 0; i < count; i++) out[i] = f32ToF16(raw.data[i]!);
    return new Uint8Array(out.buffer);
  }
  if (raw.dtype === 'BF16' && raw.data instanceof Float32Array) {
    // Round to nearest even on the dropped 16 bits.
    const u32 = new Uint32Array(raw.data.buffer, raw.data.byteOffset, count);
    const out = new Uint16Array(count);
    for (let i = 0; i < count; i++) {
      const u = u32[i]!;
      out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
    return new Uint8Array(out.buffer);
  }
  const bytes = new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
  if (bytes.byteLength !== count * DTYPE_BYTES[raw.dtype]) {
    throw new Error(`writeSafetensors: tensor "${name}": a ${raw.data.constructor.name} cannot be written as ${raw.dtype}`);
  }
  return bytes;
}

/**
 * Writes tensors (tf tensors or raw typed arrays) to a safetensors file atomically. The header is
 * padded with spaces to a multiple of 8 bytes, as the reference implementation does.
 */
export function writeSafetensors(path: string, tensors: Readonly<Record<string, tf.Tensor | RawTensor>>, metadata?: Record<string, string>): void {
  // No prototype: a tensor named "__proto__" must become a key, not replace the prototype and vanish.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata !== undefined) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const name of Object.keys(tensors).sort()) {
    const value = tensors[name]!;
    const raw = value instanceof tf.Tensor ? rawFromTensor(name, value) : value;
    const bytes = encodeRaw(name, raw);
    header[name] = { dtype: raw.dtype, shape: [...raw.shape], data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.byteLength));
  writeFileAtomic(path, [len, headerBytes, ...chunks]);
}
