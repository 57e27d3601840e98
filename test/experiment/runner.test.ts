/**
 * The offline experiment at CI size (configs/ci-minilm-surgeon-nurse.json): all-MiniLM-L6-v2,
 * surgeon vs nurse from ../shared, an SAE trained here, every method, one seed. Prints the table.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readExperimentConfig } from '../../src/experiment/config.js';
import { runExperiment } from '../../src/experiment/runner.js';
import type { ExperimentResult } from '../../src/experiment/results.js';
import { renderTable } from '../../src/report/table.js';
import { METHOD_NAMES } from '../../src/erasure/eraser.js';
import { projectRoot, sharedDir } from '../../src/io/shared.js';
import { skipWithout } from '../require.js';

const shared = sharedDir();

describe.skipIf(skipWithout(shared === undefined, 'the offline experiment needs ../shared (set SAE_ERASER_SHARED)'))('the offline experiment (CI size)', () => {
  it('runs every method, and SAE-based erasure gets close to the oracle without balanced labels', { timeout: 45 * 60_000 }, async () => {
    const out = mkdtempSync(join(tmpdir(), 'run-'));
    const config = readExperimentConfig(join(projectRoot(), 'configs/ci-minilm-surgeon-nurse.json'));
    const result = await runExperiment(config, { outDir: out });
    const table = renderTable(result);
    console.log(`\n${table}`);
    const written = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as ExperimentResult;
    expect(Object.keys(written.methods).sort()).toEqual([...METHOD_NAMES].sort());
    for (const [method, m] of Object.entries(written.methods)) {
      for (const key of ['profession_acc', 'gender_agreement', 'worst_group_acc', 'gender_probe_acc'] as const) {
        const s = m[key];
        expect(s.mean, `${method}.${key}`).toBeGreaterThanOrEqual(0);
        expect(s.mean, `${method}.${key}`).toBeLessThanOrEqual(1);
        expect(s.ci95[0]).toBeLessThanOrEqual(s.mean);
        expect(s.ci95[1]).toBeGreaterThanOrEqual(s.mean);
      }
      expect(Object.keys(m.subgroup_acc).sort()).toEqual(['female_nurse', 'female_surgeon', 'male_nurse', 'male_surgeon']);
      if (method !== 'original' && method !== 'oracle') expect(existsSync(join(out, 'erasers', method, 'seed-42', 'eraser.json')), method).toBe(true);
    }
    const { original, oracle } = result.methods as Record<string, ExperimentResult['methods'][string]>;
    // The baseline shape: the probe trained on ambiguous data fails its worst group; the oracle does not.
    expect(original!.worst_group_acc.mean).toBeLessThan(oracle!.worst_group_acc.mean - 0.15);
    expect(original!.gender_agreement.mean).toBeGreaterThan(oracle!.gender_agreement.mean + 0.05);
    // The target: a method without balanced task labels within 10 points of the oracle's
    // worst group, within 5 points of its profession accuracy, with gender agreement below 60%.
    const meets = (name: string): boolean => {
      const m = result.methods[name]!;
      return (
        m.worst_group_acc.mean >= oracle!.worst_group_acc.mean - 0.1 &&
        m.profession_acc.mean >= oracle!.profession_acc.mean - 0.05 &&
        m.gender_agreement.mean < 0.6
      );
    };
    const sae = ['shift', 'shift_retrain', 'sae_mask'].filter(meets);
    console.log(`SAE-based methods meeting the target: ${sae.join(', ') || 'none'}`);
    expect(sae.length).toBeGreaterThan(0);
    // The control: as many random SAE features ablated change little.
    expect(Math.abs(result.methods.random!.worst_group_acc.mean - original!.worst_group_acc.mean)).toBeLessThan(0.1);
  });
});
