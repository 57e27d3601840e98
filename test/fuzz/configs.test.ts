/**
 * Fuzzing the JSON configs read from outside: model config.json (src/models/config.ts), the model
 * checkpoint's tensor checks (src/models/checkpoint.ts) and experiment configs
 * (src/experiment/config.ts). Generated valid configs parse to exactly the values they hold;
 * edited ones (deleted fields, swapped types, boundary values, unknown fields, byte edits of the
 * text) either parse to values that still match the file or fail with an error naming the file.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBertConfig, parseGptNeoxConfig, readConfigFile, type RawConfig } from '../../src/models/config.js';
import { Checkpoint } from '../../src/models/checkpoint.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { parseExperimentConfig, readExperimentConfig } from '../../src/experiment/config.js';
import { breathe, FuzzTally, fuzzParams } from './budget.js';
import { applyByteEdits, applyJsonEdits, byteEdits, expectClear, fuzzDir, jsonEdits } from './mutate.js';

const tmp = fuzzDir('configs');
const modelValid = new FuzzTally('model config.json: generated');
const modelMutated = new FuzzTally('model config.json: edited');
const checkpoints = new FuzzTally('model checkpoint: edited tensors');
const experimentValid = new FuzzTally('experiment config: generated');
const experimentMutated = new FuzzTally('experiment config: edited');
afterAll(() => {
  for (const t of [modelValid, modelMutated, checkpoints, experimentValid, experimentMutated]) t.save();
  tmp.done();
});

const size = fc.integer({ min: 1, max: 64 });

/** A valid GPT-NeoX or BERT config.json and the architecture it names. */
const modelConfig = fc.oneof(
  fc
    .record({
      heads: fc.integer({ min: 1, max: 8 }),
      headDim: fc.integer({ min: 1, max: 16 }).map((h) => 2 * h),
      layers: size,
      ff: size,
      vocab: size,
      pos: size,
    })
    .chain((c) =>
      fc.record({
        model_type: fc.constant('gpt_neox'),
        hidden_size: fc.constant(c.heads * c.headDim),
        num_attention_heads: fc.constant(c.heads),
        num_hidden_layers: fc.constant(c.layers),
        intermediate_size: fc.constant(c.ff),
        vocab_size: fc.constant(c.vocab),
        max_position_embeddings: fc.constant(c.pos),
        // rotary dims = floor(headDim * pct) must be even and >= 2: pick them, then the fraction that gives them.
        rotary_pct: fc.integer({ min: 1, max: c.headDim / 2 }).map((half) => (2 * half) / c.headDim),
        rotary_emb_base: fc.double({ min: 1, max: 1e6, noNaN: true }),
        layer_norm_eps: fc.double({ min: 1e-12, max: 1e-3, noNaN: true }),
        use_parallel_residual: fc.boolean(),
        hidden_act: fc.constant('gelu'),
        tie_word_embeddings: fc.boolean(),
        attention_bias: fc.option(fc.boolean(), { nil: undefined }),
        rope_scaling: fc.option(fc.constant(null), { nil: undefined }),
        torch_dtype: fc.constantFrom('float32', 'float16'),
      }),
    ),
  fc.record({ heads: fc.integer({ min: 1, max: 8 }), headDim: fc.integer({ min: 1, max: 16 }), layers: size, ff: size, vocab: size, pos: size }).chain((c) =>
    fc.record({
      model_type: fc.constant('bert'),
      hidden_size: fc.constant(c.heads * c.headDim),
      num_attention_heads: fc.constant(c.heads),
      num_hidden_layers: fc.constant(c.layers),
      intermediate_size: fc.constant(c.ff),
      vocab_size: fc.constant(c.vocab),
      max_position_embeddings: fc.constant(c.pos),
      hidden_act: fc.constant('gelu'),
      layer_norm_eps: fc.double({ min: 1e-12, max: 1e-3, noNaN: true }),
      type_vocab_size: size,
      position_embedding_type: fc.option(fc.constant('absolute'), { nil: undefined }),
      is_decoder: fc.option(fc.constant(false), { nil: undefined }),
      hidden_dropout_prob: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
  ),
);

/** Drops undefined fields, as JSON does. */
const asJson = (o: object): Record<string, unknown> => JSON.parse(JSON.stringify(o)) as Record<string, unknown>;

function parseModel(raw: RawConfig): ReturnType<typeof parseGptNeoxConfig> | ReturnType<typeof parseBertConfig> {
  return raw.json.model_type === 'bert' ? parseBertConfig(raw) : parseGptNeoxConfig(raw);
}

/** The parsed config agrees with the file it came from: every field read is the file's value, renamed. */
function checkAgainstFile(parsed: ReturnType<typeof parseModel>, json: Record<string, unknown>): void {
  expect(parsed.modelType).toBe(json.model_type);
  expect([parsed.dModel, parsed.nHeads, parsed.nLayers, parsed.dFf, parsed.vocabSize, parsed.maxPositions]).toEqual([
    json.hidden_size,
    json.num_attention_heads,
    json.num_hidden_layers,
    json.intermediate_size,
    json.vocab_size,
    json.max_position_embeddings,
  ]);
  expect(parsed.headDim * parsed.nHeads).toBe(parsed.dModel);
  expect(parsed.layerNormEps).toBe(json.layer_norm_eps);
  if (parsed.modelType === 'gpt_neox') {
    expect([parsed.rotaryPct, parsed.rotaryBase, parsed.parallelResidual, parsed.tieWordEmbeddings, parsed.attentionBias]).toEqual([
      json.rotary_pct,
      json.rotary_emb_base,
      json.use_parallel_residual,
      json.tie_word_embeddings,
      json.attention_bias ?? true,
    ]);
    expect(parsed.rotaryDims).toBe(Math.floor(parsed.headDim * parsed.rotaryPct));
    expect(parsed.rotaryDims % 2 === 0 && parsed.rotaryDims >= 2 && parsed.rotaryDims <= parsed.headDim).toBe(true);
  } else {
    expect(parsed.typeVocabSize).toBe(json.type_vocab_size);
  }
}

describe('model config.json', () => {
  it('parses every generated config to exactly its values', async () => {
    await fc.assert(
      fc.asyncProperty(modelConfig, async (cfg) => {
        await breathe();
        const json = asJson(cfg);
        const path = tmp.write('config.json', JSON.stringify(json, null, 2));
        const got = modelValid.run(() => parseModel(readConfigFile(path)));
        if (!got.ok) throw got.error;
        checkAgainstFile(got.value, json);
      }),
      fuzzParams(150),
    );
  });

  it('parses edited configs to values that match the file, or refuses them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(modelConfig, jsonEdits(), async (cfg, edits) => {
        await breathe();
        const json = applyJsonEdits(asJson(cfg), edits);
        const path = tmp.write('config.json', JSON.stringify(json));
        const got = modelMutated.run(() => parseModel(readConfigFile(path)));
        if (!got.ok) expectClear(got.error, path);
        else checkAgainstFile(got.value, json as Record<string, unknown>);
      }),
      fuzzParams(300),
    );
  });

  it('refuses byte-edited config text naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(modelConfig, byteEdits(), async (cfg, edits) => {
        await breathe();
        const path = tmp.write('config.json', applyByteEdits(new TextEncoder().encode(JSON.stringify(asJson(cfg))), edits));
        const got = modelMutated.run(() => parseModel(readConfigFile(path)));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(200),
    );
  });
});

describe('model checkpoint tensor checks', () => {
  it('accepts exactly the tensors whose dtype and shape match, naming the file otherwise', async () => {
    const dtype = fc.constantFrom('F32', 'F16', 'BF16', 'I32', 'U8' as const);
    const shape = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 });
    await fc.assert(
      fc.asyncProperty(shape, dtype, shape, fc.boolean(), fc.constantFrom('', 'gpt_neox.'), async (actual, dt, expected, present, prefix) => {
        await breathe();
        const dir = tmp.path('model');
        const count = actual.reduce((a, b) => a * b, 1);
        const data =
          dt === 'F32' ? new Float32Array(count) : dt === 'I32' ? new Int32Array(count) : dt === 'U8' ? new Uint8Array(count) : new Uint16Array(count);
        writeSafetensors(`${dir}/model.safetensors`, { [`${prefix}${present ? 'w' : 'other'}`]: { dtype: dt, shape: actual, data } });
        const got = checkpoints.run(() =>
          Checkpoint.open(dir)
            .withPrefix(['gpt_neox.', ''], present ? 'w' : 'other')
            .check('w', expected, 'a test weight'),
        );
        const matches = present && ['F32', 'F16', 'BF16'].includes(dt) && actual.length === expected.length && actual.every((d, i) => d === expected[i]);
        expect(got.ok).toBe(matches);
        if (!got.ok) expectClear(got.error, dir);
      }),
      fuzzParams(150),
    );
  });
});

const METHODS = ['original', 'oracle', 'leace', 'inlp', 'shift', 'random', 'sae_mask'] as const;

/** A valid experiment config (methods with their default options) and the values it must parse to. */
const experimentConfig = fc.record(
  {
    name: fc.string({ minLength: 1, maxLength: 10 }),
    model: fc.string({ minLength: 1, maxLength: 20 }),
    probeHook: fc.constantFrom('embed', 'layers.0.resid_out', 'layers.3.mlp_out'),
    maxLength: fc.integer({ min: 1, max: 4096 }),
    dataset: fc.record(
      {
        train: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !s.includes('${shared}')),
        test: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !s.includes('${shared}')),
        professions: fc.tuple(fc.oneof(fc.string(), fc.integer()), fc.oneof(fc.string(), fc.integer())),
        conceptSize: fc.integer({ min: 1, max: 10_000 }),
      },
      { requiredKeys: ['train', 'test', 'professions'] },
    ),
    methods: fc.uniqueArray(fc.constantFrom(...METHODS), { minLength: 1 }).map((ms) => Object.fromEntries(ms.map((m) => [m, {}]))),
    seeds: fc.uniqueArray(fc.integer(), { minLength: 1, maxLength: 5 }),
    cacheDir: fc.string({ minLength: 1, maxLength: 10 }),
    batchSize: fc.integer({ min: 1, max: 512 }),
  },
  { requiredKeys: ['model', 'probeHook', 'dataset', 'methods'] },
);

describe('experiment config', () => {
  it('parses every generated config to exactly its values, with the documented defaults', async () => {
    await fc.assert(
      fc.asyncProperty(experimentConfig, async (cfg) => {
        await breathe();
        const path = tmp.write('experiment.json', JSON.stringify(cfg));
        const got = experimentValid.run(() => readExperimentConfig(path));
        if (!got.ok) throw got.error;
        const c = got.value;
        expect(c.source).toBe(path);
        expect([c.name, c.model, c.probeHook, c.maxLength, c.cacheDir, c.batchSize]).toEqual([
          cfg.name ?? 'experiment',
          cfg.model,
          cfg.probeHook,
          cfg.maxLength ?? 128,
          cfg.cacheDir ?? '.cache/activations',
          cfg.batchSize ?? 32,
        ]);
        expect(c.seeds).toEqual(cfg.seeds ?? [42, 43, 44]);
        expect([c.dataset.train, c.dataset.test, c.dataset.professions, c.dataset.conceptSize]).toEqual([
          cfg.dataset.train,
          cfg.dataset.test,
          cfg.dataset.professions,
          cfg.dataset.conceptSize ?? 256,
        ]);
        expect(Object.keys(c.methods)).toEqual(Object.keys(cfg.methods));
      }),
      fuzzParams(100),
    );
  });

  it('parses edited configs to the values they hold, or refuses them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(experimentConfig, jsonEdits(), async (cfg, edits) => {
        await breathe();
        const raw = applyJsonEdits(cfg, edits) as Record<string, unknown>;
        const got = experimentMutated.run(() => parseExperimentConfig(raw, 'edited.json'));
        if (!got.ok) {
          expectClear(got.error, 'edited.json');
          return;
        }
        // Nothing is silently ignored or coerced: what parsed is what the file says.
        const c = got.value;
        expect(c.model).toBe(raw.model);
        expect(c.probeHook).toBe(raw.probeHook);
        expect(Object.keys(c.methods).sort()).toEqual(Object.keys(raw.methods as object).sort());
        if (raw.seeds !== undefined) expect(c.seeds).toEqual(raw.seeds);
        if (raw.maxLength !== undefined) expect(c.maxLength).toBe(raw.maxLength);
      }),
      fuzzParams(300),
    );
  });

  it('refuses byte-edited config files naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(experimentConfig, byteEdits(), async (cfg, edits) => {
        await breathe();
        const path = tmp.write('experiment.json', applyByteEdits(new TextEncoder().encode(JSON.stringify(cfg, null, 1)), edits));
        const got = experimentMutated.run(() => readExperimentConfig(path));
        if (!got.ok) expectClear(got.error, path);
      }),
      fuzzParams(200),
    );
  });
});
