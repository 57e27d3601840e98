import { describe, expect, it } from 'vitest';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configDifferences, RunFolder, type ResolvedConfig, type RunConfigFile } from '../../src/experiment/run-folder.js';
import type { ExperimentResult, MethodSeedResult } from '../../src/experiment/results.js';

const engine = { backend: 'wasm', threads: 1 };
const open = (dir: string, config: ResolvedConfig, force = false): RunFolder => RunFolder.open(dir, config, { source: 'test.json', engine, force });

function config(over: Partial<ResolvedConfig> = {}): ResolvedConfig {
  return {
    name: 'test',
    model: 'm',
    seeds: [1, 2],
    methods: { original: { method: 'original', options: {} }, leace: { method: 'leace', options: {} } },
    ...over,
  };
}

function result(seed: number, value = 0.5): MethodSeedResult {
  const iv = { value, lo: value - 0.1, hi: value + 0.1, n: 10 };
  return {
    seed,
    profession_acc: iv,
    gender_agreement: iv,
    worst_group_acc: { ...iv, group: 'g' },
    subgroup_acc: { g: iv },
    gender_probe_acc: iv,
    units_removed: 0,
    seconds: 1,
    summary: 'x',
    supervision: { labels: ['ambiguous_task'], handPicked: false },
  };
}

const tmp = (): string => mkdtempSync(join(tmpdir(), 'run-folder-'));

describe('RunFolder', () => {
  it('writes config.json with the resolved config and provenance', () => {
    const dir = tmp();
    open(dir, config()).close();
    const file = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as RunConfigFile;
    expect(file.config).toEqual(config());
    expect(file.source).toBe('test.json');
    expect(file.provenance.package.name).toBe('sae-eraser');
    expect(file.provenance.node).toBe(process.version);
    expect(file.provenance.backend).toBe('wasm');
    expect(file.provenance.threads).toBe(1);
    // This test runs in a checkout (or a clone): the commit is a full hash.
    if (file.provenance.git !== null && 'commit' in file.provenance.git) expect(file.provenance.git.commit).toMatch(/^[0-9a-f]{40}$/);
  });

  it('resumes: results recorded before are returned, new ones appended', () => {
    const dir = tmp();
    const first = open(dir, config());
    first.record('original', 1, result(1, 0.7));
    first.close();
    const again = open(dir, config());
    expect(again.resumed).toBe(1);
    expect(again.result('original', 1)?.profession_acc.value).toBe(0.7);
    expect(again.result('original', 2)).toBeUndefined();
    again.record('original', 2, result(2, 0.6));
    const lines = readFileSync(join(dir, 'results.jsonl'), 'utf8').trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { seed: number }).seed)).toEqual([1, 2]);
  });

  it('lets seeds and methods grow, and refuses any other change, naming it', () => {
    const dir = tmp();
    const first = open(dir, config());
    first.record('original', 1, result(1));
    first.close();
    expect(() => open(dir, config({ seeds: [1, 2, 3] })).close()).not.toThrow();
    expect(() => open(dir, config({ methods: { ...config().methods, inlp: { method: 'inlp', options: {} } } })).close()).not.toThrow();
    expect(() => open(dir, config({ model: 'other' }))).toThrow(/different config \("model" differ\).*--force/);
    expect(() => open(dir, config({ methods: { leace: { method: 'leace', options: { rank: 2 } } } }))).toThrow(/options of method "leace"/);
  });

  it('keeps the tuning-part scores of a result across a resume, and refuses a folder from before the test split', () => {
    const dir = tmp();
    const dataset = { test: 'validate.jsonl', testSplit: { tuningFraction: 0.5, seed: 2019 } };
    const first = open(dir, config({ dataset }));
    const tuning = result(1, 0.4);
    first.record('original', 1, { ...result(1, 0.7), tuning });
    first.close();
    const again = open(dir, config({ dataset }));
    expect(again.result('original', 1)?.tuning?.profession_acc.value).toBe(0.4);
    again.close();
    // A folder written before the split existed: same config but for dataset.testSplit.
    const old = tmp();
    const before = open(old, config({ dataset: { test: 'validate.jsonl' } }));
    before.record('original', 1, result(1));
    before.close();
    expect(() => open(old, config({ dataset }))).toThrow(/different config \("dataset" differ\)/);
  });

  it('takes a different config when the earlier attempt scored nothing (stopped by a config error, say)', () => {
    const dir = tmp();
    const first = open(dir, config());
    first.history({ stage: 's', step: 1, values: { loss: 1 } });
    first.checkInputs({ model: 'id-1' });
    first.close();
    const again = open(dir, config({ model: 'fixed' }));
    expect(() => again.checkInputs({ model: 'id-2' })).not.toThrow();
    again.close();
    expect((JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as RunConfigFile).config.model).toBe('fixed');
    expect(existsSync(join(dir, 'history.jsonl'))).toBe(false);
  });

  it('compares configs whatever their key order', () => {
    expect(configDifferences(config({ probe: { a: 1, b: 2 } }), config({ probe: { b: 2, a: 1 } }))).toEqual([]);
    expect(configDifferences(config({ probe: { a: 1 } }), config({ probe: { a: 2 } }))).toEqual(['"probe"']);
  });

  it('refuses a finished run unless forced, and force starts afresh', () => {
    const dir = tmp();
    const folder = open(dir, config());
    folder.record('original', 1, result(1));
    folder.history({ stage: 's', step: 1, values: { loss: 1 } });
    folder.finish({ seeds: [1] } as unknown as ExperimentResult);
    expect(() => open(dir, config())).toThrow(/finished run \(metrics\.json\).*--force/);
    const fresh = open(dir, config({ model: 'other' }), true);
    expect(fresh.resumed).toBe(0);
    expect(existsSync(join(dir, 'metrics.json'))).toBe(false);
    expect(existsSync(join(dir, 'history.jsonl'))).toBe(false);
    fresh.close();
  });

  it('refuses results without a config.json rather than mixing them', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'results.jsonl'), '');
    expect(() => open(dir, config())).toThrow(/holds results but no config\.json/);
  });

  it('drops a last line cut short by a crash, and the next append starts on a fresh line', () => {
    const dir = tmp();
    const folder = open(dir, config());
    folder.record('original', 1, result(1));
    folder.close();
    appendFileSync(join(dir, 'results.jsonl'), '{"method":"leace","seed":1,"res');
    const again = open(dir, config());
    expect(again.resumed).toBe(1);
    expect(again.result('leace', 1)).toBeUndefined();
    again.record('leace', 1, result(1));
    const lines = readFileSync(join(dir, 'results.jsonl'), 'utf8').split('\n');
    expect(lines.filter((l) => l !== '').map((l) => (JSON.parse(l) as { method: string }).method)).toEqual(['original', 'leace']);
  });

  it('reports a corrupt complete line with its line number', () => {
    const dir = tmp();
    open(dir, config()).close();
    writeFileSync(join(dir, 'results.jsonl'), '{"method":"original","seed":1,"result":{}}\nnot json\n');
    expect(() => open(dir, config())).toThrow(/results\.jsonl:2: not valid JSON/);
    writeFileSync(join(dir, 'results.jsonl'), '{"method":"original","seed":"1"}\n');
    expect(() => open(dir, config())).toThrow(/results\.jsonl:1: expected \{"method", "seed", "result"\}/);
  });

  it('refuses to resume when an input changed since the run started', () => {
    const dir = tmp();
    const folder = open(dir, config());
    folder.checkInputs({ model: 'id-1', train: 'sha-a' });
    folder.record('original', 1, result(1));
    folder.close();
    const again = open(dir, config());
    expect(() => again.checkInputs({ model: 'id-1', train: 'sha-a' })).not.toThrow();
    expect(() => again.checkInputs({ model: 'id-2', train: 'sha-a' })).toThrow(/model changed since this run started/);
    again.close();
  });

  it('appends history lines with stage, step, elapsed seconds and values', () => {
    const dir = tmp();
    const folder = open(dir, config());
    folder.history({ stage: 'sae_mask/seed-1/mask', step: 1, values: { loss: 0.5, temperature: 1 } });
    folder.history({ stage: 'sae_mask/seed-1/mask', step: 2, values: { loss: 0.25, temperature: 0.5 } });
    folder.close();
    const lines = readFileSync(join(dir, 'history.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ stage: 'sae_mask/seed-1/mask', step: 2, loss: 0.25, temperature: 0.5 });
    expect(typeof lines[0]!.elapsed).toBe('number');
    // The same history as TensorBoard event files, one folder per stage.
    const board = join(dir, 'tensorboard', 'sae_mask', 'seed-1', 'mask');
    expect(readdirSync(board).filter((f) => f.startsWith('events.out.tfevents.'))).toHaveLength(1);
  });
});
