import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine } from '../../src/engine/engine.js';
import type { ExperimentResult } from '../../src/experiment/results.js';
import { renderTable } from '../../src/report/table.js';
import { setQuiet } from '../../src/util/progress.js';
import { makeRunFolder } from './run-fixture.js';

let dir = '';
let result: ExperimentResult;

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
  dir = mkdtempSync(join(tmpdir(), 'table-'));
  await makeRunFolder(dir);
  result = JSON.parse(readFileSync(join(dir, 'metrics.json'), 'utf8')) as ExperimentResult;
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the Markdown table', () => {
  it('has a "labels used" column with short names, hand-picked marked, and a note that explains them', () => {
    const table = renderTable(result);
    const lines = table.split('\n');
    const header = lines.find((l) => l.startsWith('| method |'))!;
    expect(header.split(' | ').slice(0, 3)).toEqual(['| method', 'labels used', 'profession acc']);
    // The separator row has as many cells as the header.
    const sep = lines[lines.indexOf(header) + 1]!;
    expect(sep.split('|').length).toBe(header.split('|').length);
    expect(table).toMatch(/^\| sae_mask \| amb\. task, concept gender, concept task \| \d/m);
    expect(table).toMatch(/^\| shift \| amb\. task \+ hand-picked \| \d/m);
    expect(table).toContain('Labels used: the labels a method read when fitted');
  });

  it('says "not recorded" for a metrics.json from before supervision was recorded', () => {
    const old = structuredClone(result);
    for (const m of Object.values(old.methods)) delete (m as Partial<typeof m>).supervision;
    expect(renderTable(old)).toMatch(/^\| shift \| not recorded \| \d/m);
  });
});
