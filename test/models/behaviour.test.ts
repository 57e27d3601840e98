/**
 * Run semantics on the tiny reference checkpoints: edits flow on (and only downstream), stopAfter
 * computes no later layer, gradients reach variables used inside edits (checked against finite
 * differences), and repeated runs leak no tensors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors } from '../../src/io/safetensors.js';
import { initEngine, tf } from '../../src/engine/engine.js';
import { loadModel } from '../../src/models/load.js';
import type { Batch, Model } from '../../src/models/model.js';
import { cloneModelDir, disposeBatch, hasNaN, maskedMaxAbsDiff, maxAbsDiff, referenceBatch, referenceSuite, type ReferenceCase } from './helpers.js';

let cases: Record<string, ReferenceCase>;
const models: Record<string, Model> = {};
const batches: Record<string, Batch> = {};
const tempDirs: string[] = [];

beforeAll(async () => {
  await initEngine();
  cases = Object.fromEntries((await referenceSuite('tiny')).map((c) => [c.name, c]));
  for (const name of ['neox_rot25_parallel', 'neox_rot100_sequential', 'bert_bare']) {
    models[name] = await loadModel(cases[name]!.dir);
    batches[name] = referenceBatch(cases[name]!.expected);
  }
});

afterAll(() => {
  for (const m of Object.values(models)) m.dispose();
  for (const b of Object.values(batches)) disposeBatch(b);
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

function disposeResult(r: { captures: Record<string, tf.Tensor>; logits?: tf.Tensor }): void {
  tf.dispose(Object.values(r.captures));
  r.logits?.dispose();
}

/** A fixed random `[d]` direction (seeded) to add at a hook. */
function delta(d: number, seed = 42): tf.Tensor1D {
  return tf.randomNormal([d], 0, 1, 'float32', seed);
}

describe('edits', () => {
  it.each(['neox_rot25_parallel', 'bert_bare'])('%s: identity edits at every hook change nothing', (name) => {
    const model = models[name]!;
    const plain = model.run(batches[name]!, { capture: model.hookNames });
    const identity = Object.fromEntries(model.hookNames.map((h) => [h, (x: tf.Tensor3D) => x]));
    const edited = model.run(batches[name]!, { capture: model.hookNames, edits: identity });
    for (const h of model.hookNames) expect(maxAbsDiff(plain.captures[h]!, edited.captures[h]!), h).toBe(0);
    disposeResult(plain);
    disposeResult(edited);
  });

  it.each(['neox_rot25_parallel', 'neox_rot100_sequential', 'bert_bare'])(
    '%s: adding a delta at layers.1.mlp_out leaves earlier hooks unchanged and moves the residual by exactly the delta (GPT-NeoX)',
    (name) => {
      const model = models[name]!;
      const d = delta(model.config.dModel);
      const plain = model.run(batches[name]!, { capture: model.hookNames });
      const edited = model.run(batches[name]!, { capture: model.hookNames, edits: { 'layers.1.mlp_out': (x) => tf.add(x, d) } });
      const editedIndex = model.hookNames.indexOf('layers.1.mlp_out');
      model.hookNames.forEach((h, i) => {
        const diff = maxAbsDiff(plain.captures[h]!, edited.captures[h]!);
        if (i < editedIndex) expect(diff, `${h} is upstream of the edit`).toBe(0);
        else expect(diff, `${h} is downstream of the edit`).toBeGreaterThan(1e-3);
      });
      if (model.config.modelType === 'gpt_neox') {
        // resid_out = mlp_out + (attn_out + x) or (mlp_out + attn_out) + x: the delta passes straight through.
        const moved = tf.sub(edited.captures['layers.1.resid_out']!, plain.captures['layers.1.resid_out']!);
        expect(maxAbsDiff(moved, tf.broadcastTo(d, moved.shape))).toBeLessThan(1e-5);
        moved.dispose();
      }
      d.dispose();
      disposeResult(plain);
      disposeResult(edited);
    },
  );

  it("parallel residual: an attn_out edit does not reach the same layer's MLP; sequential: it does", () => {
    for (const [name, mlpMoves] of [
      ['neox_rot25_parallel', false],
      ['neox_rot100_sequential', true],
    ] as const) {
      const model = models[name]!;
      const d = delta(model.config.dModel, 7);
      const hooks = ['layers.0.mlp_out', 'layers.0.resid_out'];
      const plain = model.run(batches[name]!, { capture: hooks });
      const edited = model.run(batches[name]!, { capture: hooks, edits: { 'layers.0.attn_out': (x) => tf.add(x, d) } });
      const mlpDiff = maxAbsDiff(plain.captures['layers.0.mlp_out']!, edited.captures['layers.0.mlp_out']!);
      if (mlpMoves) expect(mlpDiff, name).toBeGreaterThan(1e-3);
      else expect(mlpDiff, name).toBe(0);
      d.dispose();
      disposeResult(plain);
      disposeResult(edited);
    }
  });

  it('captures return the edited value, and an edit returning the wrong shape is rejected by hook name', () => {
    const model = models.neox_rot25_parallel!;
    const r = model.run(batches.neox_rot25_parallel!, { capture: ['layers.0.attn_out'], edits: { 'layers.0.attn_out': (x) => tf.zerosLike(x) } });
    expect(tf.tidy(() => tf.max(tf.abs(r.captures['layers.0.attn_out']!)).dataSync()[0])).toBe(0);
    disposeResult(r);
    expect(() => model.run(batches.neox_rot25_parallel!, { edits: { 'layers.0.mlp_out': (x) => tf.slice(x, [0, 0, 0], [-1, -1, 3]) } })).toThrow(
      /edit at hook "layers\.0\.mlp_out" returned \[3, 12, 3\]/,
    );
  });
});

describe('stopAfter', () => {
  /** A copy of a checkpoint whose layer-`layer` weights are all NaN: any use of them shows. */
  function poisoned(name: string, layerPrefix: string): string {
    const dir = cloneModelDir(cases[name]!.dir, {
      tensors: (n, data, shape) => ({ dtype: 'F32', shape, data: n.includes(layerPrefix) ? data.fill(NaN) : data }),
    });
    tempDirs.push(dir);
    return dir;
  }

  it.each([
    ['neox_rot25_parallel', 'layers.2.'],
    ['bert_prefixed_mlm', 'encoder.layer.2.'],
  ])('%s: capturing up to layer 1 never touches layer 2 (its weights are NaN)', async (name, prefix) => {
    const model = await loadModel(poisoned(name, prefix));
    const batch = referenceBatch(cases[name]!.expected);
    const mask = batch.attentionMask.dataSync() as Int32Array;
    try {
      const early = model.run(batch, { capture: ['embed', 'layers.1.resid_out'] });
      expect(Object.keys(early.captures).sort()).toEqual(['embed', 'layers.1.resid_out']);
      expect(hasNaN(early.captures['layers.1.resid_out']!)).toBe(false);
      expect(maskedMaxAbsDiff(early.captures['layers.1.resid_out']!, cases[name]!.expected.float32('layers.1.resid_out'), mask)).toBeLessThan(1e-4);
      expect(early.logits).toBeUndefined();
      disposeResult(early);
      // The poison is real: a pass that reaches layer 2 sees it.
      const late = model.run(batch, { capture: ['layers.2.attn_out'] });
      expect(hasNaN(late.captures['layers.2.attn_out']!)).toBe(true);
      disposeResult(late);
      // An explicit stopAfter inside layer 1 also stops there.
      const stopped = model.run(batch, { capture: ['embed'], stopAfter: 'layers.1.attn_out' });
      expect(hasNaN(stopped.captures.embed!)).toBe(false);
      disposeResult(stopped);
    } finally {
      disposeBatch(batch);
      model.dispose();
    }
  });

  it('the unembedding runs only when logits are asked for (embed_out is NaN here)', async () => {
    const model = await loadModel(poisoned('neox_rot25_parallel', 'embed_out'));
    const batch = referenceBatch(cases.neox_rot25_parallel!.expected);
    try {
      const all = model.run(batch, { capture: model.hookNames });
      expect(all.logits).toBeUndefined();
      expect(Object.values(all.captures).some(hasNaN)).toBe(false);
      disposeResult(all);
      const withLogits = model.run(batch, { logits: true });
      expect(hasNaN(withLogits.logits!)).toBe(true);
      disposeResult(withLogits);
    } finally {
      disposeBatch(batch);
      model.dispose();
    }
  });

  it('rejects captures after stopAfter, logits with an early stop, and unknown hooks', () => {
    const model = models.neox_rot25_parallel!;
    const batch = batches.neox_rot25_parallel!;
    expect(() => model.run(batch, { capture: ['layers.2.resid_out'], stopAfter: 'layers.1.resid_out' })).toThrow(/come after stopAfter "layers\.1\.resid_out"/);
    expect(() => model.run(batch, { edits: { 'layers.2.mlp_out': (x) => x }, stopAfter: 'embed' })).toThrow(/would never run/);
    expect(() => model.run(batch, { logits: true, stopAfter: 'layers.1.resid_out' })).toThrow(/logits need the full pass/);
    expect(() => model.run(batch, { capture: ['layers.3.resid_out'] })).toThrow(/unknown hook "layers\.3\.resid_out".*layers\.\{0\.\.2\}/);
    expect(() => model.run(batch, { capture: ['blocks.0.hook_resid_post'] })).toThrow(/unknown hook "blocks\.0\.hook_resid_post"/);
    expect(() => model.run(batch, { edits: { 'layers.0.attn': (x) => x } })).toThrow(/unknown hook "layers\.0\.attn"/);
    expect(() => model.run(batch, { stopAfter: 'final' })).toThrow(/unknown hook "final"/);
  });

  it('a run with nothing to capture computes nothing and returns no captures', () => {
    const before = tf.memory().numTensors;
    const r = models.bert_bare!.run(batches.bert_bare!, {});
    expect(r.captures).toEqual({});
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('directionLogits', () => {
  it('reads directions through the unembedding (embed_out, no final layer norm) for GPT-NeoX; encoders have none', () => {
    const name = 'neox_rot25_parallel';
    const model = models[name]!;
    const weight = readSafetensors(join(cases[name]!.dir, 'model.safetensors')).float32('embed_out.weight');
    const d = model.config.dModel;
    const vocab = weight.length / d;
    const directions = tf.randomNormal([3, d], 0, 1, 'float32', 7) as tf.Tensor2D;
    const got = model.directionLogits!(directions);
    const want = tf.matMul(directions, tf.tensor2d(weight, [vocab, d]), false, true);
    expect(got.shape).toEqual([3, vocab]);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4);
    tf.dispose([directions, got, want]);
    expect(models.bert_bare!.directionLogits).toBeUndefined();
  });
});

describe('autograd', () => {
  it.each(['neox_rot100_sequential', 'bert_bare'])('%s: the gradient w.r.t. a variable inside an edit matches finite differences', (name) => {
    const model = models[name]!;
    const batch = batches[name]!;
    const d = model.config.dModel;
    const v = tf.variable(tf.zeros([d]), true, `edit_shift_${name}`);
    const last = `layers.${model.config.nLayers - 1}.resid_out`;
    const probe = tf.randomNormal([d], 0, 1, 'float32', 3);
    const loss = (): tf.Scalar =>
      tf.tidy(() => {
        const r = model.run(batch, { capture: [last], edits: { 'layers.0.mlp_out': (x) => tf.add(x, v) } });
        return tf.mean(tf.mul(r.captures[last]!, probe)) as tf.Scalar;
      });
    const { value, grads } = tf.variableGrads(loss, [v]);
    const g = grads[v.name]!.dataSync();
    expect(g.some((x) => x !== 0)).toBe(true);
    // Central differences on a few coordinates, in float64 arithmetic on float32 losses.
    const eps = 1e-2;
    for (const j of [0, 5, d - 1]) {
      const at = (s: number): number => {
        const e = tf.tidy(() => tf.add(tf.zeros([d]), tf.mul(tf.oneHot(tf.tensor1d([j], 'int32'), d).reshape([d]), s)));
        v.assign(e);
        e.dispose();
        const l = loss();
        const out = l.dataSync()[0]!;
        l.dispose();
        return out;
      };
      const fd = (at(eps) - at(-eps)) / (2 * eps);
      expect(Math.abs(fd - g[j]!), `coordinate ${j}: autograd ${g[j]} vs finite difference ${fd}`).toBeLessThan(1e-2 * Math.abs(g[j]!) + 1e-6);
    }
    tf.dispose([value, ...Object.values(grads), probe]);
    v.dispose();
  });
});

describe('memory', () => {
  it.each(['neox_rot25_parallel', 'bert_bare'])('%s: repeated runs (with edits, logits, gradients) leave no tensors behind', (name) => {
    const model = models[name]!;
    const batch = batches[name]!;
    const shift = tf.variable(tf.zeros([model.config.dModel]), true, `mem_shift_${name}`);
    const once = (): void => {
      disposeResult(model.run(batch, { capture: model.hookNames, edits: { 'layers.0.attn_out': (x) => tf.add(x, shift) }, logits: true }));
      const { value, grads } = tf.variableGrads(
        () =>
          tf.tidy(() =>
            tf.sum(
              model.run(batch, { capture: ['layers.1.resid_out'], edits: { 'layers.0.mlp_out': (x) => tf.mul(x, tf.add(shift, 1)) } }).captures[
                'layers.1.resid_out'
              ]!,
            ),
          ) as tf.Scalar,
        [shift],
      );
      tf.dispose([value, ...Object.values(grads)]);
    };
    once(); // warm-up: the first logits request reads the unembedding.
    const before = tf.memory().numTensors;
    for (let i = 0; i < 4; i++) once();
    expect(tf.memory().numTensors).toBe(before);
    shift.dispose();
  });
});
