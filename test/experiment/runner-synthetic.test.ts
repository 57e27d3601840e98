/**
 * The experiment runner over three seeds on a synthetic problem with known answers
 * (test/experiment/synthetic-bios.ts): a tiny random-weight BERT, bios that are bags of words with
 * three gendered pronouns and one profession word, a perfectly confounded ambiguous split and
 * balanced test subgroups. Needs neither ../shared nor Python; the SAE is trained by the runner.
 *
 * What the construction fixes, and so what is asserted:
 *  - the original probe (trained where profession and gender always agree) follows the more salient
 *    gender: its worst (anti-stereotypical) group is below chance, the oracle's far above;
 *  - the concept set and the balanced training split are the same rows with gender independent of
 *    profession, so LEACE makes the class-conditional means of gender equal on exactly the rows the
 *    fresh gender probe trains on; a logistic probe's optimum is then the constant, and the probe
 *    scores chance. With gender's mean direction gone, the head retrained on the ambiguous split
 *    reads profession, raising the worst group;
 *  - word_deletion removes every gendered token (all pronouns are in its default list), so its
 *    representations are independent of gender given the profession: gender agreement and the
 *    gender probe are at chance and the worst group matches the oracle's;
 *  - `random` ablates as many SAE features as SHIFT did, seed by seed;
 *  - each method states the labels its fit read, by its options: `shift_retrain@gender_only`, a
 *    variant of shift_retrain, reads no task labels of the concept set, and runs under its own name.
 * Beyond the construction, the SAE-feature and mask methods are held to their own claim, that they
 * remove units and raise the worst group: this problem is their easiest case (gender lives in
 * tokens of its own, and the SAE trained on them has features that follow them), not a guarantee.
 * INLP runs two iterations only (each trains a probe), so it is asserted to remove units and no more.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExperimentConfig, type ExperimentConfig } from '../../src/experiment/config.js';
import type { ExplorerData } from '../../src/experiment/explorer-data.js';
import { explorerMetrics } from '../../src/experiment/explorer-data.js';
import type { RunConfigFile } from '../../src/experiment/run-folder.js';
import { writeReport } from '../../src/report/html.js';
import { runExperiment } from '../../src/experiment/runner.js';
import type { ExperimentResult, MethodSeedResult } from '../../src/experiment/results.js';
import { aggregateSeeds, studentTQuantile, worstGroupInterval } from '../../src/eval/metrics.js';
import { renderTable } from '../../src/report/table.js';
import { judge, type Effect } from './claims.js';
import { writeSyntheticBios, writeTinyBert } from './synthetic-bios.js';

const SEEDS = [1, 2, 3];
/** Bios per (profession, gender) group in the train and test files. */
const TRAIN_PER_GROUP = 150;
const TEST_PER_GROUP = 200;
/** Test bios per group in the reporting half (dataset.testSplit's default), on which the claims are judged. */
const REPORTED_PER_GROUP = TEST_PER_GROUP / 2;

/**
 * Every method, with options that keep it fast at this size. The masks get 5 epochs (95 steps) at
 * learning rate 0.05: at the default 1e-3, Adam moves a gate logit by about 1e-3 per step, far
 * from enough to cross zero from its start 0.1 logit(0.99) = 0.46, so no unit could be removed.
 */
const MASK = { epochs: 5, lr: 0.05 };
const METHODS = {
  original: {},
  oracle: {},
  sae_mask: MASK,
  neuron_mask: MASK,
  das_mask: MASK,
  shift: { attribution: 'atp', attributionExamples: 64 },
  shift_retrain: { attribution: 'atp', attributionExamples: 64 },
  'shift_retrain@gender_only': { attribution: 'atp', attributionExamples: 64, conceptLabels: 'gender' },
  leace: {},
  inlp: { iterations: 2 },
  random: {},
  word_deletion: {},
} as const;
const ERASERS = Object.keys(METHODS).filter((m) => m !== 'original' && m !== 'oracle');

/** Claims fixed by the construction, then the methods' own (see the module note); each judged per seed (claims.ts). */
const CLAIMS: readonly { method: string; effect: Effect; reference?: string }[] = [
  { method: 'oracle', effect: 'raises the worst group' },
  { method: 'oracle', effect: 'lowers gender agreement' },
  { method: 'leace', effect: 'removes units' },
  { method: 'leace', effect: 'leaves the gender probe at chance' },
  { method: 'leace', effect: 'lowers the gender probe' },
  { method: 'leace', effect: 'raises the worst group' },
  { method: 'word_deletion', effect: 'removes units' },
  { method: 'word_deletion', effect: 'leaves gender agreement at chance' },
  { method: 'word_deletion', effect: 'leaves the gender probe at chance' },
  { method: 'word_deletion', effect: 'raises the worst group' },
  { method: 'word_deletion', effect: 'keeps the worst group', reference: 'oracle' },
  // The methods' own claims on their easiest case (see the module note).
  ...(['sae_mask', 'neuron_mask', 'das_mask', 'shift_retrain'] as const).flatMap((method) =>
    (['removes units', 'raises the worst group'] as const).map((effect) => ({ method, effect })),
  ),
  { method: 'inlp', effect: 'removes units' },
];

const METRICS = ['profession_acc', 'gender_agreement', 'worst_group_acc', 'gender_probe_acc'] as const;

describe('the runner on a synthetic problem with known answers (3 seeds, no ../shared)', () => {
  let dir = '';
  let out = '';
  let result: ExperimentResult;
  let written: ExperimentResult;
  let config: ExperimentConfig;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'runner-synthetic-'));
    out = join(dir, 'out');
    writeTinyBert(join(dir, 'model'));
    const texts = new Set<string>();
    writeSyntheticBios(join(dir, 'train.jsonl'), TRAIN_PER_GROUP, 1, texts);
    writeSyntheticBios(join(dir, 'test.jsonl'), TEST_PER_GROUP, 2, texts);
    config = parseExperimentConfig(
      {
        name: 'synthetic bios',
        model: join(dir, 'model'),
        maxLength: 16,
        probeHook: 'layers.1.resid_out',
        dataset: {
          train: join(dir, 'train.jsonl'),
          test: join(dir, 'test.jsonl'),
          professions: ['surgeon', 'nurse'],
          // The whole pool, so that the concept set is the balanced split (see the module note).
          conceptSize: 4 * TRAIN_PER_GROUP,
        },
        saes: { 'layers.1.resid_out': { path: join(dir, 'sae'), train: { dSae: 64, epochs: 20, batchSize: 256 } } },
        methods: METHODS,
        seeds: SEEDS,
        cacheDir: join(dir, 'cache'),
        probe: { epochs: 50 },
      },
      join(dir, 'synthetic.json'),
    );
    result = await runExperiment(config, { outDir: out });
    written = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as ExperimentResult;
    console.log(`\n${renderTable(result)}`);
  }, 10 * 60_000);

  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('writes metrics.json as returned, one result per method and seed, and one eraser folder per erasing method and seed', () => {
    expect(written).toEqual(JSON.parse(JSON.stringify(result)));
    expect(written.n_train).toEqual({ ambiguous: 2 * TRAIN_PER_GROUP, balanced: 4 * TRAIN_PER_GROUP, concept: 4 * TRAIN_PER_GROUP });
    // The reporting half of the test file; the tuning half's metrics are under "tuning".
    const half = { male_surgeon: REPORTED_PER_GROUP, female_surgeon: REPORTED_PER_GROUP, male_nurse: REPORTED_PER_GROUP, female_nurse: REPORTED_PER_GROUP };
    expect(written.n_test).toEqual({ balanced: 4 * REPORTED_PER_GROUP, subgroups: half });
    expect(written.tuning?.n_test).toEqual({ balanced: 4 * REPORTED_PER_GROUP, subgroups: half });
    expect(Object.keys(written.tuning?.methods ?? {})).toEqual(Object.keys(METHODS));
    expect(Object.keys(written.methods)).toEqual(Object.keys(METHODS));
    for (const [method, m] of Object.entries(written.methods))
      expect(
        m.per_seed.map((r) => r.seed),
        method,
      ).toEqual(SEEDS);
    expect(readdirSync(join(out, 'erasers')).sort()).toEqual([...ERASERS].sort());
    for (const method of ERASERS) {
      expect(readdirSync(join(out, 'erasers', method)).sort(), method).toEqual(SEEDS.map((s) => `seed-${s}`));
      for (const s of SEEDS) expect(readdirSync(join(out, 'erasers', method, `seed-${s}`)), `${method} seed ${s}`).toContain('eraser.json');
    }
  });

  it("records each SAE's quality as trained (metrics.json of its folder) in metrics.json", () => {
    const trained = JSON.parse(readFileSync(join(dir, 'sae', 'metrics.json'), 'utf8')) as { heldOut: { fve: number; l0: number; deadFraction: number } };
    // toMatchObject: other fields (the downstream cost on the probe) are checked where they are made.
    expect(written.saes).toMatchObject({
      'layers.1.resid_out': {
        path: join(dir, 'sae'),
        fve: trained.heldOut.fve,
        l0: trained.heldOut.l0,
        dead_fraction: trained.heldOut.deadFraction,
        d_sae: 64,
        arch: 'relu',
      },
    });
    expect(trained.heldOut.fve).toBeGreaterThan(0);
  });

  it('states the labels each method used, at every seed, in metrics.json and the table', () => {
    const concept = ['ambiguous_task', 'concept_gender', 'concept_task'];
    const want: Record<keyof typeof METHODS, { labels: string[]; handPicked: boolean }> = {
      original: { labels: ['ambiguous_task'], handPicked: false },
      oracle: { labels: ['balanced_task'], handPicked: false },
      sae_mask: { labels: concept, handPicked: false },
      neuron_mask: { labels: concept, handPicked: false },
      das_mask: { labels: concept, handPicked: false },
      shift: { labels: concept, handPicked: false },
      shift_retrain: { labels: concept, handPicked: false },
      'shift_retrain@gender_only': { labels: ['ambiguous_task', 'concept_gender'], handPicked: false },
      leace: { labels: ['ambiguous_task', 'concept_gender'], handPicked: false },
      inlp: { labels: ['ambiguous_task', 'concept_gender'], handPicked: false },
      random: { labels: concept, handPicked: false },
      word_deletion: { labels: ['ambiguous_task'], handPicked: true },
    };
    for (const [method, m] of Object.entries(written.methods)) {
      expect(m.supervision, method).toEqual(want[method as keyof typeof METHODS]);
      for (const r of m.per_seed) expect(r.supervision, `${method} seed ${r.seed}`).toEqual(m.supervision);
    }
    // The variant ran as its family (its saved eraser says shift_retrain) under its own name.
    const saved = JSON.parse(readFileSync(join(out, 'erasers', 'shift_retrain@gender_only', 'seed-1', 'eraser.json'), 'utf8')) as Record<string, unknown>;
    expect(saved.method).toBe('shift_retrain');
    expect(saved.options).toMatchObject({ conceptLabels: 'gender' });
    expect(written.methods['shift_retrain@gender_only']!.per_seed[0]!.summary).toMatch(/gender labels alone/);
    const table = renderTable(result);
    expect(table).toMatch(/^\| method \| labels used \| profession acc \|/m);
    expect(table).toMatch(/^\| shift_retrain@gender_only \| amb\. task, concept gender \| /m);
    expect(table).toMatch(/^\| oracle \| balanced task \| /m);
    expect(table).toMatch(/^\| word_deletion \| amb\. task \+ hand-picked \| /m);
  });

  it('summarises the seeds with Student-t intervals that hold the mean, wider than a point wherever the seeds differ', () => {
    const t = studentTQuantile(0.975, SEEDS.length - 1);
    let spread = 0;
    for (const [method, m] of Object.entries(written.methods)) {
      const series: [string, (r: MethodSeedResult) => number][] = [
        ...METRICS.map((k): [string, (r: MethodSeedResult) => number] => [k, (r) => r[k].value]),
        ...Object.keys(m.subgroup_acc).map((g): [string, (r: MethodSeedResult) => number] => [`subgroup ${g}`, (r) => r.subgroup_acc[g]!.value]),
      ];
      for (const [name, value] of series) {
        const summary = name.startsWith('subgroup ') ? m.subgroup_acc[name.slice(9)]! : m[name as (typeof METRICS)[number]];
        const values = m.per_seed.map(value);
        const expected = aggregateSeeds(values);
        const where = `${method} ${name} ${JSON.stringify(values)}`;
        expect(summary.mean, where).toBeCloseTo(expected.mean, 12);
        expect(summary.ci95[0], where).toBeLessThanOrEqual(summary.mean);
        expect(summary.ci95[1], where).toBeGreaterThanOrEqual(summary.mean);
        if (expected.std > 0) {
          spread++;
          expect(summary.std, where).toBeCloseTo(expected.std, 12);
          expect(summary.ci95[0], where).toBeCloseTo(summary.mean - (t * summary.std) / Math.sqrt(SEEDS.length), 12);
          expect(summary.ci95[1], where).toBeCloseTo(summary.mean + (t * summary.std) / Math.sqrt(SEEDS.length), 12);
          expect(summary.ci95[1] - summary.ci95[0], where).toBeGreaterThan(0);
        } else {
          expect(summary.ci95, where).toEqual([summary.mean, summary.mean]);
        }
      }
    }
    // The seeds reach the probes: the biased probe's worst group differs between them.
    expect(new Set(written.methods.original!.per_seed.map((r) => r.worst_group_acc.value)).size).toBeGreaterThan(1);
    expect(spread).toBeGreaterThan(0);
  });

  it('the original probe follows gender: its worst group is below chance and its gender agreement above, beyond their intervals', () => {
    for (const r of written.methods.original!.per_seed) {
      const worst = worstGroupInterval(r.subgroup_acc);
      expect(worst.hi, `seed ${r.seed}: ${JSON.stringify(worst)}`).toBeLessThan(0.5);
      expect(r.gender_agreement.lo, `seed ${r.seed}: ${JSON.stringify(r.gender_agreement)}`).toBeGreaterThan(0.5);
    }
  });

  for (const claim of CLAIMS) {
    it(`${claim.method} ${claim.effect}${claim.reference ? ` (vs ${claim.reference})` : ''}`, () => {
      const v = judge(written, claim.method, claim.effect, claim.reference);
      expect(v.holds, v.detail).toBe(true);
    });
  }

  it("records how SHIFT chose its features, and what the SAE costs the first seed's biased probe downstream", () => {
    for (const r of written.methods.shift!.per_seed) {
      const sel = r.selection!;
      expect(r.summary.endsWith(sel.rule), r.summary).toBe(true);
      expect(sel.parameters).toMatchObject({
        attribution: 'atp',
        attributionExamples: 64,
        selection: 'auto',
        examplesUsed: { attribution: 64, concept: 4 * TRAIN_PER_GROUP },
      });
      expect(Object.values(sel.perHook).reduce((a, h) => a + h.selected, 0)).toBe(r.units_removed);
      for (const h of Object.values(sel.perHook)) expect(h.candidates).toBeGreaterThanOrEqual(h.selected);
    }
    const cost = written.saes!['layers.1.resid_out']!.downstream!;
    // Measured on the tuning half, leaving the reporting half to the methods' scores.
    expect(written.saes!['layers.1.resid_out']!.downstream_split).toBe('tuning');
    // The clean accuracy is the original probe's at the first seed on that half; with the error term the pass changes nothing.
    expect(cost.acc_clean).toBe(written.methods.original!.per_seed[0]!.tuning!.profession_acc.value);
    expect(cost.acc_reconstructed_with_error).toBe(cost.acc_clean);
    expect(cost.delta).toBeCloseTo(cost.acc_reconstructed - cost.acc_clean, 12);
    expect(cost.n).toBe(written.tuning!.n_test.balanced);
  });

  it('random ablates as many SAE features as SHIFT did, seed by seed', () => {
    const shift = written.methods.shift!.per_seed.map((r) => r.units_removed);
    expect(shift.every((u) => u > 0)).toBe(true);
    expect(written.methods.random!.per_seed.map((r) => r.units_removed)).toEqual(shift);
  });

  it('leaves a run folder: resolved config with provenance, a results line per pair, history and TensorBoard curves, explorer data per seed', () => {
    const file = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as RunConfigFile;
    expect(file.config.seeds).toEqual(SEEDS);
    expect(Object.keys(file.inputs ?? {}).sort()).toEqual(['model', 'sae layers.1.resid_out', 'test', 'train']);
    expect(file.provenance.node).toBe(process.version);
    const lines = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(SEEDS.length * Object.keys(METHODS).length);
    const stages = new Set(
      readFileSync(join(out, 'history.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { stage: string }).stage),
    );
    for (const stage of ['sae layers.1.resid_out', 'original/seed-1/probe', 'oracle/seed-2/probe', 'sae_mask/seed-3/mask', 'das_mask/seed-1/mask']) {
      expect(stages, stage).toContain(stage);
    }
    expect(readdirSync(join(out, 'tensorboard', 'sae_mask', 'seed-1', 'mask'))[0]).toMatch(/^events\.out\.tfevents\./);
    for (const seed of SEEDS) {
      const data = JSON.parse(readFileSync(join(out, 'explorer', `seed-${seed}.json`), 'utf8')) as ExplorerData;
      // It shows the bios the table reports on: the reporting half, not the tuning half.
      expect(data.texts).toHaveLength(4 * REPORTED_PER_GROUP);
      expect(data.splits.balanced!.rows).toHaveLength(written.n_test.balanced);
      // Every method that zero-ablates SAE features at the probe hook with the biased or its own head is listed...
      for (const method of ['original', 'oracle', 'shift', 'shift_retrain', 'random']) expect(Object.keys(data.methods), `seed ${seed}`).toContain(method);
      // ...and reproduces its recorded metrics exactly; the others say why they are not listed.
      for (const [method, { head, features }] of Object.entries(data.methods)) {
        const got = explorerMetrics(data, head, features).values;
        const r = written.methods[method]!.per_seed.find((x) => x.seed === seed)!;
        expect(got.profession_acc, `${method} seed ${seed}`).toBe(r.profession_acc.value);
        expect(got.worst_group_acc, `${method} seed ${seed}`).toBe(r.worst_group_acc.value);
      }
      expect(Object.keys(data.excluded)).toEqual(expect.arrayContaining(['leace', 'word_deletion']));
    }
    const report = writeReport(out);
    expect(report.partial).toBe(false);
    expect(readFileSync(report.path, 'utf8')).toContain('synthetic bios');
  });

  it(
    'resumes an interrupted run: the pairs not yet scored run again and the metrics come out the same; a finished run is refused',
    async () => {
      const again = join(dir, 'resumed');
      cpSync(out, again, { recursive: true });
      // Interrupted during seed 3: its results, metrics.json and the explorer file of seed 3 never written.
      rmSync(join(again, 'metrics.json'));
      rmSync(join(again, 'explorer', 'seed-3.json'));
      const kept = readFileSync(join(again, 'results.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .filter((l) => (JSON.parse(l) as { seed: number }).seed !== 3);
      writeFileSync(join(again, 'results.jsonl'), `${kept.join('\n')}\n`);
      const resumed = await runExperiment(config, { outDir: again });
      const strip = (r: ExperimentResult): unknown => JSON.parse(JSON.stringify(r.methods, (k: string, v: unknown) => (k === 'seconds' ? undefined : v)));
      expect(strip(resumed)).toEqual(strip(result));
      expect(existsSync(join(again, 'explorer', 'seed-3.json'))).toBe(true);
      await expect(runExperiment(config, { outDir: again })).rejects.toThrow(/finished run \(metrics\.json\)/);
    },
    5 * 60_000,
  );
});
