/**
 * Bad input gets a clear error naming the file and the field or tensor: config.json validation,
 * checkpoints that disagree with their config, truncated or incomplete files, bad batches.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { openCheckpoint, writeSafetensors, type RawTensor } from '../../src/io/safetensors.js';
import { parseBertConfig, parseGptNeoxConfig, type RawConfig } from '../../src/models/config.js';
import { loadModel, loadModelConfig } from '../../src/models/load.js';
import type { Model } from '../../src/models/model.js';
import { cloneModelDir, referenceSuite, type ReferenceCase } from './helpers.js';

let cases: Record<string, ReferenceCase>;
const tempDirs: string[] = [];
const track = (d: string): string => {
  tempDirs.push(d);
  return d;
};

beforeAll(async () => {
  await initEngine();
  cases = Object.fromEntries((await referenceSuite('tiny')).map((c) => [c.name, c]));
});
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

const neoxDir = (): string => cases.neox_rot25_parallel!.dir;
const bertDir = (): string => cases.bert_bare!.dir;
const configOf = (dir: string): Record<string, unknown> => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
const raw = (json: Record<string, unknown>): RawConfig => ({ path: '/models/x/config.json', json });

describe('config.json validation', () => {
  it('parses a GPT-NeoX config into the project vocabulary', () => {
    const c = parseGptNeoxConfig(raw(configOf(neoxDir())));
    expect(c).toMatchObject({
      modelType: 'gpt_neox',
      dModel: 64,
      nLayers: 3,
      nHeads: 4,
      headDim: 16,
      dFf: 256,
      rotaryDims: 4,
      parallelResidual: true,
      hiddenAct: 'gelu',
    });
    const pythia = parseGptNeoxConfig(raw({ ...configOf(neoxDir()), hidden_size: 512, num_attention_heads: 8, rotary_pct: 0.25 }));
    expect(pythia.rotaryDims).toBe(16);
  });

  it('parses a BERT config', () => {
    expect(parseBertConfig(raw(configOf(bertDir())))).toMatchObject({
      modelType: 'bert',
      dModel: 64,
      nLayers: 2,
      headDim: 16,
      typeVocabSize: 2,
      layerNormEps: 1e-12,
    });
  });

  it.each([
    ['hidden_size', undefined, /field "hidden_size" is missing, expected a positive integer/],
    ['hidden_size', 64.5, /field "hidden_size" is 64.5, expected a positive integer/],
    ['num_hidden_layers', 0, /field "num_hidden_layers" is 0, expected a positive integer/],
    ['num_attention_heads', 5, /field "num_attention_heads" is 5, which does not divide hidden_size 64/],
    ['intermediate_size', '256', /field "intermediate_size" is "256", expected a positive integer/],
    ['rotary_pct', 0, /field "rotary_pct" is 0, expected a positive number/],
    ['rotary_pct', 1.5, /field "rotary_pct" is 1.5, expected a fraction/],
    ['rotary_pct', 0.1, /field "rotary_pct" is 0.1: head size 16 x rotary_pct gives 1 rotary dims/],
    ['rotary_emb_base', -1, /field "rotary_emb_base" is -1, expected a positive number/],
    ['layer_norm_eps', undefined, /field "layer_norm_eps" is missing/],
    ['use_parallel_residual', 'yes', /field "use_parallel_residual" is "yes", expected true or false/],
    ['hidden_act', 'gelu_new', /field "hidden_act" is "gelu_new": unsupported \(supported: "gelu"\)/],
    ['tie_word_embeddings', undefined, /field "tie_word_embeddings" is missing/],
    ['vocab_size', -3, /field "vocab_size" is -3/],
    ['rope_scaling', { type: 'linear', factor: 2 }, /field "rope_scaling" .*unsupported/],
  ])('GPT-NeoX: %s = %j is rejected, naming the file and field', (field, value, message) => {
    const json = { ...configOf(neoxDir()) };
    if (value === undefined) delete json[field];
    else json[field] = value;
    expect(() => parseGptNeoxConfig(raw(json))).toThrow(/^\/models\/x\/config\.json: /);
    expect(() => parseGptNeoxConfig(raw(json))).toThrow(message);
  });

  it.each([
    ['position_embedding_type', 'relative_key', /field "position_embedding_type" is "relative_key": unsupported \(supported: "absolute"\)/],
    ['type_vocab_size', 0, /field "type_vocab_size" is 0/],
    ['max_position_embeddings', undefined, /field "max_position_embeddings" is missing/],
    ['is_decoder', true, /field "is_decoder" is true: unsupported/],
    ['hidden_act', 'relu', /field "hidden_act" is "relu": unsupported/],
  ])('BERT: %s = %j is rejected, naming the file and field', (field, value, message) => {
    const json = { ...configOf(bertDir()) };
    if (value === undefined) delete json[field];
    else json[field] = value;
    expect(() => parseBertConfig(raw(json))).toThrow(message);
  });

  it('unknown model_type names the file and the field, and lists the supported types', () => {
    const dir = track(cloneModelDir(neoxDir(), { config: { model_type: 'llama' } }));
    expect(() => loadModelConfig(dir)).toThrow(`${join(dir, 'config.json')}: field "model_type" is "llama": unsupported (supported: gpt_neox, bert)`);
    const noType = track(cloneModelDir(neoxDir(), { config: { model_type: undefined } }));
    expect(() => loadModelConfig(noType)).toThrow(/config\.json: field "model_type" is missing/);
    const proto = track(cloneModelDir(neoxDir(), { config: { model_type: 'constructor' } }));
    expect(() => loadModelConfig(proto)).toThrow(/"constructor": unsupported/);
  });

  it('a missing folder, missing config.json or invalid JSON is reported with its path', async () => {
    await expect(loadModel('/nonexistent/model')).rejects.toThrow('/nonexistent/model: model folder not found');
    const empty = track(mkdtempSync(join(tmpdir(), 'sae-eraser-empty-')));
    await expect(loadModel(empty)).rejects.toThrow(`${join(empty, 'config.json')}: cannot read the model config`);
    writeFileSync(join(empty, 'config.json'), '{"model_type": "bert",');
    await expect(loadModel(empty)).rejects.toThrow(`${join(empty, 'config.json')}: not valid JSON`);
  });
});

describe('checkpoint validation', () => {
  it('a truncated model.safetensors names the file', async () => {
    const dir = track(cloneModelDir(neoxDir()));
    const file = join(dir, 'model.safetensors');
    truncateSync(file, statSync(file).size - 100);
    await expect(loadModel(dir)).rejects.toThrow(new RegExp(`^${file}: .*(truncated|exceeds|data ends)`));
  });

  it('a config with fewer layers than the checkpoint is refused instead of loading a truncated model', async () => {
    const neox = track(cloneModelDir(neoxDir(), { config: { num_hidden_layers: 2 } }));
    await expect(loadModel(neox)).rejects.toThrow(
      `${join(neox, 'model.safetensors')}: the checkpoint holds 3 layers but the config's num_hidden_layers is 2; loading it would silently drop layers`,
    );
    const bert = track(cloneModelDir(bertDir(), { config: { num_hidden_layers: 1 } }));
    await expect(loadModel(bert)).rejects.toThrow(/the checkpoint holds 2 layers but the config's num_hidden_layers is 1/);
  });

  it('a tensor whose shape disagrees with the config names the file and tensor', async () => {
    const dir = track(cloneModelDir(neoxDir(), { config: { intermediate_size: 128 } }));
    await expect(loadModel(dir)).rejects.toThrow(
      `${join(dir, 'model.safetensors')}: tensor "gpt_neox.layers.0.mlp.dense_h_to_4h.weight" has shape [256, 64] but the config implies [128, 64] (intermediate_size x hidden_size)`,
    );
    const transposed = track(
      cloneModelDir(bertDir(), {
        tensors: (n, data, shape) => ({ dtype: 'F32', shape: n === 'encoder.layer.1.output.dense.weight' ? [...shape].reverse() : shape, data }),
      }),
    );
    await expect(loadModel(transposed)).rejects.toThrow(
      /tensor "encoder\.layer\.1\.output\.dense\.weight" has shape \[128, 64\] but the config implies \[64, 128\]/,
    );
  });

  it('a non-float tensor names the file, tensor and dtype', async () => {
    const dir = track(
      cloneModelDir(neoxDir(), {
        tensors: (n, data, shape) =>
          n === 'gpt_neox.layers.1.attention.dense.bias' ? { dtype: 'I32', shape, data: Int32Array.from(data) } : { dtype: 'F32', shape, data },
      }),
    );
    await expect(loadModel(dir)).rejects.toThrow(
      `${join(dir, 'model.safetensors')}: tensor "gpt_neox.layers.1.attention.dense.bias" has dtype I32, expected a float dtype`,
    );
  });

  it('half-precision checkpoints load (converted to float32)', async () => {
    const dir = track(cloneModelDir(bertDir(), { tensors: (_n, data, shape) => ({ dtype: 'F16', shape, data }) }));
    const model = await loadModel(dir);
    expect(model.config.dModel).toBe(64);
    model.dispose();
  });

  it('a missing tensor names the file and the tensor', async () => {
    const dir = track(
      cloneModelDir(bertDir(), { tensors: (n, data, shape) => (n === 'encoder.layer.1.attention.self.key.bias' ? undefined : { dtype: 'F32', shape, data }) }),
    );
    await expect(loadModel(dir)).rejects.toThrow(`${join(dir, 'model.safetensors')}: missing tensor "encoder.layer.1.attention.self.key.bias"`);
    const noEmbed = track(
      cloneModelDir(neoxDir(), { tensors: (n, data, shape) => (n.endsWith('embed_in.weight') ? undefined : { dtype: 'F32', shape, data }) }),
    );
    await expect(loadModel(noEmbed)).rejects.toThrow(/missing tensor "gpt_neox\.embed_in\.weight" or "embed_in\.weight"/);
  });

  it('a checkpoint without embed_out loads; asking for logits then names the missing tensor', async () => {
    const dir = track(cloneModelDir(neoxDir(), { tensors: (n, data, shape) => (n === 'embed_out.weight' ? undefined : { dtype: 'F32', shape, data }) }));
    const model = await loadModel(dir);
    const batch = { inputIds: tf.tensor2d([[1, 2, 3]], [1, 3], 'int32'), attentionMask: tf.tensor2d([[1, 1, 1]], [1, 3], 'int32') };
    const r = model.run(batch, { capture: ['layers.2.resid_out'] });
    tf.dispose(Object.values(r.captures));
    expect(() => model.run(batch, { logits: true })).toThrow(/logits need "embed_out\.weight", which the checkpoint lacks/);
    tf.dispose([batch.inputIds, batch.attentionMask]);
    model.dispose();
  });

  it('a sharded checkpoint (model.safetensors.index.json) loads like the single file', async () => {
    const sharded = track(mkdtempSync(join(tmpdir(), 'sae-eraser-sharded-')));
    writeFileSync(join(sharded, 'config.json'), readFileSync(join(bertDir(), 'config.json')));
    const shards: Record<string, RawTensor>[] = [{}, {}];
    const weightMap: Record<string, string> = {};
    for (const [name, file] of openCheckpoint(bertDir())) {
      const which = name.startsWith('encoder.layer.1.') ? 1 : 0;
      shards[which]![name] = { dtype: 'F32', shape: file.info(name).shape, data: Float32Array.from(file.float32(name)) };
      weightMap[name] = `model-0000${which + 1}-of-00002.safetensors`;
    }
    shards.forEach((t, i) => writeSafetensors(join(sharded, `model-0000${i + 1}-of-00002.safetensors`), t));
    writeFileSync(join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const single = await loadModel(bertDir());
    const fromShards = await loadModel(sharded);
    const batch = { inputIds: tf.tensor2d([[5, 6, 7, 8]], [1, 4], 'int32'), attentionMask: tf.tensor2d([[1, 1, 1, 0]], [1, 4], 'int32') };
    const a = single.run(batch, { capture: ['layers.1.resid_out'] });
    const b = fromShards.run(batch, { capture: ['layers.1.resid_out'] });
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a.captures['layers.1.resid_out']!, b.captures['layers.1.resid_out']!))).dataSync()[0])).toBe(0);
    tf.dispose([...Object.values(a.captures), ...Object.values(b.captures), batch.inputIds, batch.attentionMask]);
    single.dispose();
    fromShards.dispose();
  });

  it('bare GPT-NeoX names (GPTNeoXModel) load like gpt_neox.-prefixed ones', async () => {
    const bare = track(cloneModelDir(neoxDir(), { rename: (n) => n.replace(/^gpt_neox\./, '') }));
    expect(readFileSync(join(bare, 'model.safetensors')).includes('gpt_neox.')).toBe(false);
    const prefixed = await loadModel(neoxDir());
    const plain = await loadModel(bare);
    const batch = { inputIds: tf.tensor2d([[5, 6, 7, 8]], [1, 4], 'int32'), attentionMask: tf.tensor2d([[1, 1, 1, 0]], [1, 4], 'int32') };
    const a = prefixed.run(batch, { logits: true });
    const b = plain.run(batch, { logits: true });
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a.logits!, b.logits!))).dataSync()[0])).toBe(0);
    tf.dispose([a.logits!, b.logits!, batch.inputIds, batch.attentionMask]);
    prefixed.dispose();
    plain.dispose();
  });
});

describe('batch validation', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(bertDir());
  });
  afterAll(() => model.dispose());

  it.each([
    ['ids outside the vocabulary', [[1, 97]], [[1, 1]], 'int32', /token id 97 at flat index 1, outside the vocabulary \[0, 97\)/],
    ['float ids', [[1, 2]], [[1, 1]], 'float32', /inputIds must be an int32 \[n, seq\] tensor, got float32/],
    ['a mask of another shape', [[1, 2]], [[1, 1, 1]], 'int32', /differ in shape/],
    ['mask values other than 0/1', [[1, 2]], [[1, 2]], 'int32', /attentionMask holds 2 at flat index 1/],
  ] as const)('rejects %s', (_what, ids, mask, dtype, message) => {
    const batch = {
      inputIds: tf.tensor2d(
        ids.map((r) => [...r]),
        undefined,
        dtype,
      ),
      attentionMask: tf.tensor2d(
        mask.map((r) => [...r]),
        undefined,
        'int32',
      ),
    };
    expect(() => model.run(batch, { capture: ['embed'] })).toThrow(message);
    tf.dispose([batch.inputIds, batch.attentionMask]);
  });

  it('rejects sequences longer than max_position_embeddings', () => {
    const n = model.config.maxPositions + 1;
    const batch = { inputIds: tf.ones([1, n], 'int32') as tf.Tensor2D, attentionMask: tf.ones([1, n], 'int32') as tf.Tensor2D };
    expect(() => model.run(batch, { capture: ['embed'] })).toThrow(
      `batch has sequences of ${n} tokens; this model takes at most max_position_embeddings = ${n - 1}`,
    );
    tf.dispose([batch.inputIds, batch.attentionMask]);
  });
});
