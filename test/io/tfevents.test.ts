import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c, EventFileWriter } from '../../src/io/tfevents.js';
import { runPythonReference } from '../reference/python.js';

/** Reads the TFRecords of an event file, checking both masked CRCs of every record. */
function records(bytes: Buffer): Buffer[] {
  const mask = (c: number): number => (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
  const out: Buffer[] = [];
  let p = 0;
  while (p < bytes.length) {
    const len = Number(bytes.readBigUInt64LE(p));
    expect(bytes.readUInt32LE(p + 8)).toBe(mask(crc32c(bytes.subarray(p, p + 8))));
    const data = bytes.subarray(p + 12, p + 12 + len);
    expect(bytes.readUInt32LE(p + 12 + len)).toBe(mask(crc32c(data)));
    out.push(data);
    p += 16 + len;
  }
  return out;
}

/** Decodes the protobuf fields this writer uses (varint, fixed64, length-delimited, fixed32). */
function fields(buf: Buffer): { field: number; value: number | bigint | Buffer }[] {
  const out: { field: number; value: number | bigint | Buffer }[] = [];
  let p = 0;
  const varint = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[p++]!;
      v |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v;
      shift += 7n;
    }
  };
  while (p < buf.length) {
    const key = Number(varint());
    const [field, wire] = [key >> 3, key & 7];
    if (wire === 0) out.push({ field, value: varint() });
    else if (wire === 1) {
      out.push({ field, value: buf.readDoubleLE(p) });
      p += 8;
    } else if (wire === 5) {
      out.push({ field, value: buf.readFloatLE(p) });
      p += 4;
    } else if (wire === 2) {
      const len = Number(varint());
      out.push({ field, value: buf.subarray(p, p + len) });
      p += len;
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}

describe('TensorBoard event files', () => {
  it('computes CRC-32C (Castagnoli) check values', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
  });

  it('writes a version event, then one event per step with a scalar per value', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tfevents-'));
    const w = new EventFileWriter(dir);
    w.scalars(1, { loss: 0.5, temperature: 2 }, 1000.25);
    w.scalars(2, { loss: 0.25 }, 1001.5);
    w.close();
    expect(() => w.scalars(3, { loss: 0 })).toThrow(/closed/);
    const [version, ...events] = records(readFileSync(w.path));
    expect(
      fields(version!)
        .find((f) => f.field === 3)!
        .value.toString(),
    ).toBe('brain.Event:2');
    expect(events).toHaveLength(2);
    const decoded = events.map((e) => {
      const f = fields(e);
      const scalars = f
        .filter((x) => x.field === 5)
        .flatMap((s) => fields(s.value as Buffer).map((v) => fields(v.value as Buffer)))
        .map((v) => [v.find((x) => x.field === 1)!.value.toString(), v.find((x) => x.field === 2)!.value]);
      return {
        wall: f.find((x) => x.field === 1)!.value,
        step: f.find((x) => x.field === 2)!.value,
        scalars: Object.fromEntries(scalars) as Record<string, number>,
      };
    });
    expect(decoded[0]).toEqual({ wall: 1000.25, step: 1n, scalars: { loss: 0.5, temperature: 2 } });
    expect(decoded[1]).toEqual({ wall: 1001.5, step: 2n, scalars: { loss: 0.25 } });
  });

  it('gives two writers in one folder two files, never one interleaved stream', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tfevents-'));
    const a = new EventFileWriter(dir);
    const b = new EventFileWriter(dir);
    a.scalars(1, { x: 1 });
    b.scalars(1, { x: 2 });
    a.close();
    b.close();
    expect(a.path).not.toBe(b.path);
    expect(readdirSync(dir)).toHaveLength(2);
    expect(records(readFileSync(a.path))).toHaveLength(2);
  });

  it('are read back by TensorBoard itself (its EventMultiplexer, in the Python reference environment): every run, tag, step and value', async () => {
    const logdir = mkdtempSync(join(tmpdir(), 'tfevents-tb-'));
    const a = new EventFileWriter(join(logdir, 'sae_mask', 'seed-1', 'mask'));
    const b = new EventFileWriter(join(logdir, 'original', 'seed-1', 'probe'));
    const written: Record<string, Record<string, [number, number][]>> = { 'sae_mask/seed-1/mask': {}, 'original/seed-1/probe': {} };
    for (let step = 1; step <= 50; step++) {
      const values = { loss: 1 / step, temperature: Math.fround(1 - step / 50) };
      a.scalars(step, values);
      for (const [tag, v] of Object.entries(values)) (written['sae_mask/seed-1/mask']![tag] ??= []).push([step, Math.fround(v)]);
    }
    b.scalars(1, { loss: 0.75 });
    written['original/seed-1/probe']!.loss = [[1, 0.75]];
    a.close();
    b.close();
    const scalars = JSON.parse(readFileSync(join(await runPythonReference('tensorboard_reference.py', [logdir]), 'scalars.json'), 'utf8')) as typeof written;
    expect(scalars).toEqual(written);
  });
});
