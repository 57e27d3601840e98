/**
 * The label-budget curve as a Markdown table (budget.md) and a standalone SVG chart (budget.svg),
 * from budget.json (src/experiment/budget.ts).
 *
 * The chart has three panels: worst-group accuracy, gender agreement and the post-erasure gender
 * probe, each against the concept-set size on a log axis, one line per method (mean over seeds,
 * a ±1 std bar at each size, in palette colours), with chance (50%) as a labelled grey line.
 * Methods that read no concept set (the original probe, the oracle, word deletion) are the same at
 * every size, so they are drawn as horizontal references across the panel, dark grey with a dash
 * pattern each, instead of lines through points. The file carries
 * its own styles and a white background, so it reads the same in a browser, an image viewer or a
 * README. Each panel is a `<g class="panel" data-metric=...>` and each method a `<polyline>` with
 * `data-method`, so tests (and readers of the source) can find them.
 */
import type { BudgetMetric, BudgetPoint, BudgetResult } from '../experiment/budget.js';
import type { Summary } from '../experiment/results.js';
import { maxOf, minOf } from '../util/arrays.js';
import { escapeHtml } from './escape.js';
import { colour, niceTicks, percent, tickLabel } from './svg.js';

const pct = (s: Summary): string => `${(100 * s.mean).toFixed(1)} ± ${(100 * s.std).toFixed(1)}`;

/** A size as shown in headings and on the x axis: the number, or "all (N)". */
function sizeLabel(point: BudgetPoint): string {
  return point.size === 'all' ? `all (${point.n_concept})` : String(point.size);
}

const TABLE_METRICS: readonly { metric: BudgetMetric; name: string }[] = [
  { metric: 'profession_acc', name: 'profession' },
  { metric: 'gender_agreement', name: 'agreement' },
  { metric: 'worst_group_acc', name: 'worst group' },
  { metric: 'gender_probe_acc', name: 'gender probe' },
];

/** budget.md: one row per method, a group of four columns (profession, agreement, worst group, gender probe) per size. */
export function renderBudgetTable(budget: BudgetResult): string {
  const [p0, p1] = budget.professions;
  const free = new Set(budget.concept_free);
  const firstRun = budget.points[0]?.run ?? '';
  const header = budget.points.flatMap((p) => TABLE_METRICS.map((t) => `${sizeLabel(p)}: ${t.name}`));
  const lines = [
    `# ${budget.name}: the label budget`,
    '',
    `model \`${budget.model}\`, probe at \`${budget.probeHook}\`, ${p0} vs ${p1}, seeds ${budget.seeds.join(', ')}; ` +
      `concept-set sizes ${budget.points.map(sizeLabel).join(', ')} (the pool: ${budget.pool} training bios of ${p0} and ${p1} with gender labels).`,
    '',
    `| method | ${header.join(' | ')} |`,
    `|---|${header.map(() => '---|').join('')}`,
  ];
  for (const method of budget.methods) {
    const cells = budget.points.flatMap((p) => {
      const m = p.methods[method];
      return TABLE_METRICS.map((t) => (m === undefined ? '-' : pct(m[t.metric])));
    });
    lines.push(`| ${method}${free.has(method) ? ' †' : ''} | ${cells.join(' | ')} |`);
  }
  lines.push(
    '',
    'Percent, mean ± std over seeds; chance is 50% for gender agreement and the gender probe. ' +
      (free.size > 0 ? `† reads no concept set: scored once (in \`${firstRun}/\`), the same at every size. ` : '') +
      'Each size has its own run folder (`concept-<size>/`: metrics.json with 95% intervals, table.md, report.html).',
    '',
  );
  return lines.join('\n');
}

/** Chart panels, left to right. */
const PANELS: readonly { metric: BudgetMetric; title: string }[] = [
  { metric: 'worst_group_acc', title: 'worst-group accuracy' },
  { metric: 'gender_agreement', title: 'gender agreement' },
  { metric: 'gender_probe_acc', title: 'gender probe after erasure' },
];

/** One panel's frame, in pixels. */
const PANEL = { width: 320, height: 250, left: 50, right: 16, top: 30, bottom: 46 } as const;
const TITLE_HEIGHT = 26;
const LEGEND_ROW = 18;
const CHANCE = 0.5;
/** Room left below the lowest and above the highest value on a panel's y axis. */
const Y_PAD = 0.03;

const STYLE = [
  'text { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 11px; fill: #4a5665; }',
  '.title { font-size: 13px; font-weight: 600; fill: #1f2933; }',
  '.panel-title { font-size: 12px; font-weight: 600; fill: #1f2933; }',
  '.grid { stroke: #e6eaef; }',
  '.axis { stroke: #7b8794; }',
  '.chance { stroke: #9aa5b1; stroke-width: 1.2; }',
  '.series { fill: none; stroke-width: 2; }',
  '.reference { fill: none; stroke-width: 1.5; }',
  '.errorbar { stroke-width: 1.2; }',
].join(' ');

/**
 * Dark grey dash patterns for the references (methods that read no concept set), apart from the
 * palette colours of the lines, so that a reference never shares a learner's look.
 */
const REFERENCE_STYLES: readonly { stroke: string; dash: string }[] = [
  { stroke: '#1f2933', dash: '8 4' },
  { stroke: '#52606d', dash: '2 3' },
  { stroke: '#1f2933', dash: '8 3 2 3' },
  { stroke: '#7b8794', dash: '4 4' },
];

/** Each method's line style: learners take the palette in order, references the dash patterns. */
function methodStyles(budget: BudgetResult): Map<string, { stroke: string; dash?: string }> {
  const free = new Set(budget.concept_free);
  let learners = 0;
  let references = 0;
  return new Map(budget.methods.map((m) => [m, free.has(m) ? REFERENCE_STYLES[references++ % REFERENCE_STYLES.length]! : { stroke: colour(learners++) }]));
}

/** The stroke attributes of a style. */
const strokeAttrs = (style: { stroke: string; dash?: string }): string =>
  `stroke="${style.stroke}"${style.dash === undefined ? '' : ` stroke-dasharray="${style.dash}"`}`;

/** A coordinate with one decimal; a non-finite one is a bug here, not something to draw. */
function px(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`budget chart: non-finite coordinate ${v}`);
  return (Math.round(v * 10) / 10).toString();
}

/** One panel at horizontal offset `ox`: y in percent over the values shown (chance included), x on a log axis over the sizes. */
function panel(budget: BudgetResult, metric: BudgetMetric, title: string, ox: number, oy: number): string {
  const free = new Set(budget.concept_free);
  const styles = methodStyles(budget);
  const { points } = budget;
  const values = points.flatMap((p) =>
    Object.values(p.methods).flatMap((m) => [m[metric].mean - m[metric].std, m[metric].mean + m[metric].std].filter(Number.isFinite)),
  );
  // A little room around the values and chance, so that neither lies on the frame (where the axis line would hide it).
  const yt = niceTicks(Math.max(0, minOf([...values, CHANCE]) - Y_PAD), Math.min(1, maxOf([...values, CHANCE]) + Y_PAD), 5);
  const yStep = yt.ticks.length > 1 ? yt.ticks[1]! - yt.ticks[0]! : 0.1;
  const plotLeft = ox + PANEL.left;
  const plotRight = ox + PANEL.width - PANEL.right;
  const plotTop = oy + PANEL.top;
  const plotBottom = oy + PANEL.height - PANEL.bottom;
  const y = (v: number): number => plotBottom - ((v - yt.lo) / (yt.hi - yt.lo)) * (plotBottom - plotTop);
  // Log axis over the sizes, padded so the first and last points sit inside the frame.
  const logs = points.map((p) => Math.log10(p.n_concept));
  const span = maxOf(logs) - minOf(logs);
  const pad = span > 0 ? span * 0.08 : 0.5;
  const [l0, l1] = [minOf(logs) - pad, maxOf(logs) + pad];
  const x = (n: number): number => plotLeft + ((Math.log10(n) - l0) / (l1 - l0)) * (plotRight - plotLeft);

  let out = `<g class="panel" data-metric="${metric}">`;
  out += `<text x="${px((plotLeft + plotRight) / 2)}" y="${px(oy + 16)}" text-anchor="middle" class="panel-title">${escapeHtml(title)}</text>`;
  for (const t of yt.ticks) {
    out += `<line x1="${px(plotLeft)}" x2="${px(plotRight)}" y1="${px(y(t))}" y2="${px(y(t))}" class="grid"/>`;
    out += `<text x="${px(plotLeft - 5)}" y="${px(y(t) + 3.5)}" text-anchor="end" class="tick">${escapeHtml(`${tickLabel(100 * t, 100 * yStep)}%`)}</text>`;
  }
  // x ticks at the sizes; a label that would run into the one before it is left out (its point still shows).
  let lastRight = -Infinity;
  for (const p of points) {
    const cx = x(p.n_concept);
    out += `<line x1="${px(cx)}" x2="${px(cx)}" y1="${px(plotBottom)}" y2="${px(plotBottom + 4)}" class="axis"/>`;
    const label = sizeLabel(p);
    const half = label.length * 3.2;
    if (cx - half < lastRight + 4) continue;
    lastRight = cx + half;
    out += `<text x="${px(cx)}" y="${px(plotBottom + 16)}" text-anchor="middle" class="tick">${escapeHtml(label)}</text>`;
  }
  out += `<text x="${px((plotLeft + plotRight) / 2)}" y="${px(oy + PANEL.height - 10)}" text-anchor="middle" class="axis-name">concept-set size (bios, log scale)</text>`;
  out += `<line x1="${px(plotLeft)}" x2="${px(plotRight)}" y1="${px(plotBottom)}" y2="${px(plotBottom)}" class="axis"/>`;
  out += `<line x1="${px(plotLeft)}" x2="${px(plotLeft)}" y1="${px(plotTop)}" y2="${px(plotBottom)}" class="axis"/>`;
  out += `<line x1="${px(plotLeft)}" x2="${px(plotRight)}" y1="${px(y(CHANCE))}" y2="${px(y(CHANCE))}" class="chance"><title>chance: 50%</title></line>`;
  out += `<text x="${px(plotRight - 2)}" y="${px(y(CHANCE) - 3)}" text-anchor="end" class="tick">chance</text>`;

  for (const method of budget.methods) {
    const style = styles.get(method)!;
    const { stroke } = style;
    const attrs = `data-method="${escapeHtml(method)}" ${strokeAttrs(style)}`;
    if (free.has(method)) {
      const s = points[0]?.methods[method]?.[metric];
      if (s === undefined || !Number.isFinite(s.mean)) continue;
      const tip = `${method} (reads no concept set): ${percent(s.mean)} ± ${percent(s.std)}`;
      out += `<polyline class="reference" ${attrs} points="${px(plotLeft)},${px(y(s.mean))} ${px(plotRight)},${px(y(s.mean))}"><title>${escapeHtml(tip)}</title></polyline>`;
      continue;
    }
    const drawn = points.flatMap((p) => {
      const s = p.methods[method]?.[metric];
      return s === undefined || !Number.isFinite(s.mean) ? [] : [{ p, s }];
    });
    out += `<polyline class="series" ${attrs} points="${drawn.map(({ p, s }) => `${px(x(p.n_concept))},${px(y(s.mean))}`).join(' ')}"/>`;
    for (const { p, s } of drawn) {
      const cx = x(p.n_concept);
      if (s.std > 0 && Number.isFinite(s.std)) {
        const [lo, hi] = [y(Math.max(yt.lo, s.mean - s.std)), y(Math.min(yt.hi, s.mean + s.std))];
        out += `<line x1="${px(cx)}" x2="${px(cx)}" y1="${px(lo)}" y2="${px(hi)}" stroke="${stroke}" class="errorbar"/>`;
      }
      const tip = `${method}, concept set ${sizeLabel(p)}: ${percent(s.mean)} ± ${percent(s.std)}`;
      out += `<circle cx="${px(cx)}" cy="${px(y(s.mean))}" r="3" fill="${stroke}"><title>${escapeHtml(tip)}</title></circle>`;
    }
  }
  return `${out}</g>`;
}

/** The legend under the panels: a line sample per method (dashed for the references) and its name. */
function legendRows(budget: BudgetResult, top: number, width: number): { svg: string; height: number } {
  const free = new Set(budget.concept_free);
  const styles = methodStyles(budget);
  const labels = budget.methods.map((m) => (free.has(m) ? `${m} (no concept labels)` : m));
  // Columns as wide as the longest label (about 6.5 px a character at 11 px) after a 30 px line sample.
  const column = 30 + 6.5 * maxOf(labels.map((l) => l.length)) + 16;
  const perRow = Math.max(1, Math.floor((width - 20) / column));
  let out = '<g class="legend">';
  labels.forEach((label, i) => {
    const lx = 20 + (i % perRow) * column;
    const ly = top + Math.floor(i / perRow) * LEGEND_ROW;
    const cls = free.has(budget.methods[i]!) ? 'reference' : 'series';
    out += `<polyline class="${cls}" ${strokeAttrs(styles.get(budget.methods[i]!)!)} points="${px(lx)},${ly} ${px(lx + 24)},${ly}"/>`;
    out += `<text x="${px(lx + 30)}" y="${ly + 4}">${escapeHtml(label)}</text>`;
  });
  out += '</g>';
  return { svg: out, height: Math.ceil(budget.methods.length / perRow) * LEGEND_ROW };
}

/** budget.svg: the three panels side by side, the legend under them. */
export function renderBudgetChart(budget: BudgetResult): string {
  if (budget.points.length === 0) throw new Error('budget chart: budget.json has no sizes');
  const width = PANELS.length * PANEL.width + 20;
  const legendTop = TITLE_HEIGHT + PANEL.height + 12;
  const legend = legendRows(budget, legendTop, width);
  const height = legendTop + legend.height + 8;
  const seeds = budget.seeds.length;
  const title = `${budget.name}: metrics against the concept-set size (mean ± std over ${seeds} seed${seeds === 1 ? '' : 's'})`;
  let out = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img">`;
  out += `<title>${escapeHtml(title)}</title><style>${STYLE}</style>`;
  out += `<rect width="${width}" height="${height}" fill="#fff"/>`;
  out += `<text x="20" y="18" class="title">${escapeHtml(title)}</text>`;
  PANELS.forEach((p, i) => {
    out += panel(budget, p.metric, p.title, 10 + i * PANEL.width, TITLE_HEIGHT);
  });
  out += legend.svg;
  return `${out}</svg>\n`;
}
