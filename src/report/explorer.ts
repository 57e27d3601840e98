/**
 * The report's live feature explorer: reading its data (`explorer/seed-<s>.json`, written by the
 * runner with src/experiment/explorer-data.ts), what the page embeds, and the small script that
 * recomputes the metrics in the page.
 *
 * Everything at the probe hook is affine, so removing (zero-ablating, SAE error kept) a set S of SAE
 * features changes the probe head h's logits of test row r exactly to
 *
 *   logits_h[r] = base_h[r] - sum_{i in S} codes_i[r] * contrib_h[i]
 *
 * (predictions: nOut = 1, class 1 iff the logit > 0; otherwise the first argmax). The runner's
 * `explorerMetrics` computes the metrics from that, and lists a method only when they reproduce its
 * recorded results. The page's script repeats the same float64 operations in the same order: per
 * row, the features of S by increasing SAE index (the order `pageMetrics` passes them in, and the
 * order of a method's own list), skipping only zero codes, whose subtraction changes nothing. So the
 * page's numbers equal `pageMetrics`'s, and a method's own set reproduces its reported metrics; the
 * browser test holds the page to both.
 */
import { z } from 'zod';
import { explorerMetrics, type ExplorerData } from '../experiment/explorer-data.js';
import { parseStrict } from '../util/schema.js';

export type { ExplorerData };

const split = z.strictObject({
  rows: z.array(z.number().int().min(0)).describe('Rows of the split in the row space.'),
  y: z.array(z.number().int().min(0).max(1)).describe('Profession label per row of the split.'),
  z: z.array(z.number().int().min(0).max(1)).describe('Gender label per row of the split (0 male).'),
});

/** explorer/seed-<s>.json, as src/experiment/explorer-data.ts writes it. */
export const explorerSchema = z.strictObject({
  version: z.literal(1).describe('Layout version.'),
  seed: z.number().int().describe('The seed the methods were fitted with.'),
  hook: z.string().min(1).describe('The probe hook, where every listed feature lives.'),
  professions: z.tuple([z.string(), z.string()]).describe('Class names of y = 0 and y = 1.'),
  texts: z.array(z.string()).describe('Test texts: the row space.'),
  splits: z.record(z.string(), split).describe('"balanced" and the four subgroups.'),
  features: z
    .array(
      z.strictObject({
        index: z.number().int().min(0).describe('SAE feature index.'),
        codes: z.array(z.number()).describe('Pooled SAE code per row.'),
        genderScore: z.number().describe('Score by which non-removed features were listed.'),
      }),
    )
    .describe('Listed features at the hook.'),
  heads: z
    .record(
      z.string(),
      z.strictObject({
        nOut: z.number().int().min(1).describe('Logits per row (1: binary).'),
        base: z.array(z.array(z.number())).describe('[row][nOut] logits of the unedited representation.'),
        contrib: z.array(z.array(z.number())).describe('[feature][nOut] head weights times decoder direction.'),
      }),
    )
    .describe('Probe heads.'),
  methods: z.record(z.string(), z.strictObject({ head: z.string(), features: z.array(z.number().int()) })).describe('Feature-ablation methods at the hook.'),
  excluded: z.record(z.string(), z.string()).default({}).describe('Methods not listed, and why.'),
  tokens: z
    .record(
      z.string(),
      z.strictObject({
        pieces: z.array(z.string()).describe("The row's tokens as they read in the text."),
        acts: z.record(z.string(), z.array(z.number())).describe('Per feature index, the SAE code of each token.'),
      }),
    )
    .optional()
    .describe('Per-token activations on the top texts of each listed feature, by row.'),
  promotes: z
    .record(z.string(), z.array(z.string()))
    .optional()
    .describe('Language models: per feature index, the tokens its decoder direction promotes most through the unembedding.'),
});

/** Parses and cross-checks an explorer file: every array aligned with the row space and the feature list. */
export function parseExplorer(value: unknown, where: string): ExplorerData {
  const data = parseStrict(explorerSchema, value, where);
  const nRows = data.texts.length;
  const fail = (what: string): never => {
    throw new Error(`${where}: ${what}`);
  };
  if (data.splits.balanced === undefined) fail('splits has no "balanced" split');
  for (const [name, s] of Object.entries(data.splits)) {
    if (s.y.length !== s.rows.length || s.z.length !== s.rows.length)
      fail(`splits.${name}: rows, y and z differ in length (${s.rows.length}, ${s.y.length}, ${s.z.length})`);
    if (s.rows.length === 0) fail(`splits.${name} is empty`);
    const bad = s.rows.find((r) => r >= nRows);
    if (bad !== undefined) fail(`splits.${name}: row ${bad} is outside the ${nRows} texts`);
  }
  const listed = new Set<number>();
  data.features.forEach((f, i) => {
    if (f.codes.length !== nRows) fail(`features[${i}] (feature ${f.index}) has ${f.codes.length} codes for ${nRows} texts`);
    if (listed.has(f.index)) fail(`features[${i}]: feature ${f.index} is listed twice`);
    listed.add(f.index);
  });
  for (const [name, h] of Object.entries(data.heads)) {
    if (h.base.length !== nRows) fail(`heads.${name}.base has ${h.base.length} rows for ${nRows} texts`);
    if (h.contrib.length !== data.features.length) fail(`heads.${name}.contrib has ${h.contrib.length} entries for ${data.features.length} features`);
    const widths = h.base.concat(h.contrib).findIndex((v) => v.length !== h.nOut);
    if (widths >= 0) fail(`heads.${name}: an entry of base or contrib does not have nOut = ${h.nOut} values`);
  }
  for (const [name, m] of Object.entries(data.methods)) {
    if (data.heads[m.head] === undefined) fail(`methods.${name}.head "${m.head}" is not one of the heads (${Object.keys(data.heads).join(', ')})`);
    const missing = m.features.find((i) => !listed.has(i));
    if (missing !== undefined) fail(`methods.${name} removes feature ${missing}, which is not among the listed features`);
  }
  for (const [row, t] of Object.entries(data.tokens ?? {})) {
    if (!(Number(row) < nRows)) fail(`tokens: row ${row} is outside the ${nRows} texts`);
    for (const [feature, acts] of Object.entries(t.acts)) {
      if (acts.length !== t.pieces.length) fail(`tokens.${row}.acts.${feature}: ${acts.length} values for ${t.pieces.length} tokens`);
    }
  }
  return data;
}

/** What the explorer shows for one head and removed set (proportions in [0, 1]). */
export interface ExplorerMetrics {
  profession_acc: number;
  gender_agreement: number;
  /** Accuracy on each split but "balanced", in the splits' key order. */
  subgroup_acc: Record<string, number>;
  worst_group: { group: string; value: number };
}

/**
 * What the page shows for `head` with the features whose SAE indices are in `removed` zero-ablated:
 * the runner's `explorerMetrics`, given the features by increasing index as the page applies them.
 */
export function pageMetrics(data: ExplorerData, head: string, removed: Iterable<number>): ExplorerMetrics {
  const { values, worstGroup } = explorerMetrics(
    data,
    head,
    [...removed].sort((a, b) => a - b),
  );
  const subgroup_acc: Record<string, number> = {};
  for (const name of Object.keys(data.splits)) if (name !== 'balanced') subgroup_acc[name] = values[name]!;
  return {
    profession_acc: values.profession_acc!,
    gender_agreement: values.gender_agreement!,
    subgroup_acc,
    worst_group: { group: worstGroup, value: worstGroup === '' ? Number.NaN : values[worstGroup]! },
  };
}

/** What the page embeds per seed: the explorer data without texts, codes stored sparsely (rows with code != 0). */
export interface PageExplorer {
  seed: number;
  hook: string;
  splits: ExplorerData['splits'];
  nRows: number;
  features: { index: number; rows: number[]; codes: number[]; genderScore: number; density: number; removedBy: string[] }[];
  heads: Record<string, { nOut: number; base: number[][]; contrib: number[][] }>;
  methods: ExplorerData['methods'];
  excluded: ExplorerData['excluded'];
  /** The metrics results.jsonl reports for each method at this seed (absent when not scored yet). */
  reported: Record<string, ExplorerMetrics>;
}

/** The page's copy of one seed's explorer data, with each method's reported metrics beside it. */
export function pageExplorer(data: ExplorerData, reported: Record<string, ExplorerMetrics>): PageExplorer {
  const removedBy = (index: number): string[] =>
    Object.entries(data.methods)
      .filter(([, m]) => m.features.includes(index))
      .map(([name]) => name);
  return {
    seed: data.seed,
    hook: data.hook,
    splits: data.splits,
    nRows: data.texts.length,
    features: data.features.map((f) => {
      const rows: number[] = [];
      const codes: number[] = [];
      f.codes.forEach((c, r) => {
        if (c !== 0) {
          rows.push(r);
          codes.push(c);
        }
      });
      return { index: f.index, rows, codes, genderScore: f.genderScore, density: rows.length / f.codes.length, removedBy: removedBy(f.index) };
    }),
    heads: data.heads,
    methods: data.methods,
    excluded: data.excluded,
    reported,
  };
}

/**
 * The page's script (plain ES2020, no dependencies): reads the JSON in #explorer-data, builds the
 * controls with textContent only (no data ever reaches innerHTML), and recomputes the metrics on
 * every change with the same arithmetic as `explorerPredictions` (sparse codes, which visit each
 * row's features in the same order and skip the same zero codes).
 */
export const EXPLORER_SCRIPT = `(function () {
  'use strict';
  var source = document.getElementById('explorer-data');
  var root = document.getElementById('explorer');
  if (!source || !root) return;
  var seeds = JSON.parse(source.textContent);
  var el = function (tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  var pct = function (v) { return (typeof v === 'number' && isFinite(v)) ? (100 * v).toFixed(1) + '%' : '\\u2013'; };
  var q = function (id) { return document.getElementById(id); };
  var seedSel = q('explorer-seed'), methodSel = q('explorer-method'), headSel = q('explorer-head');
  var list = q('explorer-features'), table = q('explorer-metrics'), status = q('explorer-status');
  seeds.forEach(function (s, i) {
    seedSel.appendChild(el('option', { value: String(i) }, String(s.seed)));
    // Positions of the features by increasing SAE index: the order removals are applied in.
    s.order = s.features.map(function (_, j) { return j; }).sort(function (a, b) { return s.features[a].index - s.features[b].index; });
  });
  var cur = null;

  function predictions(s, head, removed) {
    var h = s.heads[head], n = s.nRows, nOut = h.nOut;
    var logits = new Float64Array(n * nOut);
    for (var r = 0; r < n; r++) for (var k = 0; k < nOut; k++) logits[r * nOut + k] = h.base[r][k];
    s.order.forEach(function (i) {
      var f = s.features[i];
      if (!removed[f.index]) return;
      var c = h.contrib[i];
      for (var j = 0; j < f.rows.length; j++) {
        var r = f.rows[j], code = f.codes[j];
        for (var k = 0; k < nOut; k++) logits[r * nOut + k] = logits[r * nOut + k] - code * c[k];
      }
    });
    var pred = new Int32Array(n);
    for (var r = 0; r < n; r++) {
      if (nOut === 1) { pred[r] = logits[r] > 0 ? 1 : 0; continue; }
      var best = 0;
      for (var k = 1; k < nOut; k++) if (logits[r * nOut + k] > logits[r * nOut + best]) best = k;
      pred[r] = best;
    }
    return pred;
  }

  function metrics(s, head, removed) {
    var pred = predictions(s, head, removed);
    var acc = function (sp, labels) {
      var hits = 0;
      for (var i = 0; i < sp.rows.length; i++) if (pred[sp.rows[i]] === labels[i]) hits++;
      return hits / sp.rows.length;
    };
    var b = s.splits.balanced, groups = {}, worst = null;
    Object.keys(s.splits).forEach(function (name) {
      if (name === 'balanced') return;
      var v = acc(s.splits[name], s.splits[name].y);
      groups[name] = v;
      if (worst === null || v < worst.value) worst = { group: name, value: v };
    });
    return { profession_acc: acc(b, b.y), gender_agreement: acc(b, b.z), subgroup_acc: groups, worst_group: worst };
  }

  function rowsOf(m) {
    var out = [['profession_acc', 'profession accuracy', m.profession_acc], ['gender_agreement', 'gender agreement', m.gender_agreement]];
    out.push(['worst_group', 'worst group (' + (m.worst_group ? m.worst_group.group : '') + ')', m.worst_group ? m.worst_group.value : NaN]);
    Object.keys(m.subgroup_acc).forEach(function (g) { out.push(['subgroup:' + g, g, m.subgroup_acc[g]]); });
    return out;
  }

  function checkedSet() {
    var removed = {};
    list.querySelectorAll('input[type=checkbox]').forEach(function (box) { if (box.checked) removed[box.getAttribute('data-feature')] = true; });
    return removed;
  }

  function sameSet(removed, features) {
    var want = {};
    features.forEach(function (i) { want[i] = true; });
    return Object.keys(removed).every(function (k) { return want[k]; }) && features.every(function (i) { return removed[i]; });
  }

  function update() {
    var s = cur, head = headSel.value, method = methodSel.value, removed = checkedSet();
    var now = metrics(s, head, removed), none = metrics(s, head, {});
    var rep = s.reported[method];
    var repRows = rep ? rowsOf(rep) : [];
    var noneRows = rowsOf(none);
    var body = table.querySelector('tbody');
    body.textContent = '';
    rowsOf(now).forEach(function (row, i) {
      var tr = el('tr', { 'data-metric': row[0] });
      tr.appendChild(el('th', {}, row[1]));
      [['current', row[2]], ['reported', repRows[i] ? repRows[i][2] : NaN], ['baseline', noneRows[i][2]]].forEach(function (c) {
        var td = el('td', { 'class': c[0], 'data-value': String(c[1]) }, pct(c[1]));
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var own = s.methods[method];
    var isOwn = own && head === own.head && sameSet(removed, own.features);
    var count = Object.keys(removed).length;
    if (!rep) status.textContent = method + ' has no scored result for seed ' + s.seed + ' yet.';
    else if (isOwn) {
      var equal = rowsOf(now).every(function (row, i) { return repRows[i] && row[2] === repRows[i][2]; });
      status.textContent = count + ' feature(s) checked: exactly ' + method + "'s set with its head; " + (equal ? 'every number equals its reported metrics.' : 'the numbers DIFFER from its reported metrics.');
    } else status.textContent = count + ' feature(s) checked: not ' + method + "'s set (press the button to restore it).";
    status.setAttribute('data-own', isOwn ? 'yes' : 'no');
  }

  function chooseMethod() {
    var m = cur.methods[methodSel.value];
    if (m) headSel.value = m.head;
    var want = {};
    (m ? m.features : []).forEach(function (i) { want[i] = true; });
    list.querySelectorAll('input[type=checkbox]').forEach(function (box) { box.checked = !!want[box.getAttribute('data-feature')]; });
    update();
  }

  function chooseSeed() {
    cur = seeds[Number(seedSel.value)];
    methodSel.textContent = '';
    var names = Object.keys(cur.methods);
    names.forEach(function (name) { methodSel.appendChild(el('option', { value: name }, name)); });
    // Start with the first method that removes something: its features are the interesting ones.
    var first = names.filter(function (name) { return cur.methods[name].features.length > 0; })[0];
    if (first !== undefined) methodSel.value = first;
    headSel.textContent = '';
    Object.keys(cur.heads).forEach(function (name) { headSel.appendChild(el('option', { value: name }, name)); });
    list.textContent = '';
    cur.features.forEach(function (f) {
      var label = el('label', { 'class': 'feature' });
      var box = el('input', { type: 'checkbox', 'data-feature': String(f.index) });
      box.addEventListener('change', update);
      label.appendChild(box);
      label.appendChild(el('span', { 'class': 'index' }, '#' + f.index));
      label.appendChild(el('span', { 'class': 'meta' }, 'gender score ' + f.genderScore.toPrecision(3) + ', active in ' + pct(f.density) + ' of rows' + (f.removedBy.length ? ', removed by ' + f.removedBy.join(', ') : '')));
      list.appendChild(label);
    });
    chooseMethod();
  }

  seedSel.addEventListener('change', chooseSeed);
  methodSel.addEventListener('change', chooseMethod);
  headSel.addEventListener('change', update);
  q('explorer-own').addEventListener('click', chooseMethod);
  q('explorer-none').addEventListener('click', function () {
    list.querySelectorAll('input[type=checkbox]').forEach(function (box) { box.checked = false; });
    update();
  });
  chooseSeed();
})();
`;
