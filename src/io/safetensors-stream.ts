/**
 * A safetensors file written piece by piece, for outputs too large to gather in memory first.
 *
 * The caller declares every tensor's dtype and shape up front; the header (laid out exactly as
 * `writeSafetensors` lays it out: `__metadata__` first, tensors in sorted name order, JSON padded
 * with spaces to a multiple of 8 bytes) fixes where each tensor's bytes go, so rows can then be
 * written straight to their place with positional writes, batch by batch, while nothing but the
 * current batch is held. The file is a temp file until `finish` renames it into place (see
 * `openFileAtomic`), and `finish` refuses a file with rows never written.
 */
import { openFileAtomic, writeAllAtSync, type AtomicFile } from './atomic.js';
import type { SafetensorsDtype } from './safetensors.js';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** A tensor to be written: its dtype and shape (rows along the first dimension). */
export interface TensorPlan {
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

/** Where one tensor's bytes go in the file. */
export interface TensorPlace {
  /** Absolute file offset of its first byte. */
  start: number;
  /** Bytes of one row (one index along the first dimension). */
  rowBytes: number;
  /** Rows (the first dimension). */
  rows: number;
}

export interface SafetensorsLayout {
  /** The 8-byte header length followed by the padded JSON header. */
  header: Uint8Array;
  /** Each tensor's place, by name. */
  places: Map<string, TensorPlace>;
  /** Bytes of the whole file. */
  size: number;
}

/**
 * The header and byte layout of a safetensors file holding `tensors` (byte for byte what
 * `writeSafetensors` writes for them). Sizes are exact up to 2^53 bytes, so tensors of more than
 * 2^32 elements or 4 GiB are laid out like any other.
 *
 * @param tensors name -> dtype and shape; every shape has at least one dimension
 * @param metadata string pairs stored as `__metadata__`
 */
export function safetensorsLayout(tensors: Readonly<Record<string, TensorPlan>>, metadata?: Readonly<Record<string, string>>): SafetensorsLayout {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  const names = Object.keys(tensors).sort();
  const spans: { name: string; begin: number; rowBytes: number; rows: number }[] = [];
  let offset = 0;
  for (const name of names) {
    const { dtype, shape } = tensors[name]!;
    if (!(dtype in DTYPE_BYTES)) throw new Error(`safetensors layout: tensor "${name}" has unknown dtype ${JSON.stringify(dtype)}`);
    if (shape.length === 0 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new Error(`safetensors layout: tensor "${name}" has shape ${JSON.stringify(shape)}; expected one or more non-negative integer dimensions`);
    }
    const rowBytes = shape.slice(1).reduce((a, b) => a * b, DTYPE_BYTES[dtype]);
    const bytes = rowBytes * shape[0]!;
    if (!Number.isSafeInteger(offset + bytes)) throw new Error(`safetensors layout: tensor "${name}" ends past 2^53 bytes`);
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + bytes] };
    spans.push({ name, begin: offset, rowBytes, rows: shape[0]! });
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const jsonBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + jsonBytes.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  out.set(jsonBytes, 8);
  const places = new Map<string, TensorPlace>();
  for (const s of spans) places.set(s.name, { start: out.byteLength + s.begin, rowBytes: s.rowBytes, rows: s.rows });
  return { header: out, places, size: out.byteLength + offset };
}

/** Typed arrays `writeRows` takes; their element size must match the tensor's dtype. */
export type RowData = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array | BigInt64Array;

/**
 * Writes a safetensors file whose tensors arrive in row blocks (see the module docstring). Rows of
 * each tensor are written in order; tensors may interleave freely.
 */
export class SafetensorsStreamWriter {
  /** Bytes of the finished file. */
  readonly size: number;
  private readonly places: Map<string, TensorPlace & { dtype: SafetensorsDtype; next: number }>;

  private constructor(
    /** The target file. */
    readonly path: string,
    private readonly file: AtomicFile,
    layout: SafetensorsLayout,
    tensors: Readonly<Record<string, TensorPlan>>,
  ) {
    this.size = layout.size;
    this.places = new Map([...layout.places].map(([name, place]) => [name, { ...place, dtype: tensors[name]!.dtype, next: 0 }]));
  }

  /**
   * Starts writing `path`: lays out the header, opens a temp file beside the target and writes the
   * header to it. End with `finish` (or `abort` on failure).
   *
   * @param path the file to write
   * @param tensors name -> dtype and shape of every tensor the file will hold
   * @param metadata string pairs stored as `__metadata__`
   */
  static create(path: string, tensors: Readonly<Record<string, TensorPlan>>, metadata?: Readonly<Record<string, string>>): SafetensorsStreamWriter {
    const layout = safetensorsLayout(tensors, metadata);
    const file = openFileAtomic(path);
    try {
      writeAllAtSync(file.fd, layout.header, 0);
    } catch (err) {
      file.abort();
      throw err;
    }
    return new SafetensorsStreamWriter(path, file, layout, tensors);
  }

  /**
   * Writes rows `[row, row + k)` of tensor `name`, where k is `data`'s size over one row's.
   *
   * @param name a tensor declared to `create`
   * @param row the first row written: the row after the last one written to this tensor
   * @param data whole rows, row-major, with elements of the tensor's dtype size
   */
  writeRows(name: string, row: number, data: RowData): void {
    const place = this.places.get(name);
    if (place === undefined) throw new Error(`${this.path}: no tensor "${name}" was declared`);
    if (data.BYTES_PER_ELEMENT !== DTYPE_BYTES[place.dtype]) {
      throw new Error(`${this.path}: tensor "${name}" is ${place.dtype}, but a ${data.constructor.name} was given`);
    }
    if (row !== place.next) throw new Error(`${this.path}: tensor "${name}": rows must be written in order; expected row ${place.next}, got ${row}`);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const rows = place.rowBytes === 0 ? 0 : bytes.byteLength / place.rowBytes;
    if (!Number.isInteger(rows) || row + rows > place.rows) {
      throw new Error(
        `${this.path}: tensor "${name}": ${bytes.byteLength} bytes from row ${row} are not whole rows of ${place.rowBytes} bytes within its ${place.rows} rows`,
      );
    }
    writeAllAtSync(this.file.fd, bytes, place.start + row * place.rowBytes);
    place.next = row + rows;
  }

  /** Checks that every row of every tensor was written, then flushes the file and renames it into place. */
  finish(): void {
    for (const [name, place] of this.places) {
      if (place.rowBytes > 0 && place.next !== place.rows) {
        this.abort();
        throw new Error(`${this.path}: tensor "${name}" got ${place.next} of its ${place.rows} rows; the file was not written`);
      }
    }
    this.file.commit();
  }

  /** Removes the unfinished file; does nothing after `finish`. */
  abort(): void {
    this.file.abort();
  }
}
