import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTorchFile, loadTorchStateDict, PickledTensor, PySet, PyTuple, unpickle, UnsafePickleError, type PyValue } from '../../src/io/pickle.js';
import { torchZip, type TensorSpec } from '../fuzz/torch-writer.js';
import { runPythonReference } from '../reference/python.js';

let ref: string;
beforeAll(async () => {
  ref = await runPythonReference('sae_reference.py', ['--part', 'pickle']);
});

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Our value in the JSON shape the reference script writes. */
function toJson(v: PyValue): Json {
  if (v instanceof PickledTensor) {
    const isFloat = ['float32', 'float64', 'float16', 'bfloat16'].includes(v.dtype);
    return {
      tensor: true,
      dtype: v.dtype,
      shape: [...v.shape],
      values: isFloat ? Array.from(v.float32()) : Array.from(v.int64(), (x) => (v.dtype === 'bool' ? x !== 0n : Number(x))),
    };
  }
  if (v instanceof Map) return { dict: [...v.entries()].map(([k, x]) => [toJson(k), toJson(x)]) };
  if (v instanceof PyTuple) return { tuple: v.items.map(toJson) };
  if (v instanceof PySet) return { set: v.items.map(toJson) };
  if (Array.isArray(v)) return v.map(toJson);
  if (v instanceof Uint8Array) return { bytes: Array.from(v) };
  if (typeof v === 'bigint') return { bigint: v.toString() };
  if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
  throw new Error(`unexpected value ${String(v)}`);
}

describe('allow-list unpickler on real torch.save files', () => {
  it('rebuilds every dtype, view, offset and container exactly as PyTorch saved them', () => {
    const got = toJson(loadTorchFile(join(ref, 'pickle/zoo.pt')));
    const want = JSON.parse(readFileSync(join(ref, 'pickle/zoo.json'), 'utf8')) as Json;
    // The reference writes bool tensors as floats (0/1 via double()); normalise ours the same way.
    const norm = (j: Json): Json => {
      if (Array.isArray(j)) return j.map(norm);
      if (j !== null && typeof j === 'object') {
        if (j.tensor === true && j.dtype === 'bool') return { ...j, values: (j.values as Json[]).map((x) => (x === true || x === 1 ? 1 : 0)) };
        return Object.fromEntries(Object.entries(j).map(([k, x]) => [k, norm(x)]));
      }
      return j;
    };
    expect(norm(got)).toEqual(norm(want));
  });

  it('keeps views of one storage consistent (slice, strided slice, transposed, column)', () => {
    const zoo = loadTorchFile(join(ref, 'pickle/zoo.pt')) as Map<PyValue, PyValue>;
    const slice = zoo.get('f32_slice') as PickledTensor;
    const strided = zoo.get('f32_strided') as PickledTensor;
    expect(slice.storage).toBe(strided.storage);
    expect(slice.storageOffset).toBe(4);
    expect(strided.stride).toEqual([3]);
    // shared[4] is element 1 of shared[1:19:3]
    expect(strided.float32()[1]).toBe(slice.float32()[0]);
  });

  it('refuses a legacy non-zip file and a file that is not a .pt with clear errors', () => {
    expect(() => loadTorchFile(join(ref, 'pickle/legacy.pt'))).toThrow(/legacy.*non-zip/);
    expect(() => loadTorchFile(join(ref, 'pickle/garbage.pt'))).toThrow(/garbage\.pt: not a PyTorch \.pt file/);
  });
});

describe('malicious pickles', () => {
  const payloads = ['ae_system.pt', 'exec.pt', 'posix_inst.pt', 'popen.pt'];
  const globals: Record<string, RegExp> = {
    'ae_system.pt': /"(posix|os)\.system"/,
    'exec.pt': /"builtins\.exec"/,
    'posix_inst.pt': /"posix\.system"/,
    'popen.pt': /"subprocess\.Popen"/,
  };

  it('the reference proves each payload runs under an unrestricted torch.load', () => {
    const info = JSON.parse(readFileSync(join(ref, 'malicious/payloads.json'), 'utf8')) as { live: Record<string, boolean> };
    for (const p of payloads) expect(info.live[p], p).toBe(true);
  });

  it.each(payloads)('%s is refused, naming the file and the global, and never runs', (name) => {
    const { marker } = JSON.parse(readFileSync(join(ref, 'malicious/payloads.json'), 'utf8')) as { marker: string };
    rmSync(marker, { force: true });
    const path = join(ref, 'malicious', name);
    let error: unknown;
    try {
      loadTorchFile(path);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(UnsafePickleError);
    const msg = (error as Error).message;
    expect(msg).toContain(path);
    expect(msg).toMatch(globals[name]!);
    expect(msg).toMatch(/not on the allow-list/);
    // Payloads like Popen would act asynchronously; give them a moment before looking.
    const until = Date.now() + 300;
    while (Date.now() < until) {
      /* wait */
    }
    expect(existsSync(marker)).toBe(false);
  });

  it('refuses extension-registry opcodes and an unknown global in a bare pickle', () => {
    // EXT1 0x01, STOP
    expect(() => unpickle(Uint8Array.from([0x80, 0x02, 0x82, 0x01, 0x2e]), { source: 'bare' })).toThrow(/EXT opcodes/);
    const evil = new TextEncoder().encode("cbuiltins\neval\n(S'1'\ntR.");
    expect(() => unpickle(evil, { source: 'bare.pkl' })).toThrow(/bare\.pkl: refusing to unpickle the global "builtins\.eval"/);
  });
});

describe('data-sized pickles', () => {
  it('unpickles one APPENDS of 300,000 items (no argument spreading)', () => {
    const n = 300_000;
    const bytes = new Uint8Array(5 + 2 * n + 2);
    bytes.set([0x80, 0x02, 0x5d, 0x28]); // PROTO 2, EMPTY_LIST, MARK
    for (let i = 0; i < n; i++) bytes.set([0x4b, i % 256], 4 + 2 * i); // BININT1 i % 256
    bytes.set([0x65, 0x2e], 4 + 2 * n); // APPENDS, STOP
    const list = unpickle(bytes.subarray(0, 4 + 2 * n + 2), { source: 'big.pkl' }) as number[];
    expect(list).toHaveLength(n);
    expect(list[n - 1]).toBe((n - 1) % 256);
  });
});

/** Runs `f` and returns its error (fails the test when it does not throw). */
function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

/** Offset of the first central-directory record of a zip. */
function centralDirectory(zip: Uint8Array): number {
  const v = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  for (let i = 0; i + 4 <= zip.length; i++) if (v.getUint32(i, true) === 0x02014b50) return i;
  throw new Error('no central directory');
}

describe('inputs found by fuzzing (test/fuzz/pickle.test.ts), shrunk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pickle-regress-'));
  const oneTensor = (spec: Partial<TensorSpec>): Uint8Array =>
    torchZip({
      ordered: new Map([
        ['w', { tensor: true, key: '0', dtype: 'float32', numel: 1, storageBytes: new Uint8Array(4), offset: 0, shape: [], stride: [], ...spec } as TensorSpec],
      ]),
    });

  it('refuses a string that is not UTF-8 with a clear error, not a TypeError', () => {
    // PROTO 2, SHORT_BINUNICODE length 1 "\xff", STOP
    const err = errorOf(() => unpickle(Uint8Array.from([0x80, 0x02, 0x8c, 0x01, 0xff, 0x2e]), { source: 'bad.pkl' }));
    expect(err).not.toBeInstanceOf(TypeError);
    expect(err.message).toBe('bad.pkl: malformed pickle (invalid UTF-8 in the string at offset 4)');
  });

  it('refuses a negative BINSTRING length instead of reading backwards', () => {
    // PROTO 4, NONE, BINSTRING length 0x80000000 (-2^31 as signed), STOP
    const err = errorOf(() => unpickle(Uint8Array.from([0x80, 0x04, 0x4e, 0x54, 0x00, 0x00, 0x00, 0x80, 0x2e]), { source: 'neg.pkl' }));
    expect(err).not.toBeInstanceOf(TypeError);
    expect(err.message).toMatch(/^neg\.pkl: malformed pickle \(negative length -2147483648/);
  });

  it('refuses a protocol-0 float that is not a number instead of reading NaN', () => {
    expect(() => unpickle(new TextEncoder().encode('Fabc\n.'), { source: 'f.pkl' })).toThrow('f.pkl: bad float literal "abc" in pickle');
    expect(unpickle(new TextEncoder().encode('F-1.5e3\n.'), { source: 'f.pkl' })).toBe(-1500);
  });

  it('refuses a central-directory entry that runs past the directory, naming the file', () => {
    const zip = oneTensor({});
    new DataView(zip.buffer).setUint16(centralDirectory(zip) + 30, 0xffff, true); // extra field length
    const path = join(dir, 'cd.pt');
    writeFileSync(path, zip);
    const err = errorOf(() => loadTorchFile(path));
    expect(err).not.toBeInstanceOf(RangeError);
    expect(err.message).toContain(`${path}: corrupt zip`);
  });

  it('refuses an entry declaring more bytes than the file holds before allocating them', () => {
    const zip = oneTensor({});
    const cd = centralDirectory(zip);
    const v = new DataView(zip.buffer);
    v.setUint32(cd + 20, 0xfffffff0, true); // compressed size
    v.setUint32(cd + 24, 0xfffffff0, true); // uncompressed size
    const path = join(dir, 'big.pt');
    writeFileSync(path, zip);
    const before = process.memoryUsage().arrayBuffers;
    expect(() => loadTorchFile(path)).toThrow(/declares 4294967280 bytes at byte \d+, past the end of the file/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(2 ** 30);
  });

  it('names the file when a deflated entry does not inflate', () => {
    const zip = torchZip(
      {
        ordered: new Map([
          ['w', { tensor: true, key: '0', dtype: 'float32', numel: 64, storageBytes: new Uint8Array(256).fill(7), offset: 0, shape: [64], stride: [1] }],
        ]),
      },
      6,
    );
    // Corrupt the first deflated entry's data: the byte after its local header and name.
    const v = new DataView(zip.buffer);
    const nameLen = v.getUint16(26, true);
    zip[30 + nameLen] = 0xff;
    const path = join(dir, 'inflate.pt');
    writeFileSync(path, zip);
    expect(() => loadTorchFile(path)).toThrow(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: entry ".*" does not inflate`));
  });

  it('names the file when a storage holds fewer bytes than it declares', () => {
    const path = join(dir, 'short.pt');
    writeFileSync(path, oneTensor({ numel: 2 ** 31 }));
    expect(() => loadTorchFile(path)).toThrow(`${path}: storage "0" has 4 bytes but 2147483648 float32 values need 8589934592`);
  });

  it('reads an empty view whose offset is past its empty storage', () => {
    const path = join(dir, 'empty.pt');
    writeFileSync(path, oneTensor({ numel: 0, storageBytes: new Uint8Array(0), offset: 1, shape: [0], stride: [1] }));
    const t = loadTorchStateDict(path).get('w')!;
    expect(t.float32()).toEqual(new Float32Array(0));
  });

  it('refuses an expanded view with more elements than its storage instead of materialising it', () => {
    const path = join(dir, 'expanded.pt');
    writeFileSync(path, oneTensor({ shape: [2 ** 40], stride: [0] }));
    expect(() => loadTorchFile(path)).toThrow(/has 1099511627776 elements, more than its storage "0" holds \(1\); expanded views are not supported/);
  });
});
