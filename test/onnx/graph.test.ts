/**
 * The ONNX graph builder (src/onnx/graph.ts) and session (src/onnx/session.ts): graphs it writes
 * load in ONNX Runtime and compute what they say, attributes keep their types, and mistakes are
 * caught when the graph is built.
 */
import { describe, expect, it } from 'vitest';
import { float, int, ints, OnnxGraph } from '../../src/onnx/graph.js';
import { meanPoolNodes } from '../../src/onnx/ops.js';
import { OnnxSession, type HostTensor } from '../../src/onnx/session.js';

/** A float output's values. */
const f32 = (t: HostTensor | undefined): Float32Array => t!.data as Float32Array;

async function run(g: OnnxGraph, feeds: Parameters<OnnxSession['run']>[0]): Promise<Awaited<ReturnType<OnnxSession['run']>>> {
  const session = await OnnxSession.create(g.toModel(), g.name, { threads: 1 });
  try {
    return await session.run(feeds);
  } finally {
    await session.dispose();
  }
}

describe('OnnxGraph', () => {
  it('writes a model ONNX Runtime runs: matmul, bias, activation, reductions, symbolic dims', async () => {
    const g = new OnnxGraph('affine');
    const x = g.input('x', 'float32', ['n', 3]);
    const w = g.constant('w', Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]);
    const b = g.constant('b', Float32Array.from([-100, 1]), [2]);
    const y = g.op('Relu', [g.op('Add', [g.op('MatMul', [x, w]), b])]);
    g.output('y', y, 'float32', ['n', 2]);
    g.output('s', g.op('ReduceSum', [y, g.ints([1])], { keepdims: int(0) }), 'float32', ['n']);
    for (const n of [1, 4]) {
      const data = Float32Array.from({ length: n * 3 }, (_, i) => i - 2);
      const out = await run(g, { x: { type: 'float32', data, dims: [n, 3] } });
      expect(out.y!.dims).toEqual([n, 2]);
      for (let r = 0; r < n; r++) {
        const row = Array.from(data.subarray(r * 3, r * 3 + 3));
        const want = [Math.max(0, row[0]! * 1 + row[1]! * 3 + row[2]! * 5 - 100), Math.max(0, row[0]! * 2 + row[1]! * 4 + row[2]! * 6 + 1)];
        expect(Array.from(f32(out.y).subarray(r * 2, r * 2 + 2))).toEqual(want);
        expect(f32(out.s)[r]).toBe(want[0]! + want[1]!);
      }
    }
  });

  it('keeps float, int and int-list attributes apart (a float attribute of 1 is not an int)', async () => {
    const g = new OnnxGraph('attrs');
    const x = g.input('x', 'float32', [2, 3]);
    // LeakyRelu's alpha must be a FLOAT attribute; 1.0 written as an int would be refused.
    g.output('leaky', g.op('LeakyRelu', [x], { alpha: float(1) }), 'float32', [2, 3]);
    g.output('t', g.op('Transpose', [x], { perm: ints([1, 0]) }), 'float32', [3, 2]);
    const out = await run(g, { x: { type: 'float32', data: Float32Array.from([-1, 2, -3, 4, -5, 6]), dims: [2, 3] } });
    expect(Array.from(f32(out.leaky))).toEqual([-1, 2, -3, 4, -5, 6]);
    expect(Array.from(f32(out.t))).toEqual([-1, 4, 2, -5, -3, 6]);
  });

  it('shares equal int constants and gives values fresh names', () => {
    const g = new OnnxGraph('names');
    expect(g.ints([1, 2])).toBe(g.ints([1, 2]));
    expect(g.ints([1, 2])).not.toBe(g.ints([2, 1]));
    const a = g.constant('w', Float32Array.of(1), [1]);
    const b = g.constant('w', Float32Array.of(1), [1]);
    expect(a).not.toBe(b);
  });

  it('refuses undefined values, reused names and constants whose size does not match their shape', () => {
    const g = new OnnxGraph('bad');
    const x = g.input('x', 'float32', [2]);
    expect(() => g.op('Relu', ['nope'])).toThrow(/Relu reads "nope", which is not defined/);
    expect(() => g.input('x', 'float32', [2])).toThrow(/"x" is already used/);
    expect(() => g.constant('c', Float32Array.of(1, 2, 3), [2, 2])).toThrow(/3 values for shape \[2, 2\]/);
    expect(() => g.output('y', 'missing', 'float32', [2])).toThrow(/reads "missing"/);
    expect(() => g.output(x, g.op('Relu', [x]), 'float32', [2])).toThrow(/"x" is already used/);
  });

  it('names the model in runtime errors (a feed of the wrong shape)', async () => {
    const g = new OnnxGraph('shape-check');
    const x = g.input('x', 'float32', [2, 3]);
    g.output('y', g.op('Relu', [x]), 'float32', [2, 3]);
    await expect(run(g, { x: { type: 'float32', data: new Float32Array(4), dims: [2, 2] } })).rejects.toThrow(/ONNX model shape-check: /);
  });

  it('meanPoolNodes averages real tokens only, whatever pad positions hold', async () => {
    const g = new OnnxGraph('pool');
    const x = g.input('x', 'float32', ['n', 'seq', 2]);
    const m = g.input('m', 'int64', ['n', 'seq']);
    g.output('p', meanPoolNodes(g, x, m), 'float32', ['n', 2]);
    const data = Float32Array.from([1, 2, 3, 4, 999, 999, /* row 2 */ 5, 6, 999, 999, 999, 999]);
    const out = await run(g, {
      x: { type: 'float32', data, dims: [2, 3, 2] },
      m: { type: 'int64', data: BigInt64Array.from([1n, 1n, 0n, 1n, 0n, 0n]), dims: [2, 3] },
    });
    expect(Array.from(f32(out.p))).toEqual([2, 3, 5, 6]);
  });
});
