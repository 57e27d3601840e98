/**
 * Erasers' edits as ONNX nodes (`Eraser.graphEdits`) against their tfjs edits (`edits()`): for every
 * eraser family that can act upstream of the probe hook, the pooled representation at the probe
 * hook of a forward pass with the edits upstream (`pooledWithEditsOnExecutor` on ONNX Runtime)
 * equals the tfjs pass (`pooledWithEdits`) within 1e-4, on a random BERT and a random GPT-NeoX;
 * with the edits at the probe hook itself it equals the exact pooled path (`erasePooled`) on the
 * activation cache; and `erasedPooled` runs upstream erasers on the executor `chooseExecutor` picks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { buildActivationCache, type ActivationCache } from '../../src/cache/cache.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { AffineEraser, inlpOptionsSchema, leaceOptionsSchema } from '../../src/erasure/closed-form.js';
import { erasedPooled, erasedPooledSplits } from '../../src/erasure/erased.js';
import { supervision, type Eraser, type EraserSae, type FitContext, type LabelledSplit } from '../../src/erasure/eraser.js';
import { zeroAblationGraphEdit } from '../../src/erasure/ablate.js';
import { FeatureAblationEraser } from '../../src/erasure/feature-ablation.js';
import { withHead } from '../../src/erasure/head.js';
import type { AffineErasure } from '../../src/erasure/linear-algebra.js';
import { dasMaskOptionsSchema, DAS_MASK } from '../../src/erasure/mask/das-mask.js';
import { freezeMask, MaskEraser } from '../../src/erasure/mask/eraser.js';
import { NEURON_MASK, neuronMaskOptionsSchema } from '../../src/erasure/mask/neuron-mask.js';
import { resolveMaskConfig, type MaskConfig, type MaskMethod } from '../../src/erasure/mask/options.js';
import { SAE_MASK, saeMaskOptionsSchema } from '../../src/erasure/mask/sae-mask.js';
import type { MaskKind, UnitSpace } from '../../src/erasure/mask/units.js';
import { setExecutor } from '../../src/models/executor.js';
import { loadModel } from '../../src/models/load.js';
import type { Batch, GraphEdit, HookName, Model } from '../../src/models/model.js';
import { openModel } from '../../src/models/open.js';
import { pooledWithEdits, pooledWithEditsOnExecutor } from '../../src/models/pool.js';
import { OnnxGraph } from '../../src/onnx/graph.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { AffineSae, type SaeActivation } from '../../src/sae/sae.js';
import { parseStrict } from '../../src/util/schema.js';
import { setQuiet } from '../../src/util/progress.js';
import { writeTinyBert } from '../cli/tiny-bert.js';
import { maxAbsDiff, printDiffTable, referenceSuite, wordTokenizer, type DiffRow } from '../models/helpers.js';

const TOLERANCE = 1e-4;
/** Upstream hooks the edits act at, and the hook the probe reads. */
const MLP_HOOK = 'layers.0.mlp_out';
const EDIT_HOOK = 'layers.0.resid_out';
const PROBE_HOOK = 'layers.1.resid_out';
const TEXTS = [
  'The nurse said hello.',
  'He performs cardiac surgery at the hospital every single weekday.',
  'Short.',
  'She is a nurse and a pilot.',
  'A software engineer who writes compilers and teaches on weekends.',
  'They paint.',
  'The professor of law published three books about contracts.',
];
const ROWS = Int32Array.from(TEXTS.keys());
const D_SAE = 64;

type SaeKind = SaeActivation['kind'];

interface Fixture {
  name: string;
  model: Model;
  tokenize: (texts: string[]) => Batch;
  /** Random SAEs of each activation kind for the upstream hooks, and the cache's SAE at the probe hook. */
  saes: Record<SaeKind, AffineSae>;
  probeSae: AffineSae;
  /** The cache over TEXTS: pooled activations at EDIT_HOOK and PROBE_HOOK, SAE codes at PROBE_HOOK. */
  cache: ActivationCache;
  ctx: FitContext;
}

function randomSae(d: number, kind: SaeKind, seed: number): AffineSae {
  const activation: SaeActivation =
    kind === 'relu'
      ? { kind }
      : kind === 'topk'
        ? { kind, k: 8 }
        : { kind, threshold: tf.tensor1d(Float32Array.from(randomNormalArray(D_SAE, seed + 4, 0, 0.2), Math.abs)) };
  return new AffineSae(
    {
      wEnc: tf.tensor2d(randomNormalArray(d * D_SAE, seed, 0, 1 / Math.sqrt(d)), [d, D_SAE]),
      bEnc: tf.tensor1d(randomNormalArray(D_SAE, seed + 1, -0.1, 0.1)),
      wDec: tf.tensor2d(randomNormalArray(D_SAE * d, seed + 2, 0, 0.3), [D_SAE, d]),
      bDec: tf.tensor1d(randomNormalArray(d, seed + 3, 0, 0.1)),
      subtractDecoderBiasFromInput: kind !== 'topk',
      activation,
    },
    { format: 'sae-eraser', source: `random ${kind} SAE` },
  );
}

const split: LabelledSplit = { rows: ROWS, y: new Int32Array(TEXTS.length), z: new Int32Array(TEXTS.length), texts: TEXTS };

let dir: string;
const fixtures: Fixture[] = [];
const rows: DiffRow[] = [];

async function fixture(name: string, model: Model, tokenize: (texts: string[]) => Batch, seed: number): Promise<Fixture> {
  const d = model.config.dModel;
  const saes = { relu: randomSae(d, 'relu', seed), jumprelu: randomSae(d, 'jumprelu', seed + 10), topk: randomSae(d, 'topk', seed + 20) };
  const probeSae = randomSae(d, 'relu', seed + 30);
  const cache = await buildActivationCache(
    { modelId: name, hooks: [EDIT_HOOK, PROBE_HOOK], saes: { [PROBE_HOOK]: { sae: probeSae, id: 'probe-sae' } }, tokenizerId: name, texts: TEXTS },
    { model, tokenize, root: join(dir, name), batchSize: 3, executor: 'onnx' },
  );
  const ctx: FitContext = {
    model,
    tokenize,
    cache,
    recache: () => Promise.reject(new Error('graph-edits test: recache() was called')),
    batchSize: 3,
    saes: { [MLP_HOOK]: saes.topk, [EDIT_HOOK]: saes.relu, [PROBE_HOOK]: probeSae },
    probeHook: PROBE_HOOK,
    probe: new LinearProbe(d, 2),
    train: split,
    concept: split,
    seed: 42,
  };
  return { name, model, tokenize, saes, probeSae, cache, ctx };
}

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
  dir = mkdtempSync(join(tmpdir(), 'graph-edits-'));
  const bert = await openModel(writeTinyBert(join(dir, 'bert'), { d: 32, layers: 2, heads: 4, maxPositions: 64 }));
  fixtures.push(await fixture('tiny BERT', bert.model, (texts) => bert.tokenize(texts), 100));
  const neox = (await referenceSuite('tiny')).find((c) => c.name === 'neox_rot25_parallel')!;
  const model = await loadModel(neox.dir);
  fixtures.push(await fixture('tiny GPT-NeoX', model, wordTokenizer(model.config.vocabSize), 200));
});

afterAll(() => {
  printDiffTable('pooled representation at the probe hook, ONNX graph edits vs tfjs edits (max abs diff)', rows);
  for (const f of fixtures) {
    for (const sae of [...Object.values(f.saes), f.probeSae]) sae.dispose();
    f.ctx.probe.dispose();
    f.model.dispose();
  }
  rmSync(dir, { recursive: true, force: true });
});

/** A random affine erasure x - L R (x - b) of rank k (b = 0 when `bias` is false). */
function randomErasure(d: number, k: number, seed: number, bias: boolean): AffineErasure {
  return {
    dim: d,
    rank: k,
    left: Float64Array.from(randomNormalArray(d * k, seed, 0, 0.5)),
    right: Float64Array.from(randomNormalArray(k * d, seed + 1, 0, 0.5)),
    bias: bias ? Float64Array.from(randomNormalArray(d, seed + 2, 0, 0.3)) : null,
  };
}

/** Every fourth feature: some active, some not, on every token. */
const FEATURES = Array.from({ length: D_SAE / 4 }, (_, i) => 4 * i + 1);

/**
 * `space` with `saeUnits` set, for SAE-feature masks: src/erasure/mask/sae-mask.ts does not expose
 * its SAE yet, and the ONNX form needs it. Everything else is the real space's.
 */
function withSaeUnits(space: UnitSpace, sae: EraserSae, keepError: boolean): UnitSpace {
  return {
    hook: space.hook,
    nUnits: space.nUnits,
    dIn: space.dIn,
    unitKind: space.unitKind,
    variables: space.variables,
    saeUnits: { sae, keepError },
    pooledInputs: (cache, r) => space.pooledInputs(cache, r),
    frame: () => space.frame(),
    freeze: () => space.freeze(),
    checkpointInfo: () => space.checkpointInfo(),
    savedTensors: () => space.savedTensors(),
    dispose: () => space.dispose(),
  };
}

/** A frozen mask eraser of `kind` at `hooks`, by default with random logits (N(0.3, 1): most units kept, some removed). */
function maskEraser(
  f: Fixture,
  kind: MaskKind,
  options: Record<string, unknown>,
  hooks: readonly HookName[],
  saeAt?: (hook: HookName) => EraserSae,
  logits: (units: number, i: number) => Float32Array = (units, i) => randomNormalArray(units, 7 + i, 0.3, 1),
): MaskEraser {
  const schema = { sae_mask: saeMaskOptionsSchema, neuron_mask: neuronMaskOptionsSchema, das_mask: dasMaskOptionsSchema }[kind.method as MaskMethod & string];
  const config: MaskConfig = resolveMaskConfig(parseStrict(schema!, { ...options, hooks: [...hooks] }, kind.method), f.ctx);
  const ctx: FitContext = saeAt === undefined ? f.ctx : { ...f.ctx, saes: Object.fromEntries(hooks.map((h) => [h, saeAt(h)])) };
  const masks = hooks.map((hook, i) => {
    const created = kind.create(hook, ctx, config);
    const space = saeAt === undefined ? created : withSaeUnits(created, saeAt(hook), config.keepError!);
    return freezeMask(space, logits(space.nUnits, i), config);
  });
  return new MaskEraser(kind.method, PROBE_HOOK, masks, config);
}

/** An eraser family, tested at `upstream` (and, unless `atProbe` is false, at the probe hook). */
interface Family {
  name: string;
  /** The SAE of the upstream hooks (default ReLU); at the probe hook it is always the cache's. */
  sae?: SaeKind;
  upstream: readonly HookName[];
  atProbe?: false;
  /** The eraser at `hooks`, with the SAE `saeAt(hook)` at each. */
  make(f: Fixture, hooks: readonly HookName[], saeAt: (hook: HookName) => AffineSae): Eraser;
}

const BOTH = [MLP_HOOK, EDIT_HOOK];

const leace = (f: Fixture, hook: HookName): AffineEraser =>
  new AffineEraser('leace', hook, randomErasure(f.model.config.dModel, 3, 5, true), parseStrict(leaceOptionsSchema, {}, 'leace'));

const families: Family[] = [
  ...(['relu', 'jumprelu', 'topk'] as const).map((kind): Family => ({
    name: `shift, ${kind} SAE`,
    sae: kind,
    upstream: BOTH,
    ...(kind === 'relu' ? {} : { atProbe: false as const }),
    make: (_f, hooks, saeAt) =>
      FeatureAblationEraser.create(
        'shift',
        Object.fromEntries(hooks.map((h) => [h, saeAt(h)])),
        PROBE_HOOK,
        Object.fromEntries(hooks.map((h) => [h, FEATURES])),
        { selectedBy: 'test', supervision: supervision(['ambiguous_task'], true) },
      ),
  })),
  { name: 'leace (affine, bias)', upstream: [EDIT_HOOK], make: (f, hooks) => leace(f, hooks[0]!) },
  {
    name: 'inlp (linear)',
    upstream: [EDIT_HOOK],
    make: (f, hooks) => new AffineEraser('inlp', hooks[0]!, randomErasure(f.model.config.dModel, 2, 9, false), parseStrict(inlpOptionsSchema, {}, 'inlp')),
  },
  { name: 'neuron_mask, hard gate', upstream: BOTH, make: (f, hooks) => maskEraser(f, NEURON_MASK, {}, hooks) },
  { name: 'neuron_mask, soft gate', upstream: BOTH, make: (f, hooks) => maskEraser(f, NEURON_MASK, { hardMask: false, tempEnd: 0.5 }, hooks) },
  { name: 'das_mask, hard gate', upstream: BOTH, make: (f, hooks) => maskEraser(f, DAS_MASK, { rank: 6 }, hooks) },
  { name: 'das_mask, soft gate', upstream: BOTH, make: (f, hooks) => maskEraser(f, DAS_MASK, { rank: 6, hardMask: false, tempEnd: 0.5 }, hooks) },
  { name: 'sae_mask, hard gate, error kept', upstream: BOTH, make: (f, hooks, saeAt) => maskEraser(f, SAE_MASK, {}, hooks, saeAt) },
  {
    name: 'sae_mask, soft gate, error kept',
    upstream: BOTH,
    make: (f, hooks, saeAt) => maskEraser(f, SAE_MASK, { hardMask: false, tempEnd: 0.5 }, hooks, saeAt),
  },
  { name: 'sae_mask, hard gate, no error', upstream: BOTH, make: (f, hooks, saeAt) => maskEraser(f, SAE_MASK, { keepError: false }, hooks, saeAt) },
  {
    name: 'sae_mask, soft gate, no error, top-k SAE',
    sae: 'topk',
    upstream: BOTH,
    atProbe: false,
    make: (f, hooks, saeAt) => maskEraser(f, SAE_MASK, { hardMask: false, tempEnd: 0.5, keepError: false }, hooks, saeAt),
  },
  {
    name: 'retrained head over leace',
    upstream: [EDIT_HOOK],
    make: (f, hooks) => withHead(leace(f, hooks[0]!), new LinearProbe(f.model.config.dModel, 2)),
  },
];

/** Pooled representations at the probe hook with `eraser`'s edits on tfjs and on ONNX Runtime (the caller disposes them). */
async function bothExecutors(f: Fixture, eraser: Eraser): Promise<{ tfjs: tf.Tensor2D; onnx: tf.Tensor2D }> {
  const graph = eraser.graphEdits?.();
  expect(graph, `${eraser.method} has an ONNX form`).toBeDefined();
  expect(Object.keys(graph!).sort()).toEqual(Object.keys(eraser.edits()).sort());
  const tfjs = pooledWithEdits(f.model, f.tokenize, TEXTS, PROBE_HOOK, eraser.edits(), { batchSize: 3 });
  const onnx = await pooledWithEditsOnExecutor(f.model, f.tokenize, TEXTS, PROBE_HOOK, eraser.edits(), graph, { batchSize: 3, executor: 'onnx' });
  return { tfjs, onnx };
}

describe('graph edits upstream of the probe hook equal the tfjs edits', () => {
  for (const family of families) {
    for (const modelName of ['tiny BERT', 'tiny GPT-NeoX']) {
      it(`${family.name} at ${family.upstream.join(' and ')}, ${modelName}: within ${TOLERANCE}, and the edits change the representation`, async () => {
        const f = fixtures.find((x) => x.name === modelName)!;
        const before = tf.memory().numTensors;
        const eraser = family.make(f, family.upstream, () => f.saes[family.sae ?? 'relu']);
        try {
          const { tfjs, onnx } = await bothExecutors(f, eraser);
          const plain = f.cache.pooled(PROBE_HOOK, ROWS);
          const diff = maxAbsDiff(onnx, tfjs);
          rows.push({ config: `${modelName}: ${family.name}`, hook: PROBE_HOOK, maxAbsDiff: diff });
          expect(diff).toBeLessThan(TOLERANCE);
          expect(maxAbsDiff(tfjs, plain), 'the edits matter').toBeGreaterThan(100 * TOLERANCE);
          tf.dispose([tfjs, onnx, plain]);
        } finally {
          eraser.dispose();
        }
        expect(tf.memory().numTensors, 'tensors left').toBe(before);
      });
    }
  }
});

describe('graph edits at the probe hook equal the exact pooled path', () => {
  for (const family of families.filter((x) => x.atProbe !== false)) {
    it(`${family.name}, tiny BERT: the ONNX pass with the edits at ${PROBE_HOOK} equals erasePooled on the cache within ${TOLERANCE}`, async () => {
      const f = fixtures[0]!;
      const before = tf.memory().numTensors;
      const eraser = family.make(f, [PROBE_HOOK], () => f.probeSae);
      try {
        const fast = eraser.erasePooled(f.cache, ROWS);
        expect(fast, 'a pooled fast path').toBeDefined();
        const onnx = await pooledWithEditsOnExecutor(f.model, f.tokenize, TEXTS, PROBE_HOOK, eraser.edits(), eraser.graphEdits!(), {
          batchSize: 3,
          executor: 'onnx',
        });
        const diff = maxAbsDiff(onnx, fast!);
        rows.push({ config: `tiny BERT: ${family.name} (at the probe hook, vs erasePooled)`, hook: PROBE_HOOK, maxAbsDiff: diff });
        expect(diff).toBeLessThan(TOLERANCE);
        tf.dispose([onnx, fast!]);
      } finally {
        eraser.dispose();
      }
      expect(tf.memory().numTensors, 'tensors left').toBe(before);
    });
  }
});

describe('graph edits of SAE-feature masks that keep or remove every feature', () => {
  const cases = [
    { name: 'every feature kept, error kept (x unchanged)', options: {}, logit: 1 },
    { name: 'every feature removed, no error (x = b_dec)', options: { keepError: false }, logit: -1 },
  ];
  for (const c of cases) {
    it(`${c.name}: ONNX equals tfjs within ${TOLERANCE}`, async () => {
      const f = fixtures[0]!;
      const before = tf.memory().numTensors;
      const eraser = maskEraser(
        f,
        SAE_MASK,
        c.options,
        BOTH,
        () => f.saes.relu,
        (units) => new Float32Array(units).fill(c.logit),
      );
      try {
        const { tfjs, onnx } = await bothExecutors(f, eraser);
        const diff = maxAbsDiff(onnx, tfjs);
        rows.push({ config: `tiny BERT: sae_mask, ${c.name}`, hook: PROBE_HOOK, maxAbsDiff: diff });
        expect(diff).toBeLessThan(TOLERANCE);
        tf.dispose([tfjs, onnx]);
      } finally {
        eraser.dispose();
      }
      expect(tf.memory().numTensors, 'tensors left').toBe(before);
    });
  }
});

describe('zeroAblationGraphEdit', () => {
  it('encodes only the ablated features with a ReLU or JumpReLU SAE (k columns of W_enc), and every feature with a top-k SAE', () => {
    const f = fixtures[0]!;
    const d = f.model.config.dModel;
    const bytes = (sae: AffineSae): number => {
      const g = new OnnxGraph('ablation');
      const x = g.input('x', 'float32', ['n', 'seq', d]);
      const edit = zeroAblationGraphEdit('shift', EDIT_HOOK, sae, Int32Array.from(FEATURES))!;
      g.output('y', edit(g, x, d), 'float32', ['n', 'seq', d]);
      return g.toModel().length;
    };
    // The W_enc columns (float32) of the features outside S: about this many bytes more in the
    // top-k graph than in a restricted one (without the restriction the sizes would be about equal).
    const skipped = (D_SAE - FEATURES.length) * d * 4;
    expect(bytes(f.saes.topk) - bytes(f.saes.relu)).toBeGreaterThan(skipped / 2);
    expect(bytes(f.saes.topk) - bytes(f.saes.jumprelu)).toBeGreaterThan(skipped / 2);
  });
});

describe('erasedPooled and the executor choice', () => {
  it('erasedPooled runs an upstream eraser on ONNX Runtime by default (setExecutor onnx) and on tfjs when asked', async () => {
    const f = fixtures[0]!;
    const before = tf.memory().numTensors;
    const eraser = families[0]!.make(f, BOTH, () => f.saes.relu);
    try {
      const { tfjs, onnx } = await bothExecutors(f, eraser);
      const viaOnnx = await (async () => {
        setExecutor('onnx');
        try {
          return await erasedPooled(eraser, split, f.ctx);
        } finally {
          setExecutor(undefined);
        }
      })();
      const viaTfjs = await (async () => {
        setExecutor('tfjs');
        try {
          return await erasedPooled(eraser, split, f.ctx);
        } finally {
          setExecutor(undefined);
        }
      })();
      // The same graph and batches give the same numbers; the two executors differ by float rounding only.
      expect(maxAbsDiff(viaOnnx, onnx)).toBe(0);
      expect(maxAbsDiff(viaTfjs, tfjs)).toBe(0);
      expect(maxAbsDiff(viaOnnx, viaTfjs)).toBeLessThan(TOLERANCE);
      tf.dispose([tfjs, onnx, viaOnnx, viaTfjs]);
    } finally {
      eraser.dispose();
    }
    expect(tf.memory().numTensors, 'tensors left').toBe(before);
  });

  it('erasedPooledSplits equals erasedPooled split by split, for overlapping splits, from one pass over their distinct texts', async () => {
    const f = fixtures[0]!;
    const before = tf.memory().numTensors;
    const eraser = families[0]!.make(f, BOTH, () => f.saes.relu);
    const sub = (from: number, to: number): LabelledSplit => ({
      rows: split.rows.slice(from, to),
      y: split.y.slice(from, to),
      z: split.z.slice(from, to),
      texts: split.texts.slice(from, to),
    });
    // Overlapping and repeated: the whole split, its second half, its first half.
    const half = Math.floor(split.texts.length / 2);
    const parts = [split, sub(half, split.texts.length), sub(0, half)];
    let tokenized = 0;
    const ctx = {
      ...f.ctx,
      tokenize: (texts: string[]): Batch => {
        tokenized += texts.length;
        return f.ctx.tokenize(texts);
      },
    };
    try {
      const together = await erasedPooledSplits(eraser, parts, ctx);
      expect(tokenized, 'each distinct text runs once').toBe(split.texts.length);
      const apart = await Promise.all(parts.map((p) => erasedPooled(eraser, p, f.ctx)));
      together.forEach((X, i) => {
        expect(X.shape).toEqual([parts[i]!.texts.length, f.model.config.dModel]);
        // Batches differ between the two (different neighbours): float rounding only.
        expect(maxAbsDiff(X, apart[i]!), `split ${i}`).toBeLessThan(TOLERANCE);
      });
      tf.dispose([...together, ...apart]);
    } finally {
      eraser.dispose();
    }
    expect(tf.memory().numTensors, 'tensors left').toBe(before);
  });

  it('edits without an ONNX form run on tfjs by default; asking for ONNX for them is an error, not a silent fallback', async () => {
    const f = fixtures[0]!;
    const sae = f.saes.relu;
    const noGraph: EraserSae = {
      dIn: sae.dIn,
      dSae: sae.dSae,
      encode: (x) => sae.encode(x),
      decode: (c) => sae.decode(c),
      decoderDirections: () => sae.decoderDirections(),
    };
    const eraser = FeatureAblationEraser.create(
      'shift',
      { [EDIT_HOOK]: noGraph },
      PROBE_HOOK,
      { [EDIT_HOOK]: FEATURES },
      { selectedBy: 'test', supervision: supervision(['ambiguous_task'], true) },
    );
    try {
      expect(eraser.graphEdits()).toBeUndefined();
      const viaDefault = await erasedPooled(eraser, split, f.ctx);
      const tfjs = pooledWithEdits(f.model, f.tokenize, TEXTS, PROBE_HOOK, eraser.edits(), { batchSize: 3 });
      expect(maxAbsDiff(viaDefault, tfjs)).toBe(0);
      tf.dispose([viaDefault, tfjs]);
      await expect(pooledWithEditsOnExecutor(f.model, f.tokenize, TEXTS, PROBE_HOOK, eraser.edits(), undefined, { executor: 'onnx' })).rejects.toThrow(
        'the ONNX executor was asked for, but these edits have no ONNX form; use the tfjs executor',
      );
    } finally {
      eraser.dispose();
    }
  });

  it('on ONNX Runtime, an edit after the probe hook and an edit of the wrong width are refused as on tfjs', async () => {
    const f = fixtures[0]!;
    const keep: GraphEdit = (_g, x) => x;
    await expect(pooledWithEditsOnExecutor(f.model, f.tokenize, TEXTS, EDIT_HOOK, {}, { [PROBE_HOOK]: keep }, { executor: 'onnx' })).rejects.toThrow(
      `hooks "${PROBE_HOOK}" come after stopAfter "${EDIT_HOOK}" and would never run`,
    );
    const d = f.model.config.dModel;
    const wide = new AffineEraser('leace', EDIT_HOOK, randomErasure(d + 1, 2, 3, true), parseStrict(leaceOptionsSchema, {}, 'leace'));
    try {
      await expect(pooledWithEditsOnExecutor(f.model, f.tokenize, TEXTS, PROBE_HOOK, wide.edits(), wide.graphEdits(), { executor: 'onnx' })).rejects.toThrow(
        `leace eraser at ${EDIT_HOOK}: expects width ${d + 1}, the activation has width ${d}`,
      );
    } finally {
      wide.dispose();
    }
  });
});
