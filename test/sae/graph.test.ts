/**
 * The SAE's ONNX form (src/sae/graph.ts) against `AffineSae`, the tfjs form, for every activation.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { OnnxGraph } from '../../src/onnx/graph.js';
import { OnnxSession } from '../../src/onnx/session.js';
import { saeNodes } from '../../src/sae/graph.js';
import { AffineSae, type SaeActivation } from '../../src/sae/sae.js';

const D = 24;
const D_SAE = 96;
const N = 37;

function sae(activation: () => SaeActivation, subtract: boolean): AffineSae {
  return new AffineSae(
    {
      wEnc: tf.tensor2d(randomNormalArray(D * D_SAE, 1, 0, 0.3), [D, D_SAE]),
      bEnc: tf.tensor1d(randomNormalArray(D_SAE, 2, -0.2, 0.3)),
      wDec: tf.tensor2d(randomNormalArray(D_SAE * D, 3, 0, 0.3), [D_SAE, D]),
      bDec: tf.tensor1d(randomNormalArray(D, 4, 0, 0.5)),
      subtractDecoderBiasFromInput: subtract,
      activation: activation(),
    },
    { format: 'sae-eraser', source: 'test' },
  );
}

async function runGraph(s: AffineSae, x: Float32Array): Promise<{ codes: Float32Array; error: Float32Array }> {
  const g = new OnnxGraph('sae-test');
  const input = g.input('x', 'float32', ['tokens', D]);
  const { codes, error } = saeNodes(g, s, input);
  g.output('codes', codes, 'float32', ['tokens', D_SAE]);
  g.output('error', error!, 'float32', ['tokens', D]);
  const session = await OnnxSession.create(g.toModel(), 'sae-test', { threads: 1 });
  try {
    const out = await session.run({ x: { type: 'float32', data: x, dims: [N, D] } });
    return { codes: out.codes!.data as Float32Array, error: out.error!.data as Float32Array };
  } finally {
    await session.dispose();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

beforeAll(async () => {
  await initEngine();
});

describe('SAE ONNX nodes', () => {
  const cases: [string, () => SaeActivation, boolean][] = [
    ['relu, b_dec subtracted', () => ({ kind: 'relu' }), true],
    ['relu, b_dec not subtracted', () => ({ kind: 'relu' }), false],
    ['topk 5', () => ({ kind: 'topk', k: 5 }), true],
    ['jumprelu', () => ({ kind: 'jumprelu', threshold: tf.tensor1d(Float32Array.from(randomNormalArray(D_SAE, 9), (v) => Math.abs(v) * 0.3)) }), true],
  ];
  for (const [name, activation, subtract] of cases) {
    it(`${name}: codes and error equal the tfjs SAE's within 1e-5`, async () => {
      const s = sae(activation, subtract);
      const x = randomNormalArray(N * D, 7);
      try {
        const [codes, error] = tf.tidy(() => {
          const t = tf.tensor2d(x, [N, D]);
          return [s.encode(t).dataSync() as Float32Array, s.error(t).dataSync() as Float32Array];
        });
        const got = await runGraph(s, x);
        expect(maxAbsDiff(got.codes, codes)).toBeLessThan(1e-5);
        expect(maxAbsDiff(got.error, error)).toBeLessThan(1e-5);
        // The activation did something: some codes are zero and some are not.
        const nonzero = got.codes.filter((v) => v !== 0).length;
        expect(nonzero).toBeGreaterThan(0);
        expect(nonzero).toBeLessThan(got.codes.length);
        if (s.activation.kind === 'topk')
          for (let t = 0; t < N; t++) expect(got.codes.subarray(t * D_SAE, (t + 1) * D_SAE).filter((v) => v !== 0).length).toBeLessThanOrEqual(5);
      } finally {
        s.dispose();
      }
    });
  }
});
