/**
 * TensorBoard event files (`events.out.tfevents.<time>.<host>`), scalars only, so TensorBoard and
 * the dashboards that sync from it can show a run's curves.
 *
 * An event file is a TFRecord stream of serialized `tensorflow.Event` protos. Each record:
 *
 *     uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
 *
 * with masked_crc(c) = ((c >>> 15) | (c << 17)) + 0xa282ead8 (mod 2^32) and CRC-32C (Castagnoli).
 * The first event carries `file_version = "brain.Event:2"`; each later one `wall_time` (field 1,
 * double), `step` (field 2, int64) and a `Summary` (field 5) of `Value`s with `tag` (field 1) and
 * `simple_value` (field 2, float), written with the project's protobuf writer (`protobuf.ts`).
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ProtoWriter } from './protobuf.js';

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C of `bytes`. */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function maskedCrc(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc(data), true);
  return out;
}

/** A serialized Event with scalar summaries. */
export function scalarEvent(wallTime: number, step: number, scalars: Readonly<Record<string, number>>): Uint8Array {
  const summary = new ProtoWriter();
  for (const [tag, value] of Object.entries(scalars)) summary.bytes(1, new ProtoWriter().string(1, tag).float(2, value).finish());
  return new ProtoWriter().double(1, wallTime).int64(2, step).bytes(5, summary.finish()).finish();
}

/** Writers made by this process, so that two in one folder within a second get distinct files. */
let writers = 0;

/** Appends scalar events to one event file in `dir` (created when the writer is). */
export class EventFileWriter {
  private fd: number | undefined;
  /** The event file's path. */
  readonly path: string;

  /**
   * @param dir Folder of the event file; TensorBoard shows each folder as one run.
   */
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    this.path = join(dir, `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}.${writers++}`);
    this.fd = openSync(this.path, 'wx');
    writeSync(this.fd, tfRecord(new ProtoWriter().double(1, now).string(3, 'brain.Event:2').finish()));
  }

  /** Writes the scalars of one step (non-finite values are written as they are; TensorBoard shows them). */
  scalars(step: number, values: Readonly<Record<string, number>>, wallTime = Date.now() / 1000): void {
    if (this.fd === undefined) throw new Error(`${this.path}: the event file is closed`);
    writeSync(this.fd, tfRecord(scalarEvent(wallTime, step, values)));
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
