/** budget.md and budget.svg (src/report/budget.ts) from a hand-made budget.json. */
import { describe, expect, it } from 'vitest';
import type { BudgetMethodResult, BudgetResult, BudgetSize } from '../../src/experiment/budget.js';
import type { Summary } from '../../src/experiment/results.js';
import { renderBudgetChart, renderBudgetTable } from '../../src/report/budget.js';

const s = (mean: number, std = 0.01): Summary => ({ mean, std, ci95: [mean - 2 * std, mean + 2 * std] });

/** A method's entry whose four metrics are `base` plus small per-metric offsets. */
function entry(base: number, run: string, nConcept: number | null): BudgetMethodResult {
  return {
    profession_acc: s(base + 0.1),
    gender_agreement: s(base + 0.05),
    worst_group_acc: s(base),
    gender_probe_acc: s(base - 0.05),
    units_removed: 3,
    n_concept: nConcept,
    run,
  };
}

/** Sizes 64, 256 and all (= 3000): LEACE improves with the budget; original and oracle are concept-free. */
function fixture(name = 'synthetic <budget>'): BudgetResult {
  const sizes: [BudgetSize, number][] = [
    [64, 64],
    [256, 256],
    ['all', 3000],
  ];
  return {
    format: 'sae-eraser/budget',
    version: 1,
    config: 'c.json',
    name,
    model: 'm',
    probeHook: 'layers.3.resid_out',
    professions: ['surgeon', 'nurse'],
    seeds: [1, 2, 3],
    pool: 3000,
    methods: ['original', 'oracle', 'leace', 'shift_retrain'],
    concept_free: ['original', 'oracle'],
    points: sizes.map(([size, n], i) => ({
      size,
      n_concept: n,
      run: `concept-${size}`,
      methods: {
        original: entry(0.3, 'concept-64', null),
        oracle: entry(0.8, 'concept-64', null),
        leace: entry(0.6 + 0.05 * i, `concept-${size}`, n),
        shift_retrain: entry(0.55 + 0.02 * i, `concept-${size}`, n),
      },
    })),
  };
}

interface Element {
  name: string;
  attrs: Record<string, string>;
  children: Element[];
  text: string;
}

/** A strict little XML reader: every tag closed in order, attributes quoted; throws on anything else. */
function parseXml(xml: string): Element {
  const root: Element = { name: '#root', attrs: {}, children: [], text: '' };
  const stack = [root];
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  let m: RegExpExecArray | null;
  let at = 0;
  while ((m = tag.exec(xml)) !== null) {
    at = tag.lastIndex;
    const top = stack[stack.length - 1]!;
    if (m[5] !== undefined) {
      expect(m[5], 'text holds no raw "&" outside entities').not.toMatch(/&(?!(amp|lt|gt|quot|#39);)/);
      top.text += m[5];
      continue;
    }
    if (m[1] === '/') {
      expect(m[2], 'closing tag matches').toBe(top.name);
      stack.pop();
      continue;
    }
    const attrs = Object.fromEntries(Array.from(m[3]!.matchAll(/([\w:-]+)="([^"]*)"/g), (a) => [a[1]!, a[2]!]));
    const el: Element = { name: m[2]!, attrs, children: [], text: '' };
    top.children.push(el);
    if (m[4] !== '/') stack.push(el);
  }
  expect(at, 'the whole document is tags and text').toBe(xml.length);
  expect(stack, 'every tag is closed').toHaveLength(1);
  expect(root.children).toHaveLength(1);
  return root.children[0]!;
}

function all(el: Element, pred: (e: Element) => boolean): Element[] {
  return [...(pred(el) ? [el] : []), ...el.children.flatMap((c) => all(c, pred))];
}

const textOf = (el: Element): string => el.text + el.children.map(textOf).join('');

describe('renderBudgetTable', () => {
  it('has a row per method and a group of four columns per size, in percent, concept-free methods marked', () => {
    const md = renderBudgetTable(fixture());
    const rows = md.split('\n').filter((l) => l.startsWith('|'));
    const header = rows[0]!.split('|').map((c) => c.trim());
    expect(header.slice(1, 6)).toEqual(['method', '64: profession', '64: agreement', '64: worst group', '64: gender probe']);
    expect(header).toContain('all (3000): gender probe');
    expect(header.filter((c) => c.includes(':'))).toHaveLength(12);
    expect(rows).toHaveLength(2 + 4);
    const leace = rows
      .find((r) => r.startsWith('| leace |'))!
      .split('|')
      .map((c) => c.trim());
    // The groups run 64, 256, all: worst group at each size is 60%, 65%, 70%.
    expect([leace[4], leace[8], leace[12]]).toEqual(['60.0 ± 1.0', '65.0 ± 1.0', '70.0 ± 1.0']);
    expect(rows.some((r) => r.startsWith('| original † |'))).toBe(true);
    expect(md).toMatch(/† reads no concept set: scored once \(in `concept-64\/`\)/);
    expect(md).toMatch(/the pool: 3000 training bios of surgeon and nurse/);
  });
});

describe('renderBudgetChart', () => {
  const svg = renderBudgetChart(fixture());
  const doc = parseXml(svg.trim());
  const panels = all(doc, (e) => e.name === 'g' && e.attrs.class === 'panel');

  it('is a standalone SVG document with its styles, a title and no non-finite coordinate', () => {
    expect(doc.name).toBe('svg');
    expect(doc.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(all(doc, (e) => e.name === 'style')).toHaveLength(1);
    expect(textOf(doc.children.find((c) => c.name === 'title')!)).toBe(
      'synthetic &lt;budget&gt;: metrics against the concept-set size (mean ± std over 3 seeds)',
    );
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('has three panels, each with a polyline per method: through every size for learners, flat references for concept-free methods', () => {
    expect(panels.map((p) => p.attrs['data-metric'])).toEqual(['worst_group_acc', 'gender_agreement', 'gender_probe_acc']);
    for (const panel of panels) {
      const lines = all(panel, (e) => e.name === 'polyline');
      expect(lines.map((l) => l.attrs['data-method'])).toEqual(['original', 'oracle', 'leace', 'shift_retrain']);
      const pts = (l: Element): number[][] => l.attrs.points!.split(' ').map((p) => p.split(',').map(Number));
      for (const l of lines) {
        const p = pts(l);
        if (l.attrs.class === 'reference') {
          expect(p).toHaveLength(2);
          expect(p[0]![1]).toBe(p[1]![1]);
        } else {
          expect(l.attrs.class).toBe('series');
          expect(p).toHaveLength(3);
          // LEACE and SHIFT improve in the fixture: higher values are drawn higher up (smaller y).
          expect(p[0]![1]).toBeGreaterThan(p[2]![1]!);
        }
      }
      expect(lines.filter((l) => l.attrs.class === 'reference').map((l) => l.attrs['data-method'])).toEqual(['original', 'oracle']);
      // No two methods look alike, and only the references are dashed.
      expect(new Set(lines.map((l) => `${l.attrs.stroke} ${l.attrs['stroke-dasharray']}`)).size).toBe(lines.length);
      for (const l of lines) expect(l.attrs['stroke-dasharray'] !== undefined, l.attrs['data-method']).toBe(l.attrs.class === 'reference');
      // The oracle (80%) is above the original (30%).
      expect(pts(lines[1]!)[0]![1]).toBeLessThan(pts(lines[0]!)[0]![1]!);
    }
  });

  it('puts the sizes on a log axis: equal ratios, equal distances', () => {
    const leace = all(panels[0]!, (e) => e.name === 'polyline' && e.attrs['data-method'] === 'leace')[0]!;
    const xs = leace.attrs.points!.split(' ').map((p) => Number(p.split(',')[0]));
    const perDecade = (xs[1]! - xs[0]!) / Math.log10(256 / 64);
    expect((xs[2]! - xs[1]!) / Math.log10(3000 / 256)).toBeCloseTo(perDecade, 0);
  });

  it('labels the axes and panels, marks chance at 50% and has a legend entry per method', () => {
    for (const panel of panels) {
      const texts = all(panel, (e) => e.name === 'text').map(textOf);
      expect(texts).toEqual(expect.arrayContaining(['64', '256', 'all (3000)', 'concept-set size (bios, log scale)', 'chance']));
      // The chance line sits at 50% of the y axis its percent tick labels (3.5 px below their grid line) define.
      const ticks = all(panel, (e) => e.name === 'text' && /^\d+%$/.test(textOf(e))).map((e) => [parseFloat(textOf(e)) / 100, Number(e.attrs.y) - 3.5]);
      expect(ticks.length).toBeGreaterThanOrEqual(3);
      const [[v0, y0], [v1, y1]] = [ticks[0]!, ticks[ticks.length - 1]!];
      const chance = all(panel, (e) => e.attrs.class === 'chance');
      expect(chance).toHaveLength(1);
      expect(Number(chance[0]!.attrs.y1)).toBeCloseTo(y0! + ((0.5 - v0!) / (v1! - v0!)) * (y1! - y0!), 0);
    }
    expect(panels.map((p) => textOf(all(p, (e) => e.attrs.class === 'panel-title')[0]!))).toEqual([
      'worst-group accuracy',
      'gender agreement',
      'gender probe after erasure',
    ]);
    const legend = all(doc, (e) => e.name === 'g' && e.attrs.class === 'legend')[0]!;
    expect(all(legend, (e) => e.name === 'text').map(textOf)).toEqual(['original (no concept labels)', 'oracle (no concept labels)', 'leace', 'shift_retrain']);
  });

  it('draws a single size as points and keeps within the frame', () => {
    const one = fixture();
    one.points = one.points.slice(0, 1);
    const single = parseXml(renderBudgetChart(one).trim());
    const circles = all(single, (e) => e.name === 'circle');
    expect(circles).toHaveLength(3 * 2);
    const width = Number(single.attrs.width);
    for (const c of circles) {
      expect(Number(c.attrs.cx)).toBeGreaterThan(0);
      expect(Number(c.attrs.cx)).toBeLessThan(width);
    }
  });
});
