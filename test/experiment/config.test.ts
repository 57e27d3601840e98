import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyOverrides, parseExperimentConfig, readExperimentConfig } from '../../src/experiment/config.js';
import { createEraser, methodOptions } from '../../src/experiment/methods.js';
import { METHOD_NAMES } from '../../src/erasure/eraser.js';
import { projectRoot, sharedDir } from '../../src/io/shared.js';

const base = {
  model: 'some/model',
  probeHook: 'layers.3.resid_out',
  dataset: { train: 'train.jsonl', test: 'test.jsonl', professions: ['surgeon', 'nurse'] },
  methods: { original: {}, leace: {} },
};

describe('experiment config', () => {
  it('fills defaults and applies command-line overrides', () => {
    const c = parseExperimentConfig(base, 'x.json');
    expect(c.seeds).toEqual([42, 43, 44]);
    expect(c.maxLength).toBe(128);
    expect(c.dataset.conceptSize).toBe(256);
    const o = applyOverrides(c, { model: 'other', test: 't2.jsonl', seeds: [1] });
    expect([o.model, o.dataset.test, o.dataset.train, o.seeds]).toEqual(['other', 't2.jsonl', 'train.jsonl', [1]]);
  });

  it('names the file and the problem for an unknown method, field or bad value', () => {
    expect(() => parseExperimentConfig({ ...base, methods: { shiftt: {} } }, 'x.json')).toThrow(/x\.json: unknown method "shiftt" \(known: original, oracle/);
    expect(() => parseExperimentConfig({ ...base, modle: 'x' }, 'x.json')).toThrow(/x\.json: unknown field "modle" in the config/);
    expect(() => parseExperimentConfig({ ...base, seeds: [] }, 'x.json')).toThrow(/field "seeds" must be a non-empty list/);
    expect(() => parseExperimentConfig({ ...base, dataset: { ...base.dataset, limits: { ambiguous: 0 } } }, 'x.json')).toThrow(/dataset\.limits\.ambiguous must be a positive integer/);
    expect(() => parseExperimentConfig({ ...base, methods: {} }, 'x.json')).toThrow(/names no method/);
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'bad.json'), '{ not json');
    expect(() => readExperimentConfig(join(dir, 'bad.json'))).toThrow(/bad\.json: not valid JSON/);
    expect(() => readExperimentConfig(join(dir, 'missing.json'))).toThrow(/missing\.json: config file not found/);
  });

  it('the runner owns retrainHead for closed-form methods and word deletion only', () => {
    expect(methodOptions('leace', { variant: 'orth' })).toEqual({ eraser: { variant: 'orth' }, runnerRetrainsHead: true });
    expect(methodOptions('word_deletion', { retrainHead: false })).toEqual({ eraser: {}, runnerRetrainsHead: false });
    expect(methodOptions('sae_mask', { retrainHead: false })).toEqual({ eraser: { retrainHead: false }, runnerRetrainsHead: false });
    expect(() => methodOptions('inlp', { retrainHead: 'yes' })).toThrow(/inlp: option "retrainHead" must be true or false/);
  });

  it('every method name is either a probe or a registered eraser', () => {
    for (const m of METHOD_NAMES) {
      if (m === 'original' || m === 'oracle') {
        expect(() => createEraser(m, {})).toThrow(/is not an eraser/);
      } else {
        const e = createEraser(m, methodOptions(m, {}).eraser);
        expect(e.method).toBe(m);
        e.dispose();
      }
    }
  });

  it.skipIf(sharedDir() === undefined)('the shipped configs parse (needs ../shared)', () => {
    for (const f of ['minilm-surgeon-nurse.json', 'ci-minilm-surgeon-nurse.json']) {
      const c = readExperimentConfig(join(projectRoot(), 'configs', f));
      expect(Object.keys(c.methods).sort()).toEqual([...METHOD_NAMES].sort());
      expect(c.dataset.train.startsWith(sharedDir()!)).toBe(true);
    }
  });
});
