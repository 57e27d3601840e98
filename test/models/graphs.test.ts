/**
 * The ONNX forward graphs (`Model.forwardGraph`, built from the blocks of src/models/graphs.ts) run
 * on ONNX Runtime, against the tfjs forward pass (`Model.run`) and against PyTorch + transformers
 * (the references of parity.test.ts and minilm.test.ts), on right-padded batches of different
 * lengths, without and with edits (graph edits against `Model.run`'s edits and PyTorch's hooks).
 *
 * Pad positions: both executors compute every position with the same formulas (a pad is token id 0
 * at its position; its query attends to the real keys only, and for GPT-NeoX only to those before
 * it), so they hold the same finite values on both sides and ONNX is compared with tfjs at every
 * position, pads included. Against PyTorch only real tokens count, as in parity.test.ts.
 *
 * Tolerances: max abs diff 1e-4 on the random checkpoints (|x| up to ~22). On all-MiniLM-L6-v2 the
 * MLP outputs reach |x| ~ 200, where PyTorch's own fp32 result is up to ~1.7e-4 from exact
 * arithmetic; there, as in minilm.test.ts, the bound is 1e-4 plus PyTorch's fp32 error at that
 * hook (a bound relative to the hook's magnitude through that error), and ONNX must be at least as
 * close to a float64 pass as PyTorch is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { attentionBiasGraph, geluGraph, layerNormGraph, linearGraph, linearsGraph } from '../../src/models/graphs.js';
import { attentionBias, gelu, layerNorm, linearFromRows, type LayerNorm } from '../../src/models/layers.js';
import { loadModel } from '../../src/models/load.js';
import type { Batch, Edit, GraphEdit, Model } from '../../src/models/model.js';
import { OnnxGraph, type Dim, type ElementType } from '../../src/onnx/graph.js';
import { OnnxSession, type HostTensor } from '../../src/onnx/session.js';
import { skipWithout } from '../require.js';
import {
  disposeBatch,
  float64Check,
  hasNaN,
  maskedMaxAbsDiff,
  maxAbsDiff,
  MINILM_DIR,
  MINILM_SKIP_REASON,
  minilmReference,
  printDiffTable,
  referenceBatch,
  referenceSuite,
  type DiffRow,
  type ReferenceCase,
} from './helpers.js';

const TOLERANCE = 1e-4;

beforeAll(async () => {
  await initEngine();
});

/** An int32 tfjs tensor as an int64 session input. */
function int64Input(t: tf.Tensor): HostTensor {
  return { type: 'int64', data: BigInt64Array.from(t.dataSync(), (v) => BigInt(v)), dims: t.shape };
}

/** A float32 tfjs tensor as a session input. */
function floatInput(t: tf.Tensor): HostTensor {
  return { type: 'float32', data: t.dataSync() as Float32Array, dims: t.shape };
}

/** A session output as a tfjs tensor (the caller disposes it). */
function toTensor(t: HostTensor): tf.Tensor {
  if (t.type !== 'float32') throw new Error(`expected a float32 output, got ${t.type}`);
  return tf.tensor(t.data as Float32Array, [...t.dims]);
}

/** The serialized forward graph of `model` computing `hooks` (with `edits`), each a graph output named after its hook. */
function forwardModel(model: Model, hooks: readonly string[], edits?: Record<string, GraphEdit>): Uint8Array {
  const g = new OnnxGraph(`forward-${model.config.modelType}`);
  const inputs = { inputIds: g.input('input_ids', 'int64', ['n', 'seq']), attentionMask: g.input('attention_mask', 'int64', ['n', 'seq']) };
  const values = model.forwardGraph!(g, inputs, hooks, edits);
  expect(Object.keys(values).sort()).toEqual([...new Set(hooks)].sort());
  for (const h of hooks) g.output(h, values[h]!, 'float32', ['n', 'seq', model.config.dModel]);
  return g.toModel();
}

function forwardSession(model: Model, hooks: readonly string[], edits?: Record<string, GraphEdit>): Promise<OnnxSession> {
  return OnnxSession.create(forwardModel(model, hooks, edits), `forward-${model.config.modelType}`);
}

/** Runs a forward session on a batch; returns `[n, seq, d]` tensors by hook (the caller disposes them). */
async function runForward(session: OnnxSession, batch: Batch): Promise<Record<string, tf.Tensor3D>> {
  const out = await session.run({ input_ids: int64Input(batch.inputIds), attention_mask: int64Input(batch.attentionMask) });
  return Object.fromEntries(Object.entries(out).map(([h, t]) => [h, toTensor(t) as tf.Tensor3D]));
}

/** A right-padded batch from rows of token ids (each row padded with id 0 to the longest). */
function paddedBatch(rows: readonly (readonly number[])[], seq = Math.max(...rows.map((r) => r.length))): Batch {
  const ids = new Int32Array(rows.length * seq);
  const mask = new Int32Array(rows.length * seq);
  rows.forEach((r, i) => {
    ids.set(r, i * seq);
    mask.fill(1, i * seq, i * seq + r.length);
  });
  return { inputIds: tf.tensor2d(ids, [rows.length, seq], 'int32'), attentionMask: tf.tensor2d(mask, [rows.length, seq], 'int32') };
}

/** Runs a graph once on `x` (the input named `x`); returns its float32 outputs as tensors (the caller disposes them). */
async function runGraph(g: OnnxGraph, x: HostTensor): Promise<Record<string, tf.Tensor>> {
  const session = await OnnxSession.create(g.toModel(), g.name);
  try {
    const out = await session.run({ x });
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, toTensor(t)]));
  } finally {
    await session.dispose();
  }
}

/** A graph with an input `x` of the given dims. */
function graphWithInput(name: string, dims: readonly Dim[], type: ElementType = 'float32'): { g: OnnxGraph; x: string } {
  const g = new OnnxGraph(name);
  return { g, x: g.input('x', type, dims) };
}

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

describe('graph blocks against their layers.ts counterparts', () => {
  it('linearGraph and linearsGraph join a weight cut into row blocks (in = 300: blocks of 128, 128, 44) back into one matrix', async () => {
    const [tokens, dIn] = [10, 300];
    const specs = [
      { dOut: 7, w: values(7 * dIn, 1), b: values(7, 2) },
      { dOut: 5, w: values(5 * dIn, 3), b: values(5, 4) },
    ];
    const layers = specs.map((p) => linearFromRows(p.w, p.dOut, dIn, p.b));
    expect(layers[0]!.weightT.map((w) => w.shape[0])).toEqual([128, 128, 44]);
    const xs = values(tokens * dIn, 5);
    const x = tf.tensor3d(xs, [2, tokens / 2, dIn]);
    const { g, x: xv } = graphWithInput('linears', ['n', 'seq', dIn]);
    g.output('single', linearGraph(g, xv, layers[0]!, 'single'), 'float32', ['n', 'seq', 7]);
    const [a, b] = linearsGraph(g, xv, layers, 'fused');
    g.output('a', a!, 'float32', ['n', 'seq', 7]);
    g.output('b', b!, 'float32', ['n', 'seq', 5]);
    const out = await runGraph(g, floatInput(x));
    // x W^T + b in float64 from the same float32 inputs; |y| ~ 10, a float32 ulp ~ 1e-6.
    const exact = specs.map((p) =>
      Float32Array.from({ length: tokens * p.dOut }, (_, k) => {
        const [t, o] = [Math.floor(k / p.dOut), k % p.dOut];
        let acc = p.b[o]!;
        for (let i = 0; i < dIn; i++) acc += xs[t * dIn + i]! * p.w[o * dIn + i]!;
        return acc;
      }),
    );
    const all = new Int32Array(tokens).fill(1);
    for (const [name, i] of [
      ['single', 0],
      ['a', 0],
      ['b', 1],
    ] as const)
      expect(maskedMaxAbsDiff(out[name]!, exact[i]!, all), name).toBeLessThan(1e-5);
    tf.dispose([x, ...Object.values(out), ...layers.flatMap((l) => [...l.weightT, l.bias!])]);
  });

  it('geluGraph is the exact erf GELU of the tfjs path on [-8, 8]', async () => {
    const x = tf.linspace(-8, 8, 4001);
    const { g, x: xv } = graphWithInput('gelu', [4001]);
    g.output('y', geluGraph(g, xv), 'float32', [4001]);
    const out = await runGraph(g, floatInput(x));
    const expected = gelu(x);
    expect(maxAbsDiff(out.y!, expected)).toBeLessThan(1e-6);
    tf.dispose([x, expected, ...Object.values(out)]);
  });

  it('layerNormGraph is float32-accurate LayerNorm, also on rows with a large mean (mean 1000, std 0.6), where it beats layerNorm', async () => {
    const d = 384;
    const ln: LayerNorm = { weight: tf.tensor1d(values(d, 7)), bias: tf.tensor1d(values(d, 8)), eps: 1e-5 };
    const xs = values(4 * d, 9).map((v, i) => (i < 2 * d ? v : 1000 + v));
    const x = tf.tensor3d(xs, [1, 4, d]);
    const { g, x: xv } = graphWithInput('layer-norm', ['n', 'seq', d]);
    g.output('y', layerNormGraph(g, xv, ln, 'ln'), 'float32', ['n', 'seq', d]);
    const out = await runGraph(g, floatInput(x));
    const tfjs = layerNorm(x, ln);
    // Float64 LayerNorm of the same float32 inputs.
    const [w, b] = [ln.weight.dataSync(), ln.bias.dataSync()];
    const exact = new Float32Array(xs.length);
    for (let r = 0; r < 4; r++) {
      const row = Array.from(xs.subarray(r * d, (r + 1) * d));
      const mean = row.reduce((s, v) => s + v, 0) / d;
      const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / d;
      row.forEach((v, j) => (exact[r * d + j] = ((v - mean) / Math.sqrt(variance + ln.eps)) * w[j]! + b[j]!));
    }
    const rows = (from: number): Int32Array => Int32Array.from({ length: 4 }, (_, r) => (r >= from && r < from + 2 ? 1 : 0));
    expect(maskedMaxAbsDiff(out.y!, exact, rows(0)), 'plain rows').toBeLessThan(1e-6);
    // The tfjs layerNorm's float32 mean loses ~1e-4 (in normalized units) on the offset rows.
    const onnxOffset = maskedMaxAbsDiff(out.y!, exact, rows(2));
    expect(onnxOffset, 'offset rows').toBeLessThan(1e-4);
    expect(onnxOffset, 'offset rows, ONNX vs tfjs error').toBeLessThan(maskedMaxAbsDiff(tfjs, exact, rows(2)));
    tf.dispose([x, tfjs, ln.weight, ln.bias, ...Object.values(out)]);
  });

  it.each([true, false])('attentionBiasGraph equals attentionBias exactly (causal %s), an all-padding row included', async (causal) => {
    const mask = tf.tensor2d([1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0], [3, 4], 'int32');
    const { g, x } = graphWithInput('bias', ['n', 'seq'], 'int64');
    g.output('y', attentionBiasGraph(g, x, causal), 'float32', causal ? ['n', 1, 'seq', 'seq'] : ['n', 1, 1, 'seq']);
    const out = (await runGraph(g, int64Input(mask))).y!;
    const expected = attentionBias(mask, causal);
    expect(out.shape).toEqual(expected.shape);
    expect(maxAbsDiff(out, expected)).toBe(0);
    tf.dispose([mask, out, expected]);
  });
});

const vsTfjs: DiffRow[] = [];
const vsTorch: DiffRow[] = [];
afterAll(() => {
  printDiffTable('ONNX forward graph vs tfjs Model.run (max abs diff at every position, pads included; max over layers)', vsTfjs);
  printDiffTable('ONNX forward graph vs PyTorch + transformers (max abs diff at real tokens; max over layers)', vsTorch);
});

/** Builds a case's graph for every hook, runs it on the case's batch, and records its diffs to tfjs and to PyTorch. */
async function compareCase(c: ReferenceCase): Promise<{ tfjs: DiffRow[]; torch: DiffRow[] }> {
  const model = await loadModel(c.dir);
  const batch = referenceBatch(c.expected);
  const mask = batch.attentionMask.dataSync() as Int32Array;
  const session = await forwardSession(model, model.hookNames);
  const rows = { tfjs: [] as DiffRow[], torch: [] as DiffRow[] };
  try {
    expect(mask.includes(0), 'the batch should have padding').toBe(true);
    const onnx = await runForward(session, batch);
    const { captures } = model.run(batch, { capture: model.hookNames });
    for (const hook of model.hookNames) {
      expect(hasNaN(onnx[hook]!), `${c.name} ${hook} has NaN (pad positions included)`).toBe(false);
      rows.tfjs.push({ config: c.name, hook, maxAbsDiff: maxAbsDiff(onnx[hook]!, captures[hook]!) });
      rows.torch.push({ config: c.name, hook, maxAbsDiff: maskedMaxAbsDiff(onnx[hook]!, c.expected.float32(hook), mask) });
    }
    tf.dispose([...Object.values(onnx), ...Object.values(captures)]);
  } finally {
    await session.dispose();
    disposeBatch(batch);
    model.dispose();
  }
  vsTfjs.push(...rows.tfjs);
  vsTorch.push(...rows.torch);
  return rows;
}

describe('forward graph on random checkpoints vs tfjs and PyTorch', () => {
  const names = ['neox_rot25_parallel', 'neox_rot100_sequential', 'neox_rot50_sequential_tied_nobias', 'bert_bare', 'bert_prefixed_mlm'];
  let cases: ReferenceCase[] = [];
  beforeAll(async () => {
    cases = [...(await referenceSuite('tiny')), ...(await referenceSuite('pythia'))];
  });

  for (const name of [...names, 'pythia70m_shape']) {
    it(`${name}: every hook matches tfjs (every position) and PyTorch (real tokens) within ${TOLERANCE}`, async () => {
      const c = cases.find((x) => x.name === name)!;
      const rows = await compareCase(c);
      expect(rows.tfjs).toHaveLength(1 + 3 * c.nLayers);
      for (const r of [...rows.tfjs, ...rows.torch]) expect(r.maxAbsDiff, `${r.config} ${r.hook}`).toBeLessThan(TOLERANCE);
    });
  }
});

/** The edits models_reference.py applies with forward hooks for the `edited.*` expectations (as in parity.test.ts). */
const REFERENCE_EDITS: Record<string, Edit> = {
  'layers.0.mlp_out': (x) => tf.zerosLike(x),
  'layers.1.attn_out': (x) => tf.mul(x, 2),
};

/** The same edits as graph nodes. */
const REFERENCE_GRAPH_EDITS: Record<string, GraphEdit> = {
  'layers.0.mlp_out': (g, x) => g.op('Mul', [x, g.scalar(0)]),
  'layers.1.attn_out': (g, x) => g.op('Mul', [x, g.scalar(2)]),
};

describe('forward graph with edits', () => {
  let cases: ReferenceCase[] = [];
  beforeAll(async () => {
    cases = await referenceSuite('tiny');
  });

  for (const name of ['neox_rot25_parallel', 'neox_rot100_sequential', 'bert_bare']) {
    it(`${name}: edits flow on as in Model.run (every position) and PyTorch's forward hooks (real tokens), and the edited hooks return the edited values`, async () => {
      const c = cases.find((x) => x.name === name)!;
      expect(c.edits).toBe(true);
      const model = await loadModel(c.dir);
      const batch = referenceBatch(c.expected);
      const mask = batch.attentionMask.dataSync() as Int32Array;
      const last = `layers.${c.nLayers - 1}.resid_out`;
      const hooks = ['layers.0.mlp_out', 'layers.1.attn_out', last];
      const session = await forwardSession(model, hooks, REFERENCE_GRAPH_EDITS);
      try {
        const onnx = await runForward(session, batch);
        const { captures } = model.run(batch, { capture: hooks, edits: REFERENCE_EDITS });
        const plain = model.run(batch, { capture: [last] }).captures;
        for (const hook of hooks) {
          const diff = maxAbsDiff(onnx[hook]!, captures[hook]!);
          vsTfjs.push({ config: `${name} (edited)`, hook, maxAbsDiff: diff });
          expect(diff, `${hook} vs tfjs`).toBeLessThan(TOLERANCE);
        }
        const torch = maskedMaxAbsDiff(onnx[last]!, c.expected.float32(`edited.${last}`), mask);
        vsTorch.push({ config: `${name} (edited)`, hook: last, maxAbsDiff: torch });
        expect(torch, `${last} vs PyTorch`).toBeLessThan(TOLERANCE);
        expect(tf.max(tf.abs(onnx['layers.0.mlp_out']!)).dataSync()[0], 'the zeroed hook').toBe(0);
        // The edits change the output: the comparison is not between two unedited passes.
        expect(maxAbsDiff(onnx[last]!, plain[last]!)).toBeGreaterThan(100 * TOLERANCE);
        tf.dispose([...Object.values(onnx), ...Object.values(captures), ...Object.values(plain)]);
      } finally {
        await session.dispose();
        disposeBatch(batch);
        model.dispose();
      }
    });
  }

  it('the graph runs up to the last edited hook as Model.run does, passes the hook width to edits, and rejects unknown hooks and bad edit results', async () => {
    const c = cases.find((x) => x.name === 'bert_bare')!;
    const model = await loadModel(c.dir);
    try {
      const has = (bytes: Uint8Array, s: string): boolean => Buffer.from(bytes).includes(s);
      const widths: number[] = [];
      const edits: Record<string, GraphEdit> = {
        'layers.0.mlp_out': (g, x, d) => {
          widths.push(d);
          return x;
        },
      };
      expect(has(forwardModel(model, ['embed']), 'encoder.layer.0.mlp.')).toBe(false);
      expect(has(forwardModel(model, ['embed'], edits), 'encoder.layer.0.mlp.')).toBe(true);
      expect(widths).toEqual([model.config.dModel]);
      const g = new OnnxGraph('bad');
      const inputs = { inputIds: g.input('input_ids', 'int64', ['n', 'seq']), attentionMask: g.input('attention_mask', 'int64', ['n', 'seq']) };
      expect(() => model.forwardGraph!(g, inputs, ['embed'], { 'layers.9.mlp_out': (_g, x) => x })).toThrow('unknown hook "layers.9.mlp_out"');
      expect(() => model.forwardGraph!(g, inputs, ['embed'], { embed: () => undefined as unknown as string })).toThrow(
        'the graph edit at hook "embed" returned undefined; it must return a value name',
      );
    } finally {
      model.dispose();
    }
  });
});

describe.skipIf(skipWithout(MINILM_SKIP_REASON !== undefined, `the all-MiniLM-L6-v2 ONNX parity test: ${MINILM_SKIP_REASON}`))(
  'forward graph on all-MiniLM-L6-v2 real weights',
  () => {
    it(`every hook matches PyTorch and tfjs within ${TOLERANCE} (+ PyTorch's own fp32 error), and float64 as closely as PyTorch`, async () => {
      const { expected } = await minilmReference();
      const model = await loadModel(MINILM_DIR);
      const batch = referenceBatch(expected);
      const session = await forwardSession(model, model.hookNames);
      try {
        const mask = batch.attentionMask.dataSync() as Int32Array;
        expect(mask.includes(0), 'the batch should have padding').toBe(true);
        const onnx = await runForward(session, batch);
        const { captures } = model.run(batch, { capture: model.hookNames });
        for (const hook of model.hookNames) {
          expect(hasNaN(onnx[hook]!), `${hook} has NaN`).toBe(false);
          const k = float64Check(hook, onnx[hook]!, expected, mask);
          const tfjs = maskedMaxAbsDiff(onnx[hook]!, captures[hook]!.dataSync() as Float32Array, mask);
          vsTorch.push({ config: 'all-MiniLM-L6-v2', hook, maxAbsDiff: k.ours });
          vsTfjs.push({ config: 'all-MiniLM-L6-v2 (real tokens)', hook, maxAbsDiff: tfjs });
          expect(k.ours, `${hook}: ONNX vs PyTorch fp32`).toBeLessThan(TOLERANCE + k.torchExact);
          expect(tfjs, `${hook}: ONNX vs tfjs`).toBeLessThan(TOLERANCE + k.torchExact);
          expect(k.oursExact, `${hook}: ONNX vs float64`).toBeLessThan(Math.max(TOLERANCE, k.torchExact));
        }
        tf.dispose([...Object.values(onnx), ...Object.values(captures)]);
      } finally {
        await session.dispose();
        disposeBatch(batch);
        model.dispose();
      }
    });
  },
);

describe('forward graph structure and sessions', () => {
  const models: Record<string, Model> = {};
  beforeAll(async () => {
    const cases = await referenceSuite('tiny');
    for (const name of ['neox_rot25_parallel', 'bert_bare']) models[name] = await loadModel(cases.find((c) => c.name === name)!.dir);
  });
  afterAll(() => {
    for (const m of Object.values(models)) m.dispose();
  });

  /** Initializer names (weights) by model: layer 0's attention, layer 0's MLP, and a later layer. */
  const weightNames: Record<string, { attention: string; mlp: string; later: string }> = {
    neox_rot25_parallel: { attention: 'layers.0.attention.qkv.weight', mlp: 'layers.0.mlp.', later: 'layers.1.' },
    bert_bare: { attention: 'encoder.layer.0.attention.self.qkv.weight', mlp: 'encoder.layer.0.mlp.', later: 'encoder.layer.1.' },
  };

  it.each(Object.keys(weightNames))(
    '%s: the graph for layers.0.attn_out stops there (no weights of layer 0 MLP or later layers) and computes the same values as the full graph',
    async (name) => {
      const model = models[name]!;
      const names = weightNames[name]!;
      const has = (bytes: Uint8Array, s: string): boolean => Buffer.from(bytes).includes(s);
      const full = forwardModel(model, model.hookNames);
      expect([has(full, names.attention), has(full, names.mlp), has(full, names.later)]).toEqual([true, true, true]);
      const early = forwardModel(model, ['layers.0.attn_out', 'embed']);
      expect([has(early, names.attention), has(early, names.mlp), has(early, names.later)]).toEqual([true, false, false]);
      expect(early.length).toBeLessThan(full.length);

      const batch = paddedBatch([
        [5, 9, 2, 7],
        [3, 3],
      ]);
      const earlySession = await OnnxSession.create(early, `${name}-early`);
      const fullSession = await OnnxSession.create(full, name);
      const a = await runForward(earlySession, batch);
      const b = await runForward(fullSession, batch);
      expect(Object.keys(a).sort()).toEqual(['embed', 'layers.0.attn_out']);
      for (const hook of ['embed', 'layers.0.attn_out']) expect(maxAbsDiff(a[hook]!, b[hook]!), hook).toBeLessThan(1e-6);
      tf.dispose([...Object.values(a), ...Object.values(b)]);
      disposeBatch(batch);
      await Promise.all([earlySession.dispose(), fullSession.dispose()]);
    },
  );

  it.each(Object.keys(weightNames))('%s: unknown hooks are rejected, naming the valid ones', (name) => {
    const model = models[name]!;
    for (const hook of [`layers.${model.config.nLayers}.mlp_out`, 'layers.0.attn', 'logits']) {
      const g = new OnnxGraph('bad');
      const inputs = { inputIds: g.input('input_ids', 'int64', ['n', 'seq']), attentionMask: g.input('attention_mask', 'int64', ['n', 'seq']) };
      expect(() => model.forwardGraph!(g, inputs, ['embed', hook])).toThrow(`unknown hook "${hook}"`);
    }
  });

  it.each(Object.keys(weightNames))(
    '%s: one session serves batches of any size and length (1 x 5, 2 x 7, an all-padding row, 3 x 12) as tfjs does',
    async (name) => {
      const model = models[name]!;
      const session = await forwardSession(model, model.hookNames);
      const ids = (n: number, seed: number): number[] => Array.from(values(n, seed), (v) => 1 + Math.floor(((v + 1) / 2) * (model.config.vocabSize - 1)));
      const batches = [
        paddedBatch([ids(5, 1)]),
        paddedBatch([ids(7, 2), ids(3, 3)]),
        paddedBatch([ids(4, 4), []], 4),
        paddedBatch([ids(12, 5), ids(9, 6), ids(1, 7)]),
      ];
      try {
        for (const batch of batches) {
          const onnx = await runForward(session, batch);
          const { captures } = model.run(batch, { capture: model.hookNames });
          const shape = batch.inputIds.shape.join(' x ');
          for (const hook of model.hookNames) {
            expect(onnx[hook]!.shape, `${shape} ${hook}`).toEqual(captures[hook]!.shape);
            expect(hasNaN(onnx[hook]!), `${shape} ${hook} has NaN`).toBe(false);
            expect(maxAbsDiff(onnx[hook]!, captures[hook]!), `${shape} ${hook}`).toBeLessThan(TOLERANCE);
          }
          tf.dispose([...Object.values(onnx), ...Object.values(captures)]);
        }
      } finally {
        batches.forEach(disposeBatch);
        await session.dispose();
      }
    },
  );
});
