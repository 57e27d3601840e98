/**
 * The report builder without a browser: reading run folders (finished, partial, broken), the
 * explorer's metrics against closed-form expectations, escaping of user data, charts on edge cases.
 */
import { mkdtempSync, readFileSync, writeFileSync, appendFileSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine } from '../../src/engine/engine.js';
import { accuracy } from '../../src/eval/metrics.js';
import { setQuiet } from '../../src/util/progress.js';
import { escapeHtml, jsonForScript } from '../../src/report/escape.js';
import { EXPLORER_SCRIPT, pageMetrics, parseExplorer } from '../../src/report/explorer.js';
import { featureStats, pearson } from '../../src/report/features.js';
import { buildReport, writeReport } from '../../src/report/html.js';
import { maskBins } from '../../src/report/masks.js';
import { readRunDir } from '../../src/report/run-dir.js';
import { stages, thin, trainingCurves } from '../../src/report/curves.js';
import { barChart, heatmap, histogram, lineChart, niceTicks } from '../../src/report/svg.js';
import { expectedPredictions, explorerData, makeRunFolder, METHODS, SEEDS, XSS_BIO, seedResult, type FixtureMethod } from './run-fixture.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

const made: string[] = [];
const fresh = (name: string): string => {
  const dir = mkdtempSync(join(tmpdir(), `report-${name}-`));
  made.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

describe('escaping', () => {
  it('escapes the five HTML-significant characters', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });

  it('JSON for a script block holds no < > & and parses back unchanged', () => {
    const value = { bio: XSS_BIO, sep: '\u2028\u2029', n: [1.5, 1e-300] };
    const text = jsonForScript(value);
    expect(text).not.toMatch(/[<>&\u2028\u2029]/);
    expect(JSON.parse(text)).toEqual(value);
  });
});

describe('explorer metrics', () => {
  it('match the closed-form predictions of each method at each seed, for both heads', () => {
    for (const seed of SEEDS) {
      const data = explorerData(seed, false);
      const y = data.splits.balanced!.y;
      const z = data.splits.balanced!.z;
      for (const method of [...(Object.keys(METHODS) as FixtureMethod[]), 'none'] as const) {
        const removed = new Set<number>(method === 'none' ? [] : METHODS[method]);
        const pred = expectedPredictions(method, seed);
        for (const head of ['biased', 'two_class']) {
          const m = pageMetrics(data, head, removed);
          expect(m.profession_acc, `${method} seed ${seed} ${head}`).toBe(accuracy(pred, y).value);
          expect(m.gender_agreement, `${method} seed ${seed} ${head}`).toBe(accuracy(pred, z).value);
          for (const [group, s] of Object.entries(data.splits)) {
            if (group === 'balanced') continue;
            const groupPred = s.rows.map((r) => pred[r]!);
            expect(m.subgroup_acc[group], `${method} seed ${seed} ${head} ${group}`).toBe(accuracy(groupPred, s.y).value);
          }
        }
      }
    }
  });

  it('reproduce the fixture results of each method (what results.jsonl reports)', () => {
    for (const seed of SEEDS) {
      const data = explorerData(seed, false);
      for (const method of Object.keys(METHODS) as FixtureMethod[]) {
        const m = pageMetrics(data, data.methods[method]!.head, new Set(data.methods[method]!.features));
        const r = seedResult(method, seed);
        expect(m.profession_acc).toBe(r.profession_acc.value);
        expect(m.gender_agreement).toBe(r.gender_agreement.value);
        expect(m.worst_group).toEqual({ group: r.worst_group_acc.group, value: r.worst_group_acc.value });
        for (const [g, v] of Object.entries(r.subgroup_acc)) expect(m.subgroup_acc[g]).toBe(v.value);
      }
    }
    // The design in numbers: removing both gender features leaves the profession (one flipped bio per
    // subgroup at seed 1); nothing removed, the probe reads gender.
    const one = explorerData(1, false);
    expect(pageMetrics(one, 'biased', new Set([101, 7])).profession_acc).toBe(0.9);
    expect(pageMetrics(one, 'biased', new Set()).gender_agreement).toBe(1);
  });

  it('refuses explorer data whose arrays do not line up, naming the file and the field', () => {
    const where = '/runs/x/explorer/seed-1.json';
    const short = explorerData(1, false);
    short.features[2]!.codes.pop();
    expect(() => parseExplorer(short, where)).toThrow(`${where}: features[2] (feature 55) has 39 codes for 40 texts`);
    const unlisted = explorerData(1, false);
    unlisted.methods.shift!.features = [101, 999];
    expect(() => parseExplorer(unlisted, where)).toThrow('methods.shift removes feature 999, which is not among the listed features');
    const unknown = { ...explorerData(1, false), extra: 1 };
    expect(() => parseExplorer(unknown, where)).toThrow(/unknown field "extra"/);
    const badHead = explorerData(1, false);
    badHead.methods.sae_mask!.head = 'retrained';
    expect(() => parseExplorer(badHead, where)).toThrow('methods.sae_mask.head "retrained" is not one of the heads (biased, two_class)');
  });
});

describe('feature statistics', () => {
  it('density, correlations and top texts of the planted features', () => {
    const data = explorerData(1, false);
    const a = featureStats(data, 0);
    expect(a.density).toBe(0.5);
    expect(a.corrGender!).toBeGreaterThan(0.99);
    expect(Math.abs(a.corrProfession!)).toBeLessThan(0.1);
    expect(a.top).toHaveLength(5);
    for (const t of a.top) expect(data.splits.balanced!.z[t.row]).toBe(1);
    expect(a.top.map((t) => t.code)).toEqual([...a.top.map((t) => t.code)].sort((x, y) => y - x));
    const b = featureStats(data, 1);
    expect(b.corrGender!).toBeCloseTo(-1, 12);
    const never = featureStats(data, 3);
    expect(never).toEqual({ density: 0, corrGender: undefined, corrProfession: undefined, top: [] });
    expect(pearson([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(pearson([1, 1, 1], [0, 1, 0])).toBeUndefined();
  });
});

describe('charts', () => {
  it('nice ticks cover the range, also for a constant one', () => {
    expect(niceTicks(0, 1, 5)).toEqual({ lo: 0, hi: 1, ticks: [0, 0.2, 0.4, 0.6000000000000001, 0.8, 1] });
    const c = niceTicks(3, 3);
    expect(c.lo).toBeLessThan(3);
    expect(c.hi).toBeGreaterThan(3);
    const z = niceTicks(0, 0);
    expect(z.lo).toBeLessThan(0);
    expect(z.hi).toBeGreaterThan(0);
  });

  it('draws marks and no NaN for one point, a constant series, one seed, missing bars and empty heatmap cells', () => {
    const svgs = [
      lineChart('one point', [{ label: 'loss', colour: '#000', points: [[1, 0.5]] }], 'step'),
      lineChart(
        'constant, one point not finite',
        [
          {
            label: 'temperature',
            colour: '#000',
            points: [
              [1, 2],
              [2, Number.NaN],
              [3, 2],
            ],
          },
        ],
        'step',
      ),
      barChart('one seed', [{ label: 'm', bars: [{ label: 'seed 1', value: 0.5, lo: 0.4, hi: 0.6, colour: '#000' }] }], 'accuracy'),
      barChart('missing', [{ label: 'm', bars: [undefined, { label: 'seed 2', value: 1, colour: '#000' }] }], 'accuracy'),
      heatmap('grid', ['a'], ['g1', 'g2'], [[0.5, undefined]]),
      histogram('mask', maskBins(Float32Array.from([-1, 0, 0.5, 2])), 'm', 0),
      histogram('constant mask', maskBins(Float32Array.from([0.3, 0.3])), 'm', 0),
    ];
    for (const svg of svgs) {
      expect(svg).not.toMatch(/NaN|Infinity|undefined/);
      expect(svg.match(/<(rect|path|circle)\b/g)?.length ?? 0).toBeGreaterThan(0);
    }
    expect(svgs[0]).toContain('<circle');
    expect(() => lineChart('nothing', [{ label: 'x', colour: '#000', points: [[1, Number.NaN]] }], 'step')).toThrow(/no finite points/);
  });

  it('mask bins have an edge at 0, count every finite value once, and colour the removed side', () => {
    const values = Float32Array.from([-3, -1.5, -0.01, 0, 0.01, 1, 2, 5, Number.NaN]);
    const bins = maskBins(values, 8);
    expect(bins.reduce((s, b) => s + b.count, 0)).toBe(8);
    const zeroEdge = bins.findIndex((b) => Math.abs(b.hi) < 1e-9);
    expect(zeroEdge).toBeGreaterThanOrEqual(0);
    const removed = bins.filter((b) => b.colour === bins[0]!.colour).reduce((s, b) => s + b.count, 0);
    expect(removed).toBe(4);
  });

  it('training curves: thinning keeps the last point; seeds of a stage kind sit together; no history says so', () => {
    const pts = Array.from({ length: 1001 }, (_, i) => i);
    const t = thin(pts, 100);
    expect(t.length).toBeLessThanOrEqual(101);
    expect(t[t.length - 1]).toBe(1000);
    const order = stages([
      { stage: 'a/seed-1/mask', step: 1, values: { loss: 1 } },
      { stage: 'b/seed-1/mask', step: 1, values: { loss: 1 } },
      { stage: 'a/seed-2/mask', step: 1, values: { loss: 1 } },
      { stage: 'sae layers.1.resid_out', step: 1, values: { fve: 1 } },
    ]).map((s) => s.stage);
    expect(order).toEqual(['a/seed-1/mask', 'a/seed-2/mask', 'b/seed-1/mask', 'sae layers.1.resid_out']);
    expect(trainingCurves([])).toContain('no training curves were logged');
  });
});

describe('run folders', () => {
  it('a finished run: every section drawn, masks read from the saved erasers, data escaped, one script allowed by hash', async () => {
    const dir = fresh('finished');
    const logits = await makeRunFolder(dir, { xss: true, erasers: true });
    const { path, partial } = writeReport(dir);
    expect(partial).toBe(false);
    const html = readFileSync(path, 'utf8');
    expect(html).toContain('<span class="status finished">');
    // The bio is shown as text, never as markup.
    expect(html).not.toContain('<img src=x');
    expect(html).toContain(escapeHtml(XSS_BIO));
    expect(html).not.toContain('report fixture <b>run</b>');
    expect(html).toContain('report fixture &lt;b&gt;run&lt;/b&gt;');
    // Two script elements (the explorer's data and its code), each closed once.
    expect(html.match(/<script\b/g)).toHaveLength(2);
    expect(html.match(/<\/script>/g)).toHaveLength(2);
    const hash = createHash('sha256').update(EXPLORER_SCRIPT, 'utf8').digest('base64');
    expect(html).toContain(escapeHtml(`script-src 'sha256-${hash}'`));
    expect(html).toContain(`<script>${EXPLORER_SCRIPT}</script>`);
    const data = JSON.parse(/<script type="application\/json" id="explorer-data">([^<]*)<\/script>/.exec(html)![1]!) as { seed: number; reported: object }[];
    expect(data.map((d) => d.seed)).toEqual(SEEDS);
    // Masks: one histogram per saved sae_mask eraser, with the count of units its logits remove.
    for (const [seed, m] of logits) {
      const removed = Array.from(m).filter((v) => v <= 0).length;
      expect(html).toContain(`sae_mask, seed ${seed}<br><small>layers.0.resid_out: ${removed} of ${m.length} removed (m ≤ 0)`);
    }
    // Feature cards: the probe-hook features both methods removed, and SHIFT's feature at another hook.
    for (const f of [101, 7, 9]) expect(html).toContain(`<article class="card" data-feature="${f}">`);
    expect(html).toContain('removed by sae_mask (seeds 1, 2); shift (seeds 1, 2)');
    expect(html).toContain('not at the probe hook');
    // Feature 7's top texts show their tokens, "He" shaded by its code, the rest plain.
    const card7 = /<article class="card" data-feature="7">(.*?)<\/article>/s.exec(html)![1]!;
    expect(card7).toContain('tokens shaded by the feature’s code on them');
    expect(card7).toContain('Promotes: <code> he</code> <code> his</code>');
    expect(html).toContain('<code> &lt;b&gt;</code>');
    expect(card7).toMatch(
      /<li><span class="code">1\.50<\/span> <mark style="background:rgba\(225,87,89,0\.90\)" title="code [\d.]+">He<\/mark> is a (surgeon|nurse) with/,
    );
    // Curves of every stage.
    for (const stage of ['original/seed-1/probe', 'sae_mask/seed-2/mask', 'sae layers.0.resid_out']) expect(html).toContain(`<h4>${stage} <small>`);
    expect(html.replace(EXPLORER_SCRIPT, '')).not.toMatch(/NaN|Infinity/);
  });

  it('a partial run (results.jsonl, no metrics.json) gets a page marked partial, without the unscored pair', async () => {
    const dir = fresh('partial');
    await makeRunFolder(dir, { partial: true });
    appendFileSync(join(dir, 'results.jsonl'), '{"method": "shift", "seed": 2, "res');
    const run = readRunDir(dir);
    expect(run.metrics).toBeUndefined();
    expect(run.results.map((l) => `${l.method}/${l.seed}`)).toEqual(['sae_mask/1', 'shift/1', 'sae_mask/2']);
    expect(run.warnings.join('\n')).toContain('results.jsonl: the last line is incomplete');
    const html = buildReport(run);
    expect(html).toContain('<span class="status partial">partial run</span> 3 of 4 method/seed pairs scored');
    expect(html).toContain('the last line is incomplete');
    // shift at seed 2 is not scored: its reported metrics are absent from the explorer data.
    const data = JSON.parse(/id="explorer-data">([^<]*)</.exec(html)![1]!) as { seed: number; reported: Record<string, unknown> }[];
    expect(Object.keys(data.find((d) => d.seed === 2)!.reported)).toEqual(['sae_mask']);
  });

  it('one seed and no history: Wilson intervals and notes instead of empty charts', async () => {
    const dir = fresh('one-seed');
    await makeRunFolder(dir, { seeds: [1], noHistory: true });
    const html = buildReport(readRunDir(dir));
    const r = seedResult('sae_mask', 1).profession_acc;
    expect(html).toContain(`${(100 * r.value).toFixed(1)}<br><small>[${(100 * r.lo).toFixed(1)}, ${(100 * r.hi).toFixed(1)}]</small>`);
    expect(html).toContain('<small>Wilson</small>');
    expect(html).toContain('no training curves were logged');
    expect(html).toContain('No mask eraser');
    expect(html.replace(EXPLORER_SCRIPT, '')).not.toMatch(/NaN|Infinity/);
  });

  it('several seeds: the mean with its t-interval over seeds', async () => {
    const dir = fresh('two-seeds');
    await makeRunFolder(dir);
    const html = buildReport(readRunDir(dir));
    const metrics = JSON.parse(readFileSync(join(dir, 'metrics.json'), 'utf8')) as {
      methods: Record<string, { profession_acc: { mean: number; ci95: [number, number] } }>;
    };
    const s = metrics.methods.sae_mask!.profession_acc;
    const clip = (v: number): string => (100 * Math.min(1, Math.max(0, v))).toFixed(1);
    expect(html).toContain(`${clip(s.mean)}<br><small>[${clip(s.ci95[0])}, ${clip(s.ci95[1])}]</small>`);
    expect(html).toContain('<small>t over seeds</small>');
  });

  it('the results table says which labels each method used; a result from before they were recorded says so', async () => {
    const dir = fresh('labels');
    await makeRunFolder(dir);
    const row = (html: string, method: string): string => new RegExp(`<tr><th scope="row">${method}</th>(.*?)</tr>`).exec(html)![1]!;
    const html = buildReport(readRunDir(dir));
    expect(html).toContain('<tr><th>method</th><th>labels used</th>');
    expect(row(html, 'sae_mask')).toMatch(/^<td>amb\. task, concept gender, concept task<\/td>/);
    expect(row(html, 'shift')).toMatch(/^<td>amb\. task \+ hand-picked<\/td>/);
    // An older run: results without the field (metrics.json removed so the lines are what is read).
    const old = fresh('labels-old');
    await makeRunFolder(old, { partial: true });
    const lines = readFileSync(join(old, 'results.jsonl'), 'utf8').trim().split('\n');
    const stripped = lines.map((l) => {
      const line = JSON.parse(l) as { result: Record<string, unknown> };
      delete line.result.supervision;
      return JSON.stringify(line);
    });
    writeFileSync(join(old, 'results.jsonl'), `${stripped.join('\n')}\n`);
    expect(row(buildReport(readRunDir(old)), 'shift')).toMatch(/^<td>not recorded<\/td>/);
  });

  it('clear errors: not a folder, not a run folder, nothing scored, a malformed line', async () => {
    const missing = join(tmpdir(), 'report-no-such-folder-x');
    expect(() => readRunDir(missing)).toThrow(`${missing}: not a folder`);
    const empty = fresh('empty');
    expect(() => readRunDir(empty)).toThrow(`${empty}: not a run folder (no config.json`);
    const unscored = fresh('unscored');
    await makeRunFolder(unscored, { partial: true });
    writeFileSync(join(unscored, 'results.jsonl'), '');
    expect(() => readRunDir(unscored)).toThrow('the run has not scored any method yet');
    rmSync(join(unscored, 'results.jsonl'));
    expect(() => readRunDir(unscored)).toThrow('the run has not scored any method yet');
    const bad = fresh('bad');
    await makeRunFolder(bad, { partial: true });
    appendFileSync(join(bad, 'results.jsonl'), '{"method": "shift", "seed": 2, "result": {"seed": 2}}\n');
    expect(() => readRunDir(bad)).toThrow(new RegExp(`${join(bad, 'results.jsonl')}:4: field "result.profession_acc"`));
    writeFileSync(join(bad, 'history.jsonl'), '{"stage": "x", "step": "one"}\n');
    rmSync(join(bad, 'results.jsonl'));
    await makeRunFolder(bad, { partial: true, noHistory: true });
    writeFileSync(join(bad, 'history.jsonl'), '{"stage": "x", "step": 1, "loss": 1}\n{"stage": "x", "step": "two"}\n');
    expect(() => readRunDir(bad)).toThrow(new RegExp(`${join(bad, 'history.jsonl')}:2: field "step"`));
  });

  it('an explorer file named for another seed is refused', async () => {
    const dir = fresh('misnamed');
    await makeRunFolder(dir, { seeds: [1] });
    const explorer = join(dir, 'explorer');
    mkdirSync(explorer, { recursive: true });
    writeFileSync(join(explorer, 'seed-5.json'), readFileSync(join(explorer, 'seed-1.json')));
    expect(() => readRunDir(dir)).toThrow(`${join(explorer, 'seed-5.json')}: field "seed" is 1, but the file is named for seed 5`);
    expect(existsSync(join(dir, 'report.html'))).toBe(false);
  });
});
