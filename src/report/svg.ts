/**
 * Chart primitives of the report page, rendered to inline SVG strings when the page is built (the
 * page loads nothing and runs no chart code). Each chart is a fixed-size `<svg>` with a `<title>`,
 * axes with "nice" ticks, and marks as `rect`, `path` and `circle`; hovering a mark shows its value
 * (an SVG `<title>` child). Non-finite values are dropped before layout, so no coordinate is NaN;
 * callers show a sentence instead of a chart when nothing is left to draw.
 */
import { maxOf, minOf } from '../util/arrays.js';
import { escapeHtml } from './escape.js';

/** Colours for series, seeds and methods (Tableau 10), in order. */
export const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'] as const;

/** The `i`-th palette colour (cycling). */
export function colour(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}

/** A coordinate with one decimal; a non-finite one is a bug in the caller's filtering. */
function num(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`report chart: non-finite coordinate ${v}`);
  return (Math.round(v * 10) / 10).toString();
}

/** Ticks at 1, 2 or 5 times a power of ten covering [min, max] with about `count` intervals (`integer`: steps of at least 1). */
export function niceTicks(min: number, max: number, count = 5, integer = false): { lo: number; hi: number; ticks: number[] } {
  let a = min;
  let b = max;
  if (!(Number.isFinite(a) && Number.isFinite(b))) throw new Error(`niceTicks: non-finite range [${min}, ${max}]`);
  if (a === b) {
    // A constant series still needs an axis: a unit interval around it (or around 0 for 0).
    const pad = a === 0 ? 1 : Math.abs(a) * 0.1;
    a -= pad;
    b += pad;
  }
  const raw = (b - a) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const nice = [1, 2, 5, 10].map((m) => m * power).find((s) => (b - a) / s <= count) ?? 10 * power;
  const step = integer ? Math.max(1, Math.round(nice)) : nice;
  const lo = Math.floor(a / step) * step;
  const hi = Math.ceil(b / step) * step;
  const ticks: number[] = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) ticks.push(lo + i * step);
  return { lo, hi, ticks };
}

/** A tick label: as few decimals as the step needs, or exponent form for very large/small values. */
export function tickLabel(v: number, step: number): string {
  if (v === 0) return '0';
  const abs = Math.abs(v);
  if (abs >= 1e5 || abs < 1e-3) return v.toExponential(1);
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(decimals);
}

/** A value in percent with one decimal. */
export function percent(v: number): string {
  return `${(100 * v).toFixed(1)}%`;
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

function open(frame: Frame, title: string): string {
  return `<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="${frame.width}" height="${frame.height}" viewBox="0 0 ${frame.width} ${frame.height}" role="img"><title>${escapeHtml(title)}</title>`;
}

/** Horizontal grid lines and labels of a y axis; `y` maps a value to its pixel row. */
function yAxis(frame: Frame, ticks: number[], y: (v: number) => number, label: (v: number) => string, name: string): string {
  const x0 = frame.left;
  const x1 = frame.width - frame.right;
  let out = '';
  for (const t of ticks) {
    out += `<line x1="${x0}" x2="${x1}" y1="${num(y(t))}" y2="${num(y(t))}" class="grid"/>`;
    out += `<text x="${x0 - 4}" y="${num(y(t) + 3.5)}" text-anchor="end" class="tick">${escapeHtml(label(t))}</text>`;
  }
  if (name !== '') {
    const cy = (frame.top + frame.height - frame.bottom) / 2;
    out += `<text transform="translate(11 ${num(cy)}) rotate(-90)" text-anchor="middle" class="axis-name">${escapeHtml(name)}</text>`;
  }
  return out;
}

export interface Bar {
  /** Seed or series name, shown on hover. */
  label: string;
  value: number;
  /** The 95% interval, drawn as an error bar when given. */
  lo?: number;
  hi?: number;
  colour: string;
}

export interface BarGroup {
  /** The group's name under the x axis (a method). */
  label: string;
  /** Bars in slot order; undefined leaves the slot empty (e.g. a seed not scored yet). */
  bars: (Bar | undefined)[];
}

/**
 * Grouped bars with error bars on a fixed [0, 1] axis in percent: one group per method, one bar
 * per seed.
 */
export function barChart(title: string, groups: readonly BarGroup[], yName: string): string {
  const slots = Math.max(1, maxOf(groups.map((g) => g.bars.length)));
  const barWidth = slots <= 2 ? 14 : slots <= 4 ? 10 : 7;
  const groupWidth = slots * barWidth + 18;
  const longest = maxOf(groups.map((g) => g.label.length));
  const rotate = longest * 6.5 > groupWidth - 4;
  const frame: Frame = { width: 0, height: 0, left: 48, right: 10, top: 10, bottom: rotate ? 20 + Math.min(110, longest * 5) : 28 };
  frame.width = Math.max(260, frame.left + frame.right + groups.length * groupWidth);
  frame.height = 190 + frame.bottom;
  const plotBottom = frame.height - frame.bottom;
  const y = (v: number): number => plotBottom - Math.min(1, Math.max(0, v)) * (plotBottom - frame.top);
  const { ticks } = niceTicks(0, 1, 5);
  let out = open(frame, title) + yAxis(frame, ticks, y, (t) => `${Math.round(t * 100)}%`, yName);
  groups.forEach((g, gi) => {
    const gx = frame.left + gi * groupWidth + 9;
    g.bars.forEach((b, bi) => {
      if (b === undefined || !Number.isFinite(b.value)) return;
      const x = gx + bi * barWidth;
      const interval =
        b.lo !== undefined && b.hi !== undefined && Number.isFinite(b.lo) && Number.isFinite(b.hi) ? ` [${percent(b.lo)}, ${percent(b.hi)}]` : '';
      const tip = `<title>${escapeHtml(`${g.label}, ${b.label}: ${percent(b.value)}${interval}`)}</title>`;
      const top = y(b.value);
      out += `<rect x="${num(x + 1)}" y="${num(top)}" width="${barWidth - 2}" height="${num(Math.max(0.5, plotBottom - top))}" fill="${b.colour}">${tip}</rect>`;
      if (interval !== '') {
        const cx = x + barWidth / 2;
        const [ylo, yhi] = [y(b.lo!), y(b.hi!)];
        out += `<path d="M${num(cx)} ${num(ylo)}V${num(yhi)}M${num(cx - 2.5)} ${num(ylo)}H${num(cx + 2.5)}M${num(cx - 2.5)} ${num(yhi)}H${num(cx + 2.5)}" class="errorbar"/>`;
      }
    });
    const lx = gx + (slots * barWidth) / 2;
    out += rotate
      ? `<text transform="translate(${num(lx + 3)} ${plotBottom + 10}) rotate(-35)" text-anchor="end" class="tick">${escapeHtml(g.label)}</text>`
      : `<text x="${num(lx)}" y="${plotBottom + 14}" text-anchor="middle" class="tick">${escapeHtml(g.label)}</text>`;
  });
  out += `<line x1="${frame.left}" x2="${frame.width - frame.right}" y1="${plotBottom}" y2="${plotBottom}" class="axis"/>`;
  return `${out}</svg>`;
}

export interface Series {
  label: string;
  colour: string;
  /** [x, y] points in x order; non-finite ones are dropped. */
  points: readonly (readonly [number, number])[];
}

/** Lines over a shared x axis (steps); a series of one point is drawn as a dot. */
export function lineChart(title: string, series: readonly Series[], xName: string): string {
  const clean = series.map((s) => ({ ...s, points: s.points.filter(([x, v]) => Number.isFinite(x) && Number.isFinite(v)) })).filter((s) => s.points.length > 0);
  if (clean.length === 0) throw new Error(`lineChart "${title}": no finite points (the caller shows a note instead)`);
  const xs = clean.flatMap((s) => s.points.map((p) => p[0]));
  const ys = clean.flatMap((s) => s.points.map((p) => p[1]));
  const xt = niceTicks(minOf(xs), maxOf(xs), 4, xs.every(Number.isInteger));
  const yt = niceTicks(minOf(ys), maxOf(ys), 4);
  const frame: Frame = { width: 280, height: 160, left: 50, right: 10, top: 8, bottom: 30 };
  const plotBottom = frame.height - frame.bottom;
  // The x axis spans the steps logged (a curve runs to the right edge); its ticks are those inside.
  const [x0, x1] = minOf(xs) < maxOf(xs) ? [minOf(xs), maxOf(xs)] : [xt.lo, xt.hi];
  const x = (v: number): number => frame.left + ((v - x0) / (x1 - x0)) * (frame.width - frame.left - frame.right);
  const y = (v: number): number => plotBottom - ((v - yt.lo) / (yt.hi - yt.lo)) * (plotBottom - frame.top);
  const yStep = yt.ticks.length > 1 ? yt.ticks[1]! - yt.ticks[0]! : 1;
  const xStep = xt.ticks.length > 1 ? xt.ticks[1]! - xt.ticks[0]! : 1;
  let out = open(frame, title) + yAxis(frame, yt.ticks, y, (t) => tickLabel(t, yStep), '');
  for (const t of xt.ticks) {
    if (t < x0 || t > x1) continue;
    out += `<text x="${num(x(t))}" y="${plotBottom + 13}" text-anchor="middle" class="tick">${escapeHtml(tickLabel(t, xStep))}</text>`;
  }
  out += `<text x="${num((frame.left + frame.width - frame.right) / 2)}" y="${frame.height - 3}" text-anchor="middle" class="axis-name">${escapeHtml(xName)}</text>`;
  for (const s of clean) {
    const last = s.points[s.points.length - 1]!;
    const tip = `<title>${escapeHtml(`${s.label}: ${last[1].toPrecision(4)} at ${xName} ${last[0]}`)}</title>`;
    if (s.points.length === 1) {
      out += `<circle cx="${num(x(last[0]))}" cy="${num(y(last[1]))}" r="3" fill="${s.colour}">${tip}</circle>`;
      continue;
    }
    const d = s.points.map(([px, py], i) => `${i === 0 ? 'M' : 'L'}${num(x(px))} ${num(y(py))}`).join('');
    out += `<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="1.5">${tip}</path>`;
  }
  out += `<line x1="${frame.left}" x2="${frame.width - frame.right}" y1="${plotBottom}" y2="${plotBottom}" class="axis"/>`;
  return `${out}</svg>`;
}

/** Fill colour of a value in [0, 1] on a light-to-dark blue ramp, and the text colour readable on it. */
function ramp(v: number): { fill: string; text: string } {
  const t = Math.min(1, Math.max(0, v));
  const [r0, g0, b0] = [247, 251, 255];
  const [r1, g1, b1] = [8, 48, 107];
  const mix = (a: number, b: number): number => Math.round(a + (b - a) * t);
  return { fill: `rgb(${mix(r0, r1)},${mix(g0, g1)},${mix(b0, b1)})`, text: t > 0.55 ? '#fff' : '#111' };
}

/** A method x subgroup grid of accuracies in [0, 1], each cell labelled in percent; undefined cells are grey. */
export function heatmap(title: string, rows: readonly string[], cols: readonly string[], values: readonly (readonly (number | undefined)[])[]): string {
  const cellW = Math.max(84, 7 * maxOf(cols.map((c) => c.length)) + 8);
  const cellH = 24;
  const left = 16 + 7 * Math.max(4, maxOf(rows.map((r) => r.length)));
  const frame: Frame = { width: left + cols.length * cellW + 8, height: 26 + rows.length * cellH + 4, left, right: 8, top: 26, bottom: 4 };
  let out = open(frame, title);
  cols.forEach((c, ci) => {
    out += `<text x="${num(left + ci * cellW + cellW / 2)}" y="17" text-anchor="middle" class="tick">${escapeHtml(c)}</text>`;
  });
  rows.forEach((r, ri) => {
    const top = frame.top + ri * cellH;
    out += `<text x="${left - 6}" y="${top + 16}" text-anchor="end" class="tick">${escapeHtml(r)}</text>`;
    cols.forEach((c, ci) => {
      const v = values[ri]?.[ci];
      const x = left + ci * cellW;
      if (v === undefined || !Number.isFinite(v)) {
        out += `<rect x="${x}" y="${top}" width="${cellW - 2}" height="${cellH - 2}" fill="#ddd"><title>${escapeHtml(`${r}, ${c}: not scored`)}</title></rect>`;
        out += `<text x="${num(x + cellW / 2)}" y="${top + 16}" text-anchor="middle" class="cell">–</text>`;
        return;
      }
      const { fill, text } = ramp(v);
      out += `<rect x="${x}" y="${top}" width="${cellW - 2}" height="${cellH - 2}" fill="${fill}"><title>${escapeHtml(`${r}, ${c}: ${percent(v)}`)}</title></rect>`;
      out += `<text x="${num(x + cellW / 2 - 1)}" y="${top + 16}" text-anchor="middle" class="cell" fill="${text}">${escapeHtml(percent(v))}</text>`;
    });
  });
  return `${out}</svg>`;
}

export interface Bin {
  lo: number;
  hi: number;
  count: number;
  colour: string;
}

/**
 * A histogram with a log count axis (a mask keeps thousands of units and removes a few, both must
 * show): a count c >= 1 is drawn at height (1 + log10 c) / (1 + D), with 10^D the first power of ten
 * at or above the largest count, and a dashed marker line at x = `marker` when it lies in range.
 */
export function histogram(title: string, bins: readonly Bin[], xName: string, marker?: number): string {
  if (bins.length === 0) throw new Error(`histogram "${title}": no bins`);
  const lo = bins[0]!.lo;
  const hi = bins[bins.length - 1]!.hi;
  const frame: Frame = { width: 280, height: 160, left: 50, right: 10, top: 8, bottom: 30 };
  const plotBottom = frame.height - frame.bottom;
  const decades = Math.max(0, Math.ceil(Math.log10(Math.max(1, maxOf(bins.map((b) => b.count))))));
  const x = (v: number): number => frame.left + ((v - lo) / (hi - lo || 1)) * (frame.width - frame.left - frame.right);
  const y = (count: number): number => plotBottom - (count < 1 ? 0 : (1 + Math.log10(count)) / (1 + decades)) * (plotBottom - frame.top);
  const ticks = [0, ...Array.from({ length: decades + 1 }, (_, i) => 10 ** i)];
  let out = open(frame, title) + yAxis(frame, ticks, y, String, 'units');
  for (const b of bins) {
    if (b.count === 0) continue;
    const top = y(b.count);
    out += `<rect x="${num(x(b.lo) + 0.5)}" y="${num(top)}" width="${num(Math.max(0.8, x(b.hi) - x(b.lo) - 1))}" height="${num(plotBottom - top)}" fill="${b.colour}"><title>${escapeHtml(
      `${b.lo.toPrecision(3)} to ${b.hi.toPrecision(3)}: ${b.count}`,
    )}</title></rect>`;
  }
  const xt = niceTicks(lo, hi, 4);
  const xStep = xt.ticks.length > 1 ? xt.ticks[1]! - xt.ticks[0]! : 1;
  for (const t of xt.ticks) {
    if (t < lo || t > hi) continue;
    out += `<text x="${num(x(t))}" y="${plotBottom + 13}" text-anchor="middle" class="tick">${escapeHtml(tickLabel(t, xStep))}</text>`;
  }
  if (marker !== undefined && marker >= lo && marker <= hi) {
    out += `<path d="M${num(x(marker))} ${frame.top}V${plotBottom}" class="marker"/>`;
  }
  out += `<text x="${num((frame.left + frame.width - frame.right) / 2)}" y="${frame.height - 3}" text-anchor="middle" class="axis-name">${escapeHtml(xName)}</text>`;
  out += `<line x1="${frame.left}" x2="${frame.width - frame.right}" y1="${plotBottom}" y2="${plotBottom}" class="axis"/>`;
  return `${out}</svg>`;
}

/** A colour key: one swatch and label per entry (HTML, placed under a chart). */
export function legend(entries: readonly { label: string; colour: string }[]): string {
  return `<div class="legend">${entries.map((e) => `<span><i style="background:${e.colour}"></i>${escapeHtml(e.label)}</span>`).join('')}</div>`;
}
