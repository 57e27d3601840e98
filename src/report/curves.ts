/**
 * Training curves from history.jsonl: one panel per stage (a mask fit, a probe, an SAE), with a
 * chart of its losses together (every value named `loss` or `*_loss`) and one chart per other value
 * (temperature, FVE, L0, ...), against the step. Long stages are thinned to at most `MAX_POINTS`
 * points per series (every k-th, always keeping the last), which a 300-pixel chart cannot tell apart.
 */
import type { HistoryLine } from './run-dir.js';
import { escapeHtml } from './escape.js';
import { colour, legend, lineChart, type Series } from './svg.js';

/** Points per series kept in a chart. */
export const MAX_POINTS = 400;

/** Every k-th point so that at most `max` remain, the last always included. */
export function thin<T>(points: readonly T[], max = MAX_POINTS): T[] {
  if (points.length <= max) return [...points];
  const stride = Math.ceil(points.length / max);
  const out: T[] = [];
  for (let i = 0; i < points.length; i += stride) out.push(points[i]!);
  if ((points.length - 1) % stride !== 0) out.push(points[points.length - 1]!);
  return out;
}

const isLoss = (key: string): boolean => key === 'loss' || key.endsWith('_loss');

/** The stage's name without its seed part: "sae_mask/seed-42/mask" -> "sae_mask/mask", and that seed. */
function family(stage: string): { name: string; seed: number } {
  const m = /(^|\/)seed-(-?\d+)(\/|$)/.exec(stage);
  if (m === null) return { name: stage, seed: 0 };
  return { name: stage.slice(0, m.index) + (m[1] !== '' && m[3] !== '' ? '/' : '') + stage.slice(m.index + m[0].length), seed: Number(m[2]) };
}

/**
 * The history grouped by stage, each stage's value names in order of first appearance. Stages of
 * one kind (the same name but for the seed) are placed together, by seed, in the order the kind
 * first appears.
 */
export function stages(history: readonly HistoryLine[]): { stage: string; keys: string[]; lines: HistoryLine[] }[] {
  const byStage = new Map<string, { keys: Set<string>; lines: HistoryLine[] }>();
  for (const line of history) {
    let s = byStage.get(line.stage);
    if (s === undefined) byStage.set(line.stage, (s = { keys: new Set(), lines: [] }));
    s.lines.push(line);
    for (const k of Object.keys(line.values)) s.keys.add(k);
  }
  const firstOfFamily = new Map<string, number>();
  [...byStage.keys()].forEach((stage, i) => {
    const f = family(stage).name;
    if (!firstOfFamily.has(f)) firstOfFamily.set(f, i);
  });
  const order = (stage: string): [number, number] => [firstOfFamily.get(family(stage).name)!, family(stage).seed];
  return [...byStage.entries()]
    .sort(([a], [b]) => order(a)[0] - order(b)[0] || order(a)[1] - order(b)[1])
    .map(([stage, s]) => ({ stage, keys: [...s.keys], lines: s.lines }));
}

function seriesOf(lines: readonly HistoryLine[], key: string, i: number): Series {
  const points = lines.filter((l) => l.values[key] !== undefined && Number.isFinite(l.values[key])).map((l) => [l.step, l.values[key]!] as const);
  return { label: key, colour: colour(i), points: thin(points) };
}

/** The curves section's HTML. */
export function trainingCurves(history: readonly HistoryLine[]): string {
  if (history.length === 0) return '<p class="note">history.jsonl is empty or missing: no training curves were logged.</p>';
  const panels = stages(history).map(({ stage, keys, lines }) => {
    const losses = keys.filter(isLoss);
    const groups = [
      ...(losses.length > 0 ? [{ title: losses.length > 1 ? 'losses' : losses[0]!, keys: losses }] : []),
      ...keys.filter((k) => !isLoss(k)).map((k) => ({ title: k, keys: [k] })),
    ];
    const charts = groups.map((g) => {
      const series = g.keys.map((k, i) => seriesOf(lines, k, i)).filter((s) => s.points.length > 0);
      if (series.length === 0) return `<figure class="small"><figcaption>${escapeHtml(g.title)}</figcaption><p class="note">no finite values</p></figure>`;
      return `<figure class="small"><figcaption>${escapeHtml(g.title)}</figcaption>${lineChart(`${stage}: ${g.title}`, series, 'step')}${series.length > 1 ? legend(series) : ''}</figure>`;
    });
    const steps = lines.length;
    return `<section class="stage"><h4>${escapeHtml(stage)} <small>${steps} logged step${steps === 1 ? '' : 's'}</small></h4><div class="charts">${charts.join('')}</div></section>`;
  });
  return `<div class="stages">${panels.join('')}</div>`;
}
