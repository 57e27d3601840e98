/**
 * report.html: one self-contained page per run folder, readable by someone who did not run it. It
 * loads nothing (no network, no CDN: charts are inline SVG drawn here, styles inline) and runs one
 * small inline script, the feature explorer's (explorer.ts). A Content-Security-Policy allows only
 * that script, by its hash, and no fetch of any kind, so even a text that slipped past escaping
 * could neither run nor load anything.
 *
 * Sections: the run (config, provenance, finished or partial), the results table with 95%
 * intervals, a bar chart per metric (methods x seeds), subgroup accuracies as a heatmap, the live
 * feature explorer, feature cards of the removed SAE features, training curves from history.jsonl,
 * and histograms of the learned mask logits.
 *
 * Feature cards shade the tokens of each top text by the feature's code on them, and for language
 * models list the tokens the feature's decoder direction promotes (both from the explorer data).
 */
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { escapeHtml, jsonForScript } from './escape.js';
import { EXPLORER_SCRIPT, pageExplorer, type ExplorerData, type ExplorerMetrics } from './explorer.js';
import { featureCards } from './features.js';
import { trainingCurves } from './curves.js';
import { maskHistograms } from './masks.js';
import { metricCharts, resultsTable, subgroupHeatmap } from './results-section.js';
import { readRunDir, type RunDir, type SeedResult } from './run-dir.js';

const STYLE = `
:root { --fg: #1d2733; --muted: #5b6877; --line: #d8dee6; --bg: #fff; --band: #f4f6f9; --accent: #2f5d8a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
header, main, footer { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h4 { margin: 0 0 6px; font-size: 14px; }
small, .note, figcaption small { color: var(--muted); }
.note { font-size: 13px; }
.status { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600; font-size: 13px; }
.status.finished { background: #e3f1e6; color: #1d5e2c; }
.status.partial { background: #fff2d6; color: #7a4f00; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 10px 0; font-size: 13px; }
dl.run dt { color: var(--muted); }
dl.run dd { margin: 0; }
nav { position: sticky; top: 0; background: rgba(255,255,255,.96); border-bottom: 1px solid var(--line); z-index: 2; }
nav div { max-width: 1280px; margin: 0 auto; padding: 6px 24px; display: flex; gap: 16px; flex-wrap: wrap; }
nav a { color: var(--accent); text-decoration: none; font-weight: 500; }
.warnings { background: #fff2d6; border: 1px solid #f0d28a; padding: 6px 12px; border-radius: 6px; font-size: 13px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--band); font-weight: 600; vertical-align: bottom; }
table.results th, table.results td { padding: 4px 6px; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.results tbody tr:hover { background: var(--band); }
dl.summaries dt { font-weight: 600; margin-top: 4px; }
dl.summaries dd { margin: 0 0 0 16px; color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
figcaption.below { font-weight: 400; color: var(--muted); margin-top: 4px; }
svg.chart { display: block; font-size: 10.5px; }
svg .grid { stroke: #e6eaef; }
svg .axis { stroke: #7b8794; }
svg .tick { fill: #4a5665; }
svg .axis-name { fill: #4a5665; font-size: 11px; }
svg .cell { font-size: 11px; }
svg .errorbar { stroke: #222; stroke-width: 1.1; fill: none; }
svg .marker { stroke: #222; stroke-dasharray: 3 3; fill: none; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; margin: 4px 0; color: var(--muted); }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 5px; border-radius: 2px; vertical-align: -1px; }
div.stages { display: flex; flex-wrap: wrap; gap: 12px 28px; }
section.stage { margin: 6px 0 10px; }
figure.small { width: 280px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: #fcfdfe; }
.card .who { margin: 0 0 6px; font-size: 13px; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 1px 10px; margin: 0 0 6px; font-size: 13px; }
.card dt { color: var(--muted); }
.card dd { margin: 0; font-variant-numeric: tabular-nums; }
.card .sub { margin: 4px 0 2px; font-size: 12px; color: var(--muted); }
ol.texts { margin: 0; padding-left: 20px; font-size: 12.5px; }
ol.texts li { margin-bottom: 4px; overflow-wrap: anywhere; }
ol.texts .code { display: inline-block; min-width: 42px; font-variant-numeric: tabular-nums; color: var(--accent); font-weight: 600; }
.explorer { display: grid; grid-template-columns: minmax(300px, 1fr) minmax(420px, 1.3fr); gap: 16px; align-items: start; }
.controls { display: flex; gap: 12px; flex-wrap: wrap; align-items: center; margin-bottom: 8px; }
.controls label { font-size: 13px; }
.controls select, .controls button { font: inherit; font-size: 13px; padding: 2px 6px; }
#explorer-features { max-height: 420px; overflow-y: auto; border: 1px solid var(--line); border-radius: 6px; padding: 4px 8px; }
label.feature { display: flex; gap: 8px; align-items: baseline; padding: 2px 0; font-size: 13px; border-bottom: 1px dotted #eef1f4; }
label.feature .index { font-weight: 600; min-width: 52px; font-variant-numeric: tabular-nums; }
label.feature .meta { color: var(--muted); font-size: 12px; }
#explorer-metrics td { text-align: right; font-variant-numeric: tabular-nums; min-width: 90px; }
#explorer-status { font-size: 13px; margin: 6px 0; }
#explorer-status[data-own="yes"] { color: #1d5e2c; }
footer { margin: 32px auto 24px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
`;

/** What results.jsonl reports for `result`, in the explorer's shape (subgroups in the explorer's split order). */
export function reportedMetrics(result: SeedResult, data: ExplorerData): ExplorerMetrics {
  const subgroup_acc: Record<string, number> = {};
  for (const name of Object.keys(data.splits)) if (name !== 'balanced') subgroup_acc[name] = result.subgroup_acc[name]?.value ?? Number.NaN;
  return {
    profession_acc: result.profession_acc.value,
    gender_agreement: result.gender_agreement.value,
    subgroup_acc,
    worst_group: { group: result.worst_group_acc.group, value: result.worst_group_acc.value },
  };
}

function explorerSection(run: RunDir): string {
  if (run.explorers.length === 0) {
    return '<p class="note">This run has no explorer data (explorer/seed-&lt;s&gt;.json): it was made before the runner wrote it, or no method removed SAE features at the probe hook.</p>';
  }
  const page = run.explorers.map((data) => {
    const reported: Record<string, ExplorerMetrics> = {};
    for (const method of Object.keys(data.methods)) {
      const line = run.results.find((l) => l.method === method && l.seed === data.seed);
      if (line !== undefined) reported[method] = reportedMetrics(line.result, data);
    }
    return pageExplorer(data, reported);
  });
  const hook = escapeHtml(run.explorers[0]!.hook);
  const excluded = new Map<string, string>();
  for (const data of run.explorers) for (const [method, why] of Object.entries(data.excluded)) if (!excluded.has(method)) excluded.set(method, why);
  const notListed =
    excluded.size === 0
      ? ''
      : `<p class="note">Not in the explorer (their edits are not SAE features at this hook alone, or its affine form does not reproduce their scores): ${[
          ...excluded,
        ]
          .map(([m, why]) => `<b>${escapeHtml(m)}</b> — ${escapeHtml(why)}`)
          .join('; ')}.</p>`;
  return (
    `<p class="note">Check or uncheck SAE features at the probe hook <code>${hook}</code> to remove them (zero-ablation, SAE error kept) and see ` +
    `the probe's accuracies recomputed on the test set. Exact, because everything at the probe hook is affine: logits = base − Σ<sub>i checked</sub> ` +
    `code<sub>i</sub> · (W d<sub>i</sub>). A method's own feature set reproduces its reported metrics, shown beside. Listed: every feature a method removed, then the top features by gender score.</p>` +
    `<div class="controls"><label>seed <select id="explorer-seed"></select></label><label>method <select id="explorer-method"></select></label>` +
    `<label>probe head <select id="explorer-head"></select></label><button type="button" id="explorer-own">method's features</button>` +
    `<button type="button" id="explorer-none">uncheck all</button></div>` +
    `<div class="explorer"><div id="explorer-features" aria-label="features"></div><div>` +
    `<table id="explorer-metrics"><thead><tr><th>metric</th><th>checked features</th><th>method's reported</th><th>nothing removed</th></tr></thead><tbody></tbody></table>` +
    `<p id="explorer-status"></p></div></div>` +
    notListed +
    `<noscript><p class="note">The explorer needs JavaScript.</p></noscript>` +
    `<script type="application/json" id="explorer-data">${jsonForScript(page)}</script>`
  );
}

function runHeader(run: RunDir): string {
  const { config, metrics } = run;
  const c = config.config;
  const name = metrics?.name ?? c.name ?? basename(run.dir);
  const professions = metrics?.professions ?? run.explorers[0]?.professions ?? c.dataset?.professions?.map(String);
  const configured = Object.keys(c.methods).length * c.seeds.length;
  const status =
    metrics !== undefined
      ? `<span class="status finished">finished</span> ${run.results.length} method/seed results, ${metrics.seconds.total.toFixed(0)} s in all`
      : `<span class="status partial">partial run</span> ${run.results.length} of ${configured} method/seed pairs scored so far (no metrics.json yet: the run is going on, or stopped before the end)`;
  const p = config.provenance;
  const git =
    p?.git === undefined || p.git === null
      ? 'not a git checkout'
      : 'commit' in p.git
        ? `${p.git.commit.slice(0, 12)}${p.git.dirty ? ' (uncommitted changes)' : ''}`
        : `unknown (${p.git.error})`;
  const rows: [string, string][] = [
    ['model', metrics?.model ?? c.model ?? '?'],
    ['probe hook', metrics?.probeHook ?? c.probeHook ?? '?'],
    ['task', professions === undefined ? '?' : `${professions[0]} (y = 0) vs ${professions[1]} (y = 1)`],
    ['seeds', c.seeds.join(', ')],
    ['methods', Object.keys(c.methods).join(', ')],
  ];
  if (metrics !== undefined) {
    rows.push([
      'test set',
      `balanced n = ${metrics.n_test.balanced}; ${Object.entries(metrics.n_test.subgroups)
        .map(([g, n]) => `${g} ${n}`)
        .join(', ')}`,
    ]);
  }
  rows.push(['config', config.source]);
  if (p !== undefined) {
    rows.push(['code', `${p.package.name} ${p.package.version}, git ${git}`]);
    const plural = (n: number): string => `${n} thread${n === 1 ? '' : 's'}`;
    const onnx = p.onnxThreads === undefined ? '' : `; ONNX Runtime with ${plural(p.onnxThreads)}`;
    rows.push(['machine', `Node ${p.node}, ${p.platform}, tfjs ${p.backend} backend with ${plural(p.threads)}${onnx}`]);
    rows.push(['started', p.started]);
  }
  return (
    `<h1>${escapeHtml(name)}</h1><p>${status}</p>` +
    `<dl class="run">${rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>`
  );
}

const SECTIONS = [
  ['results', 'Results'],
  ['metrics', 'Metrics by seed'],
  ['subgroups', 'Subgroups'],
  ['explorer', 'Feature explorer'],
  ['features', 'Removed features'],
  ['training', 'Training curves'],
  ['masks', 'Learned masks'],
] as const;

/** The page's HTML for a run folder read by `readRunDir`. */
export function buildReport(run: RunDir): string {
  const professions = run.metrics?.professions ?? run.explorers[0]?.professions ?? run.config.config.dataset?.professions?.map(String);
  const body: Record<(typeof SECTIONS)[number][0], string> = {
    results: resultsTable(run.results, professions),
    metrics: metricCharts(run.results),
    subgroups: subgroupHeatmap(run.results, professions),
    explorer: explorerSection(run),
    features: featureCards(run.results, run.explorers),
    training: trainingCurves(run.history),
    masks: maskHistograms(run.masks),
  };
  const scriptHash = createHash('sha256').update(EXPLORER_SCRIPT, 'utf8').digest('base64');
  const csp = `default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-${scriptHash}'; base-uri 'none'; form-action 'none'`;
  const title = run.metrics?.name ?? run.config.config.name ?? basename(run.dir);
  const warnings = run.warnings.length === 0 ? '' : `<div class="warnings">${run.warnings.map((w) => `<p>${escapeHtml(w)}</p>`).join('')}</div>`;
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="${escapeHtml(csp)}">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(`${title} — sae-eraser report`)}</title>`,
    `<style>${STYLE}</style></head><body>`,
    `<header>${runHeader(run)}${warnings}</header>`,
    `<nav><div>${SECTIONS.map(([id, name]) => `<a href="#${id}">${name}</a>`).join('')}</div></nav>`,
    '<main>',
    ...SECTIONS.map(([id, name]) => `<section id="${id}"><h2>${name}</h2>${body[id]}</section>`),
    '</main>',
    `<footer>Built by <code>sae-eraser report</code> from the run folder ${escapeHtml(run.dir)}. Self-contained: no network, charts are inline SVG.</footer>`,
    `<script>${EXPLORER_SCRIPT}</script>`,
    '</body></html>',
    '',
  ].join('\n');
}

/** Reads the run folder `dir` and writes its report to `out` (default `dir/report.html`), atomically. */
export function writeReport(dir: string, out = join(dir, 'report.html')): { path: string; partial: boolean; bytes: number } {
  const run = readRunDir(dir);
  const html = buildReport(run);
  writeFileAtomic(out, html);
  return { path: out, partial: run.metrics === undefined, bytes: Buffer.byteLength(html) };
}
