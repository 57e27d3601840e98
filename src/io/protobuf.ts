/**
 * A minimal protobuf writer for the messages this project emits (TensorBoard events, ONNX models):
 * varints, 64- and 32-bit fixed-width fields, length-delimited fields and packed repeated varints.
 *
 * Messages are built bottom-up: a nested message is a finished `ProtoWriter` whose chunks are
 * appended to the parent without copying, so a model with hundreds of megabytes of weights is
 * copied once, by `finish()`. Field numbers and wire types are the caller's (see the .proto files
 * named where the messages are built).
 */

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_BYTES = 2;
const WIRE_FIXED32 = 5;

/** The varint encoding of `value` (two's complement for negatives, as protobuf's int64). */
function varintBytes(value: number | bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(value));
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

export class ProtoWriter {
  private readonly chunks: Uint8Array[] = [];
  /** Bytes pending in the current small chunk. */
  private pending: number[] = [];
  private flushed = 0;

  /** Total bytes written so far. */
  get length(): number {
    return this.flushed + this.pending.length;
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.chunks.push(Uint8Array.from(this.pending));
    this.flushed += this.pending.length;
    this.pending = [];
  }

  private raw(bytes: Uint8Array): void {
    // Small pieces are gathered; large ones are kept as they are (no copy until finish()).
    if (bytes.length < 256) {
      for (const b of bytes) this.pending.push(b);
      return;
    }
    this.flush();
    this.chunks.push(bytes);
    this.flushed += bytes.length;
  }

  private tag(field: number, wire: number): void {
    for (const b of varintBytes((field << 3) | wire)) this.pending.push(b);
  }

  /** An int32, int64, uint64, bool or enum field. */
  int64(field: number, value: number | bigint): this {
    this.tag(field, WIRE_VARINT);
    for (const b of varintBytes(value)) this.pending.push(b);
    return this;
  }

  /** A packed repeated varint field (int64s, int32s); nothing is written for an empty list. */
  packedInt64(field: number, values: readonly (number | bigint)[]): this {
    if (values.length === 0) return this;
    const body: number[] = [];
    for (const v of values) for (const b of varintBytes(v)) body.push(b);
    return this.bytes(field, Uint8Array.from(body));
  }

  /** A little-endian fixed-width field: wire type 1 (8 bytes) or 5 (4 bytes). */
  private fixed(field: number, wire: typeof WIRE_FIXED64 | typeof WIRE_FIXED32, write: (view: DataView) => void): this {
    this.tag(field, wire);
    const b = new Uint8Array(wire === WIRE_FIXED64 ? 8 : 4);
    write(new DataView(b.buffer));
    for (const x of b) this.pending.push(x);
    return this;
  }

  double(field: number, value: number): this {
    return this.fixed(field, WIRE_FIXED64, (v) => v.setFloat64(0, value, true));
  }

  float(field: number, value: number): this {
    return this.fixed(field, WIRE_FIXED32, (v) => v.setFloat32(0, value, true));
  }

  /** A bytes field; `value` is referenced, not copied, until `finish()`. */
  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_BYTES);
    for (const b of varintBytes(value.length)) this.pending.push(b);
    this.raw(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  /** A nested message field; `message`'s chunks are taken over (do not write to it afterwards). */
  message(field: number, message: ProtoWriter): this {
    message.flush();
    this.tag(field, WIRE_BYTES);
    for (const b of varintBytes(message.flushed)) this.pending.push(b);
    this.flush();
    for (const c of message.chunks) this.chunks.push(c);
    this.flushed += message.flushed;
    return this;
  }

  /** The encoded message, in one new buffer. */
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.flushed);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}
