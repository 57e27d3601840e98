/**
 * The protobuf writer (src/io/protobuf.ts) against hand-encoded wire bytes.
 */
import { describe, expect, it } from 'vitest';
import { ProtoWriter } from '../../src/io/protobuf.js';

const bytes = (w: ProtoWriter): number[] => Array.from(w.finish());

describe('ProtoWriter', () => {
  it('encodes varints, including 300 and negative int64s (ten bytes, two’s complement)', () => {
    expect(bytes(new ProtoWriter().int64(1, 150))).toEqual([0x08, 0x96, 0x01]);
    expect(bytes(new ProtoWriter().int64(2, 300))).toEqual([0x10, 0xac, 0x02]);
    expect(bytes(new ProtoWriter().int64(1, -1))).toEqual([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  });

  it('encodes strings, packed varints, floats and doubles little-endian', () => {
    expect(bytes(new ProtoWriter().string(2, 'testing'))).toEqual([0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67]);
    expect(bytes(new ProtoWriter().packedInt64(4, [3, 270, 86942]))).toEqual([0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
    expect(bytes(new ProtoWriter().packedInt64(4, []))).toEqual([]);
    expect(bytes(new ProtoWriter().float(2, 1))).toEqual([0x15, 0x00, 0x00, 0x80, 0x3f]);
    expect(bytes(new ProtoWriter().double(1, 1))).toEqual([0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
  });

  it('nests messages with their lengths, large byte fields included, and keeps field order', () => {
    const big = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    const inner = new ProtoWriter().int64(1, 7).bytes(2, big).int64(3, 9);
    const outer = new ProtoWriter().int64(1, 1).message(2, inner).string(3, 'x');
    const out = outer.finish();
    // inner = 08 07 | 12 e8 07 <1000 bytes> | 18 09  -> 2 + 3 + 1000 + 2 = 1007 bytes
    expect(Array.from(out.subarray(0, 5))).toEqual([0x08, 0x01, 0x12, 0xef, 0x07]);
    expect(Array.from(out.subarray(5, 10))).toEqual([0x08, 0x07, 0x12, 0xe8, 0x07]);
    expect(Array.from(out.subarray(10, 1010))).toEqual(Array.from(big));
    expect(Array.from(out.subarray(1010))).toEqual([0x18, 0x09, 0x1a, 0x01, 0x78]);
    expect(outer.length).toBe(out.length);
  });
});
