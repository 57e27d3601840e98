/**
 * Forward-pass parity with PyTorch + transformers 4.57 (fp32): every hook activation and the logits
 * of random GPT-NeoX and BERT checkpoints (tiny configs covering the config switches, and one at the
 * exact Pythia-70m-deduped shape) on a right-padded batch, compared at real token positions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { loadModel } from '../../src/models/load.js';
import type { Edit } from '../../src/models/model.js';
import { disposeBatch, hasNaN, maskedMaxAbsDiff, printDiffTable, referenceBatch, referenceSuite, type DiffRow, type ReferenceCase } from './helpers.js';

const TOLERANCE = 1e-4;

/** The edits models_reference.py applies with forward hooks for the `edited.*` expectations. */
const REFERENCE_EDITS: Record<string, Edit> = {
  'layers.0.mlp_out': (x) => tf.zerosLike(x),
  'layers.1.attn_out': (x) => tf.mul(x, 2),
};

/** Runs a case's model on its batch and returns one diff row per hook (plus logits and edits). */
async function compareCase(c: ReferenceCase): Promise<DiffRow[]> {
  const model = await loadModel(c.dir);
  const batch = referenceBatch(c.expected);
  const mask = batch.attentionMask.dataSync() as Int32Array;
  const rows: DiffRow[] = [];
  const compare = (hook: string, actual: tf.Tensor, expectedName = hook): void => {
    expect(hasNaN(actual), `${c.name} ${hook} has NaN (pad positions included)`).toBe(false);
    rows.push({ config: c.name, hook, maxAbsDiff: maskedMaxAbsDiff(actual, c.expected.float32(expectedName), mask) });
  };
  try {
    const isLm = c.kind === 'gpt_neox';
    const { captures, logits } = model.run(batch, { capture: model.hookNames, logits: isLm });
    expect(Object.keys(captures).sort()).toEqual([...model.hookNames].sort());
    for (const hook of model.hookNames) compare(hook, captures[hook]!);
    if (isLm) compare('logits', logits!);
    tf.dispose([...Object.values(captures), ...(logits ? [logits] : [])]);
    if (c.edits) {
      const last = `layers.${c.nLayers - 1}.resid_out`;
      const edited = model.run(batch, { capture: [last], edits: REFERENCE_EDITS, logits: isLm });
      compare(`edited.${last}`, edited.captures[last]!);
      if (isLm) compare('edited.logits', edited.logits!);
      tf.dispose([...Object.values(edited.captures), ...(edited.logits ? [edited.logits] : [])]);
    }
  } finally {
    disposeBatch(batch);
    model.dispose();
  }
  return rows;
}

const allRows: DiffRow[] = [];
beforeAll(async () => {
  await initEngine();
});
afterAll(() => printDiffTable('forward parity vs PyTorch + transformers (max abs diff at real tokens, max over layers)', allRows));

describe('parity: tiny random GPT-NeoX and BERT checkpoints', () => {
  let cases: ReferenceCase[] = [];
  beforeAll(async () => {
    cases = await referenceSuite('tiny');
  });

  it('covers both architectures and every config switch', () => {
    expect(cases.map((c) => c.name)).toEqual([
      'neox_rot25_parallel',
      'neox_rot100_sequential',
      'neox_rot50_sequential_tied_nobias',
      'bert_bare',
      'bert_prefixed_mlm',
    ]);
  });

  for (const name of ['neox_rot25_parallel', 'neox_rot100_sequential', 'neox_rot50_sequential_tied_nobias', 'bert_bare', 'bert_prefixed_mlm']) {
    it(`${name}: every hook, logits and an edited run match within ${TOLERANCE}`, async () => {
      const c = cases.find((x) => x.name === name)!;
      const rows = await compareCase(c);
      allRows.push(...rows);
      for (const r of rows) expect(r.maxAbsDiff, `${r.config} ${r.hook}`).toBeLessThan(TOLERANCE);
    });
  }
});

describe('parity: random GPT-NeoX at the Pythia-70m-deduped shape', () => {
  let cases: ReferenceCase[] = [];
  beforeAll(async () => {
    cases = await referenceSuite('pythia');
  });

  it(`every hook and the logits match within ${TOLERANCE}`, async () => {
    const rows = await compareCase(cases[0]!);
    allRows.push(...rows);
    expect(rows).toHaveLength(1 + 3 * 6 + 1);
    for (const r of rows) expect(r.maxAbsDiff, `${r.config} ${r.hook}`).toBeLessThan(TOLERANCE);
  });
});
