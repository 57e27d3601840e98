/** `sae-eraser budget`: its flags, and one small curve end to end on the synthetic problem (test/experiment/synthetic-bios.ts). */
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../../src/cli/main.js';
import type { BudgetResult } from '../../src/experiment/budget.js';
import { writeSyntheticBios, writeTinyBert } from '../experiment/synthetic-bios.js';
import { setQuiet } from '../../src/util/progress.js';
import { quietly } from './stderr.js';

describe('sae-eraser budget', () => {
  const dir = mkdtempSync(join(tmpdir(), 'budget-cli-'));
  const config = join(dir, 'config.json');
  writeTinyBert(join(dir, 'model'));
  const texts = new Set<string>();
  writeSyntheticBios(join(dir, 'train.jsonl'), 20, 1, texts);
  writeSyntheticBios(join(dir, 'test.jsonl'), 20, 2, texts);
  writeFileSync(
    config,
    JSON.stringify({
      name: 'synthetic',
      model: join(dir, 'model'),
      maxLength: 16,
      probeHook: 'layers.1.resid_out',
      dataset: { train: join(dir, 'train.jsonl'), test: join(dir, 'test.jsonl'), professions: ['surgeon', 'nurse'] },
      methods: { original: {}, oracle: {}, leace: {}, inlp: { iterations: 1 } },
      seeds: [1, 2, 3],
      cacheDir: join(dir, 'cache'),
      probe: { epochs: 50 },
    }),
  );

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('--help shows the usage and an example', async () => {
    const r = await quietly(() => cli(['budget', '--help']));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/usage: sae-eraser budget --config FILE\.json --out DIR \[--sizes 64,256,1024,all\]/);
    expect(r.stdout).toMatch(/\nexample: sae-eraser budget --config configs\/ci-minilm-surgeon-nurse\.json --out \S+ --sizes \S+\n$/);
  });

  it('refuses bad --sizes, unknown --methods and an --out that is an input, before any work', async () => {
    const out = join(dir, 'never');
    for (const [sizes, message] of [
      ['64,abc', /--sizes: concept-set sizes: "abc" is neither a positive integer nor "all"/],
      ['256,64', /--sizes: concept-set sizes must increase: 64 comes after 256/],
      ['64,64', /--sizes: concept-set sizes: 64 is listed twice/],
      ['all,64', /"all" must come last/],
      ['', /--sizes: concept-set sizes: none given/],
    ] as const) {
      const r = await quietly(() => cli(['budget', '--config', config, '--out', out, '--sizes', sizes]));
      expect(r.code, sizes).toBe(2);
      expect(r.stderr, sizes).toMatch(message);
    }
    const methods = await quietly(() => cli(['budget', '--config', config, '--out', out, '--methods', 'leace,lace']));
    expect(methods.code).toBe(2);
    expect(methods.stderr).toMatch(/--methods: "lace" is not a method of .*config\.json \(it has original, oracle, leace, inlp\)/);
    const input = await quietly(() => cli(['budget', '--config', config, '--out', join(dir, 'train.jsonl'), '--quiet']));
    expect(input.code).toBe(1);
    expect(input.stderr).toMatch(/--out .*train\.jsonl is also an input/);
    const big = await quietly(() => cli(['budget', '--config', config, '--out', out, '--sizes', '8,500', '--quiet']));
    expect(big.code).toBe(1);
    expect(big.stderr).toMatch(/concept-set size 500 exceeds the pool: .*train\.jsonl has 80 training bios of surgeon and nurse/);
    expect(existsSync(join(out, 'concept-8'))).toBe(false);
  });

  it('runs each size into its own run folder and writes budget.json, budget.md and budget.svg', async () => {
    const out = join(dir, 'out');
    const args = ['budget', '--config', config, '--out', out, '--sizes', '16,all', '--seeds', '1', '--methods', 'original,leace', '--set', 'probe.epochs=30'];
    // An earlier call's --quiet stays set in this process (cli() only ever turns it on).
    setQuiet(false);
    const r = await quietly(() => cli(args));
    expect(r.code, r.stderr).toBe(0);
    // A progress line per size on stderr; the table on stdout.
    expect(r.stderr).toMatch(/budget 1\/2: concept set 16 -> .*concept-16 \(original, leace\)/);
    expect(r.stderr).toMatch(/budget 2\/2: concept set all \(80\) -> .*concept-all \(leace\)/);
    expect(r.stdout).toMatch(/^# synthetic: the label budget\n/);
    expect(r.stdout).toMatch(/\| leace \| [\d.]+ ± 0\.0 \|/);
    const budget = JSON.parse(readFileSync(join(out, 'budget.json'), 'utf8')) as BudgetResult;
    expect(budget.seeds).toEqual([1]);
    expect(budget.methods).toEqual(['original', 'leace']);
    expect(budget.points.map((p) => p.n_concept)).toEqual([16, 80]);
    expect(readFileSync(join(out, 'budget.md'), 'utf8')).toBe(r.stdout.slice(0, r.stdout.indexOf('\nwrote ')));
    expect(readFileSync(join(out, 'budget.svg'), 'utf8')).toMatch(/^<svg [^>]*>.*<polyline class="series" data-method="leace".*<\/svg>\n$/s);
    for (const run of ['concept-16', 'concept-all']) {
      for (const file of ['config.json', 'metrics.json', 'table.md', 'report.html']) expect(existsSync(join(out, run, file)), `${run}/${file}`).toBe(true);
    }
    const config16 = JSON.parse(readFileSync(join(out, 'concept-16', 'config.json'), 'utf8')) as { config: { probe: unknown; dataset: unknown } };
    expect(config16.config.probe).toEqual({ epochs: 30 });
    expect(config16.config.dataset).toMatchObject({ conceptSize: 16 });

    // Again, with --json: both sizes are read back, nothing runs.
    const again = await quietly(() => cli([...args, '--json']));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/budget 2\/2: concept set all \(80\): finished earlier, read from .*concept-all\/metrics\.json/);
    const json = JSON.parse(again.stdout) as BudgetResult & { out: string; files: string[] };
    expect(json.out).toBe(out);
    expect(json.files).toEqual(['budget.json', 'budget.md', 'budget.svg'].map((f) => join(out, f)));
    expect(json.points).toEqual(budget.points);
  }, 120_000);
});
