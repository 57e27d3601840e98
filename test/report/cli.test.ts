/**
 * `sae-eraser report RUN_DIR [--out FILE]` (src/cli/report.ts): writes the page, says so, and fails
 * with a clear message (and no file written) for what is not a run folder.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../../src/cli/main.js';
import { setQuiet } from '../../src/util/progress.js';
import { quietly } from '../cli/stderr.js';
import { makeRunFolder } from './run-fixture.js';

beforeAll(() => setQuiet(true));

const made: string[] = [];
function fresh(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `report-cli-${name}-`));
  made.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI with stdout and stderr captured. */
const run = (argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> => quietly(() => cli(argv));

describe('sae-eraser report', () => {
  it('writes RUN_DIR/report.html, or --out, and marks a partial run', async () => {
    const dir = fresh('run');
    await makeRunFolder(dir, { partial: true });
    const first = await run(['report', dir]);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`^wrote ${join(dir, 'report.html')} \\(\\d+ KiB, partial run\\)\\n$`));
    expect(readFileSync(join(dir, 'report.html'), 'utf8')).toContain('<span class="status partial">');
    const out = join(dir, 'elsewhere', 'page.html');
    expect((await run(['report', dir, '--out', out])).code).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(join(dir, 'report.html'), 'utf8'));
  });

  it('fails clearly for a folder that is not a run folder, a missing RUN_DIR and an input as --out', async () => {
    const empty = fresh('empty');
    const notRun = await run(['report', empty]);
    expect(notRun.code).toBe(1);
    expect(notRun.stderr).toContain(`sae-eraser report: error: ${empty}: not a run folder (no config.json`);
    expect(existsSync(join(empty, 'report.html'))).toBe(false);
    const missing = join(empty, 'no-such-run');
    expect((await run(['report', missing])).stderr).toContain(`${missing}: not a folder`);
    expect(existsSync(missing)).toBe(false);
    const usage = await run(['report']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('RUN_DIR is required');
    const dir = fresh('input');
    await makeRunFolder(dir);
    const clobber = await run(['report', dir, '--out', join(dir, 'metrics.json')]);
    expect(clobber.code).toBe(1);
    expect(clobber.stderr).toContain('is also an input');
  });
});
