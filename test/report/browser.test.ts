/**
 * report.html in a real browser: Debian's Chromium (installed by .ci/run), driven headless by
 * playwright-core, loads a report built from the fixture run folder from file:// and must show no
 * console error, request nothing but file:// and data: URLs, draw marks in every chart, keep the
 * planted script in a bio inert, and recompute the explorer's numbers exactly as `pageMetrics`
 * does in Node, reproducing each method's reported metrics for its own feature set. A full-page
 * screenshot is saved as report.png in the run folder.
 */
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine } from '../../src/engine/engine.js';
import { setQuiet } from '../../src/util/progress.js';
import { pageMetrics, type ExplorerMetrics } from '../../src/report/explorer.js';
import { writeReport } from '../../src/report/html.js';
import { skipWithout } from '../require.js';
import { CHROMIUM, chromiumMissing, openPage, type OpenedPage } from './chromium.js';
import { explorerData, makeRunFolder, METHODS, seedResult, XSS_BIO } from './run-fixture.js';

/** The explorer table's rows as the page shows them: metric key and the three columns' exact values. */
interface ShownRow {
  metric: string;
  current: number;
  reported: number;
  baseline: number;
}

/** The rows the page should show for `m`, in its order. */
function expectedRows(m: ExplorerMetrics): [string, number][] {
  return [
    ['profession_acc', m.profession_acc],
    ['gender_agreement', m.gender_agreement],
    ['worst_group', m.worst_group.value],
    ...Object.entries(m.subgroup_acc).map(([g, v]): [string, number] => [`subgroup:${g}`, v]),
  ];
}

async function shown(page: Page): Promise<ShownRow[]> {
  return page.$$eval('#explorer-metrics tbody tr', (rows) =>
    rows.map((r) => {
      const value = (cls: string): number => Number(r.querySelector(`td.${cls}`)!.getAttribute('data-value'));
      return { metric: r.getAttribute('data-metric')!, current: value('current'), reported: value('reported'), baseline: value('baseline') };
    }),
  );
}

const column = (rows: ShownRow[], key: 'current' | 'reported' | 'baseline'): [string, number][] => rows.map((r) => [r.metric, r[key]]);

describe.skipIf(skipWithout(chromiumMissing(), `${CHROMIUM} is missing (.ci/run installs Debian's chromium)`))('report.html in headless Chromium', () => {
  let dir: string;
  let opened: OpenedPage | undefined;
  let page: Page;
  let problems: string[] = [];
  let requests: string[] = [];

  beforeAll(async () => {
    await initEngine();
    setQuiet(true);
    dir = mkdtempSync(join(tmpdir(), 'report-browser-'));
    await makeRunFolder(dir, { xss: true, erasers: true });
    const { path } = writeReport(dir);
    opened = await openPage(path);
    ({ page, problems, requests } = opened);
  });

  // The run folder stays: its report.html and report.png are what a person looks at after CI.
  afterAll(async () => {
    await opened?.close();
  });

  it('loads with no console error and requests nothing but the file itself', () => {
    expect(problems).toEqual([]);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:'))).toEqual([]);
  });

  it('draws marks in every chart', async () => {
    const marks = await page.$$eval('svg.chart', (svgs) =>
      svgs.map((s) => ({ title: s.querySelector('title')?.textContent ?? '', marks: s.querySelectorAll('rect, path, circle').length })),
    );
    // 4 metric bar charts, the heatmap, 2 + 2 + 4 curves (probe, mask losses and temperature per seed, SAE), 2 mask histograms.
    expect(marks.length).toBeGreaterThanOrEqual(4 + 1 + 2 + 4 + 2);
    expect(marks.filter((m) => m.marks === 0)).toEqual([]);
  });

  it('shows the bio with markup as text, and runs none of it', async () => {
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(await page.locator('article.card ol.texts').allTextContents()).toEqual(expect.arrayContaining([expect.stringContaining(XSS_BIO)]));
    expect(await page.locator('img').count()).toBe(0);
  });

  it("recomputes the metrics as pageMetrics does in Node, and a method's own set reproduces its reported metrics", async () => {
    const seed1 = explorerData(1, true);
    const seed2 = explorerData(2, true);
    // Initially: seed 1, the first method (sae_mask) with its features checked.
    let rows = await shown(page);
    const own1 = pageMetrics(seed1, 'biased', new Set(METHODS.sae_mask));
    expect(column(rows, 'current')).toEqual(expectedRows(own1));
    expect(column(rows, 'reported')).toEqual(column(rows, 'current'));
    expect(rows.find((r) => r.metric === 'profession_acc')!.reported).toBe(seedResult('sae_mask', 1).profession_acc.value);
    expect(column(rows, 'baseline')).toEqual(expectedRows(pageMetrics(seed1, 'biased', new Set())));
    expect(await page.getAttribute('#explorer-status', 'data-own')).toBe('yes');
    expect(await page.textContent('#explorer-status')).toContain('every number equals its reported metrics');

    // Unchecking feature 7 leaves feature 101 removed: the numbers change to the Node computation's.
    await page.uncheck('input[data-feature="7"]');
    rows = await shown(page);
    const only101 = pageMetrics(seed1, 'biased', new Set([101]));
    expect(column(rows, 'current')).toEqual(expectedRows(only101));
    expect(only101.profession_acc).not.toBe(own1.profession_acc);
    expect(await page.getAttribute('#explorer-status', 'data-own')).toBe('no');

    await page.check('input[data-feature="55"]');
    expect(column(await shown(page), 'current')).toEqual(expectedRows(pageMetrics(seed1, 'biased', new Set([101, 55]))));

    // Another method: its features are checked and its reported metrics reproduced.
    await page.selectOption('#explorer-method', 'shift');
    rows = await shown(page);
    expect(column(rows, 'current')).toEqual(expectedRows(pageMetrics(seed1, 'biased', new Set(METHODS.shift))));
    expect(rows.find((r) => r.metric === 'gender_agreement')!.reported).toBe(seedResult('shift', 1).gender_agreement.value);
    expect(column(rows, 'reported')).toEqual(column(rows, 'current'));

    // Another head (two logits, argmax) with the same features.
    await page.selectOption('#explorer-head', 'two_class');
    expect(column(await shown(page), 'current')).toEqual(expectedRows(pageMetrics(seed1, 'two_class', new Set(METHODS.shift))));

    // Another seed: its explorer data and results.
    await page.selectOption('#explorer-seed', { label: '2' });
    rows = await shown(page);
    expect(column(rows, 'current')).toEqual(expectedRows(pageMetrics(seed2, 'biased', new Set(METHODS.sae_mask))));
    expect(column(rows, 'reported')).toEqual(column(rows, 'current'));

    await page.click('#explorer-none');
    expect(column(await shown(page), 'current')).toEqual(expectedRows(pageMetrics(seed2, 'biased', new Set())));
    expect(problems).toEqual([]);
  });

  it('saves a full-page screenshot into the run folder', async () => {
    await page.click('#explorer-own');
    // Clicking scrolled the page; the sticky navigation bar would be drawn where it stopped.
    await page.evaluate(() => window.scrollTo(0, 0));
    const path = join(dir, 'report.png');
    await page.screenshot({ path, fullPage: true });
    expect(statSync(path).size).toBeGreaterThan(10_000);
  });
});
