/**
 * The offline experiment at CI size (configs/ci-minilm-surgeon-nurse.json): all-MiniLM-L6-v2,
 * surgeon vs nurse from ../shared, an SAE trained here, every method, one seed. It runs once
 * (beforeAll) and prints the table; each claim about a method is its own test, so the report shows
 * which hold.
 *
 * Claims are judged on the test bios' sampling noise, per seed (test/experiment/claims.ts), on the
 * reporting half of the validation file: 100, 48, 25 and 100 bios in the four subgroups and 100
 * balanced bios, so a change must be beyond its 95% interval, roughly 13 to 25 points. Claims known not to hold at this size are expected failures (`it.fails`): the
 * day one starts holding, its test fails, and the entry below should lose its `knownFailure`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readExperimentConfig } from '../../src/experiment/config.js';
import { setExecutor } from '../../src/models/executor.js';
import { runExperiment } from '../../src/experiment/runner.js';
import type { ExperimentResult } from '../../src/experiment/results.js';
import { renderTable } from '../../src/report/table.js';
import { writeReport } from '../../src/report/html.js';
import { explorerMetrics, type ExplorerData } from '../../src/experiment/explorer-data.js';
import { CHROMIUM, chromiumMissing, openPage } from '../report/chromium.js';
import { METHOD_NAMES, type MethodName } from '../../src/erasure/eraser.js';
import { projectRoot, sharedDir } from '../../src/io/shared.js';
import { skipWithout } from '../require.js';
import { judge, type Effect, type Verdict } from './claims.js';

const shared = sharedDir();

interface Claim {
  /** A method of the config: a family name or a family@variant. */
  method: string;
  effect: Effect;
  /** The method compared against; default the original biased probe. */
  reference?: MethodName;
  /** Why the claim does not hold at CI size; present makes the test an expected failure. */
  knownFailure?: string;
}

/** What every erasing method is for: remove something, fix the worst group, stop predicting gender, keep the task. */
const ERASER_EFFECTS: readonly Effect[] = [
  'removes units',
  'raises the worst group',
  'lowers gender agreement',
  'lowers the gender probe',
  'keeps profession accuracy',
];

/**
 * Known failures at CI size, by method and effect, with why. The reporting half's subgroups hold 25
 * to 100 bios (male_nurse has 25), so a worst-group change needs about 30 points to clear its
 * interval, and the 100 balanced bios need about 13 for gender agreement.
 */
const KNOWN_FAILURES: Partial<Record<string, Partial<Record<Effect, string>>>> = {
  sae_mask: {
    // Its recipe was chosen for a 4x ReLU SAE; on the 16x TopK one it removes 14 features and moves little.
    'raises the worst group': 'the rise, 40 to 52 points, is within the interval of 25 male nurses',
    'lowers gender agreement': 'within noise of the original (72 to 69)',
    'lowers the gender probe': 'within noise of the original (93 to 96)',
  },
  neuron_mask: {
    'raises the worst group': 'it removes neurons, but the predictions stay within noise of the original',
    'lowers gender agreement': 'within noise of the original',
    'lowers the gender probe': 'within noise of the original',
  },
  das_mask: {
    'lowers gender agreement': 'the drop, 72 to 60 points, just fails to clear the interval of 100 balanced bios',
  },
  leace: {
    'raises the worst group': 'the rise, 40 to 62 points, is within the interval of 25 male nurses',
    'lowers gender agreement': 'the drop, 72 to 59 points, just fails to clear the interval of 100 balanced bios',
  },
  inlp: {
    'raises the worst group': 'the rise, 40 to 56 points, is within the interval',
    'lowers gender agreement': 'the drop, 72 to 67 points, is within the interval',
  },
};

const ERASERS: readonly string[] = [
  'sae_mask',
  'neuron_mask',
  'das_mask',
  'shift',
  'shift_retrain',
  'shift_retrain@probe_hook',
  'shift_retrain@gender_only',
  'leace',
  'inlp',
  'word_deletion',
  'word_deletion@sae',
];

const CLAIMS: readonly Claim[] = [
  // The baseline: the probe trained on ambiguous data fails its worst group and follows gender; the oracle does not.
  { method: 'oracle', effect: 'raises the worst group' },
  { method: 'oracle', effect: 'lowers gender agreement' },
  ...ERASERS.flatMap((method) => ERASER_EFFECTS.map((effect) => ({ method, effect, knownFailure: KNOWN_FAILURES[method]?.[effect] }))),
  // The control: as many random SAE features ablated as SHIFT did, which changes nothing beyond noise.
  { method: 'random', effect: 'removes units' },
  { method: 'random', effect: 'stays within noise' },
];

const claimName = (c: Claim): string => `${c.method} ${c.effect} (vs ${c.reference ?? 'original'})`;

describe.skipIf(skipWithout(shared === undefined, 'the offline experiment needs ../shared (set SAE_ERASER_SHARED)'))('the offline experiment (CI size)', () => {
  let out = '';
  let result: ExperimentResult;
  let written: ExperimentResult;
  const verdicts = new Map<string, Verdict>();

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), 'run-'));
    const config = readExperimentConfig(join(projectRoot(), 'configs/ci-minilm-surgeon-nurse.json'));
    result = await runExperiment(config, { outDir: out });
    written = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as ExperimentResult;
    // Judged here, so that an error while judging fails the suite instead of passing an expected failure.
    for (const c of CLAIMS) verdicts.set(claimName(c), judge(written, c.method, c.effect, c.reference));
    const lines = CLAIMS.map((c) => {
      const v = verdicts.get(claimName(c))!;
      const status = v.holds ? (c.knownFailure ? 'HOLDS (marked known failure)' : 'holds') : c.knownFailure ? 'known failure' : 'DOES NOT HOLD';
      return `${status.padEnd(28)} ${v.detail}`;
    });
    console.log(
      `\n${renderTable(result)}\nmetrics.json: ${join(out, 'metrics.json')}\nClaims (differences in points with 95% intervals):\n${lines.join('\n')}`,
    );
  }, 45 * 60_000);

  it('writes metrics.json as returned, with every method, its four subgroups and its saved eraser', () => {
    expect(written).toEqual(JSON.parse(JSON.stringify(result)));
    // Every family, some also as variants (family@variant).
    expect([...new Set(Object.keys(written.methods).map((k) => k.split('@')[0]))].sort()).toEqual([...METHOD_NAMES].sort());
    for (const [method, m] of Object.entries(written.methods)) {
      expect(Object.keys(m.subgroup_acc).sort(), method).toEqual(['female_nurse', 'female_surgeon', 'male_nurse', 'male_surgeon']);
      if (method !== 'original' && method !== 'oracle') expect(existsSync(join(out, 'erasers', method, 'seed-42', 'eraser.json')), method).toBe(true);
    }
  });

  it('reports per-seed Wilson intervals on the test bios, and with one seed an across-seed summary that is the point itself', () => {
    expect(written.seeds).toEqual([42]);
    for (const [method, m] of Object.entries(written.methods)) {
      expect(m.per_seed.map((r) => r.seed)).toEqual([42]);
      const [r] = m.per_seed;
      const perSeed = {
        profession_acc: r!.profession_acc,
        gender_agreement: r!.gender_agreement,
        worst_group_acc: r!.worst_group_acc,
        gender_probe_acc: r!.gender_probe_acc,
      };
      for (const [key, s] of Object.entries(perSeed)) {
        const summary = m[key as keyof typeof perSeed];
        // One seed: the summary carries no spread, so the claims use the per-seed intervals.
        expect(summary, `${method}.${key}`).toEqual({ mean: s.value, std: 0, ci95: [s.value, s.value] });
        expect(0 <= s.lo && s.lo <= s.value && s.value <= s.hi && s.hi <= 1 && s.hi - s.lo > 0, `${method}.${key}: ${JSON.stringify(s)}`).toBe(true);
      }
      expect(r!.profession_acc.n).toBe(written.n_test.balanced);
      for (const [g, acc] of Object.entries(r!.subgroup_acc)) expect(acc.n, `${method}.${g}`).toBe(written.n_test.subgroups[g]);
    }
  });

  for (const claim of CLAIMS) {
    const name = claimName(claim);
    const check = (): void => {
      const v = verdicts.get(name)!;
      expect(v.holds, v.detail).toBe(true);
    };
    if (claim.knownFailure === undefined) it(name, check);
    else it.fails(`${name}: known failure at CI size (${claim.knownFailure})`, check);
  }

  it("builds report.html from the run folder, whose explorer reproduces every listed method's metrics", () => {
    const report = writeReport(out);
    expect(report.partial).toBe(false);
    const data = JSON.parse(readFileSync(join(out, 'explorer', 'seed-42.json'), 'utf8')) as ExplorerData;
    // SHIFT across hooks edits upstream of the probe, which the explorer's affine view cannot show; at the probe's hook it can.
    expect(Object.keys(data.methods)).toEqual(expect.arrayContaining(['original', 'oracle', 'shift_retrain@probe_hook', 'shift_retrain@gender_only']));
    const lines: string[] = [];
    for (const [method, { head, features }] of Object.entries(data.methods)) {
      const page = explorerMetrics(data, head, features).values;
      const r = written.methods[method]!.per_seed[0]!;
      expect(page.profession_acc, method).toBe(r.profession_acc.value);
      expect(page.gender_agreement, method).toBe(r.gender_agreement.value);
      expect(page.worst_group_acc, method).toBe(r.worst_group_acc.value);
      lines.push(
        `${method.padEnd(14)} explorer ${[page.profession_acc, page.gender_agreement, page.worst_group_acc].map((v) => (100 * v!).toFixed(1)).join(' / ')}  metrics.json ${[r.profession_acc, r.gender_agreement, r.worst_group_acc].map((v) => (100 * v.value).toFixed(1)).join(' / ')}  (${features.length} features)`,
      );
    }
    console.log(`report: ${report.path}\nexplorer vs metrics.json (profession / gender agreement / worst group):\n${lines.join('\n')}`);
  });

  it(
    'gives the same results when every forward pass runs on tfjs instead of ONNX Runtime (a fresh cache, same SAE)',
    async () => {
      const config = readExperimentConfig(join(projectRoot(), 'configs/ci-minilm-surgeon-nurse.json'));
      // The methods whose representations come from the cache (the executor's work) or from re-caching edited texts.
      const methods = ['original', 'oracle', 'sae_mask', 'leace', 'word_deletion'] as const;
      const tfjsConfig = {
        ...config,
        // These methods read only the probe hook's SAE; the upstream SAEs would only slow the tfjs cache.
        saes: { [config.probeHook]: config.saes[config.probeHook]! },
        cacheDir: mkdtempSync(join(tmpdir(), 'tfjs-cache-')),
        methods: Object.fromEntries(methods.map((m) => [m, config.methods[m]!])),
      };
      setExecutor('tfjs');
      let tfjs: ExperimentResult;
      try {
        tfjs = await runExperiment(tfjsConfig, { outDir: mkdtempSync(join(tmpdir(), 'run-tfjs-')) });
      } finally {
        setExecutor(undefined);
      }
      // Activations agree to ~1e-5; a prediction on the boundary may flip, so allow one test bio per metric.
      const lines: string[] = [];
      for (const method of methods) {
        const [a, b] = [written.methods[method]!.per_seed[0]!, tfjs.methods[method]!.per_seed[0]!];
        for (const key of ['profession_acc', 'gender_agreement', 'worst_group_acc', 'gender_probe_acc'] as const) {
          expect(Math.abs(a[key].value - b[key].value), `${method}.${key}: ONNX ${a[key].value} vs tfjs ${b[key].value}`).toBeLessThanOrEqual(
            1 / a[key].n + 1e-9,
          );
        }
        lines.push(
          `${method.padEnd(14)} ${[a.profession_acc, a.gender_agreement, a.worst_group_acc].map((v) => (100 * v.value).toFixed(1)).join(' / ')}  tfjs ${[b.profession_acc, b.gender_agreement, b.worst_group_acc].map((v) => (100 * v.value).toFixed(1)).join(' / ')}`,
        );
      }
      console.log(`ONNX Runtime vs tfjs executor (profession / gender agreement / worst group):\n${lines.join('\n')}`);
    },
    30 * 60_000,
  );

  it.skipIf(skipWithout(chromiumMissing(), `${CHROMIUM} is missing (.ci/run installs Debian's chromium)`))(
    'renders the report in headless Chromium with no console error or outside request, and saves a screenshot in the run folder',
    async () => {
      const opened = await openPage(join(out, 'report.html'));
      try {
        expect(opened.problems).toEqual([]);
        expect(opened.requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:'))).toEqual([]);
        const path = join(out, 'report.png');
        await opened.page.screenshot({ path, fullPage: true });
        expect(statSync(path).size).toBeGreaterThan(10_000);
        console.log(`screenshot: ${path}`);
      } finally {
        await opened.close();
      }
    },
  );
});
