import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadTorchFile, PickledTensor, PySet, PyTuple, unpickle, UnsafePickleError, type PyValue } from '../../src/io/pickle.js';
import { runPythonReference } from '../reference/python.js';

let ref: string;
beforeAll(() => {
  ref = runPythonReference('sae_reference.py', ['--part', 'pickle']);
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
