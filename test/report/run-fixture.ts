/**
 * A small run folder made for the report tests, following the run-folder contract: two methods
 * (sae_mask and shift, both removing SAE features at the probe hook) at two seeds, results.jsonl,
 * history.jsonl, explorer/seed-<s>.json, and real saved sae_mask erasers (fitted on the planted
 * pooled problem of the mask tests and saved with `saveEraser`), plus metrics.json unless partial.
 *
 * The explorer data is built from known numbers so that every metric is known in closed form.
 * 40 test rows, 10 per subgroup (professions surgeon = 0, nurse = 1); row j of a subgroup is
 * "flipped" when j < seed (1 row per subgroup at seed 1, 2 at seed 2). With u = +1 for nurses and -1
 * for surgeons, negated on flipped rows, the binary head's logits are
 *   base = u + 2 * codeA - 2 * codeB + 0.5 * codeC
 * with feature A (index 101) = 1.5 on women, B (7) = 1.5 on men, C (55) = 0.25 on every third row,
 * D (300) never active. So with nothing removed the probe predicts gender; with A and B removed
 * (sae_mask) it predicts the profession except on flipped rows; with A alone removed (shift) it
 * predicts surgeon for every man and the profession (but flips) for women. `expectedPredictions`
 * gives those predictions directly, and the results lines are scored from them with the project's
 * metrics, as the runner scores a method.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../../src/engine/engine.js';
import { saveEraser } from '../../src/erasure/checkpoint.js';
import { asMaskEraser } from '../../src/erasure/mask/eraser.js';
import { createSaeMaskFitter } from '../../src/erasure/mask/sae-mask.js';
import { accuracy, genderAgreement, subgroupAccuracies, wilson, worstGroup } from '../../src/eval/metrics.js';
import { seedsSupervision, summarize, type ExperimentResult, type MethodSeedResult } from '../../src/experiment/results.js';
import { supervision, type Supervision } from '../../src/erasure/eraser.js';
import type { ExplorerData } from '../../src/report/explorer.js';
import { biasedProbe, pooledContext, plantedPooled } from '../erasure/mask/mask-fixtures.js';

export const HOOK = 'layers.0.resid_out';
export const PROFESSIONS: [string, string] = ['surgeon', 'nurse'];
export const SEEDS = [1, 2];
export const METHODS = { sae_mask: [101, 7], shift: [101] } as const;
export type FixtureMethod = keyof typeof METHODS;
/** What each fixture method says it read (as the real fitters with their default options do). */
export const SUPERVISION: Readonly<Record<FixtureMethod, Supervision>> = {
  sae_mask: supervision(['ambiguous_task', 'concept_gender', 'concept_task']),
  shift: supervision(['ambiguous_task'], true),
};
const GROUPS = [
  ['male_surgeon', 0, 0],
  ['female_surgeon', 0, 1],
  ['male_nurse', 1, 0],
  ['female_nurse', 1, 1],
] as const;
const PER_GROUP = 10;
/** A bio that would run script if any text reached the page unescaped. */
export const XSS_BIO = `</script><img src=x onerror="window.__xss=1"><script>window.__xss=2</script> & "quotes" 'too'`;

interface Row {
  y: number;
  z: number;
  flipped: boolean;
}

function rows(seed: number): Row[] {
  return GROUPS.flatMap(([, y, z]) => Array.from({ length: PER_GROUP }, (_, j) => ({ y, z, flipped: j < seed })));
}

/** Predicted profession per row of `method`'s removed set at `seed`, in closed form (module note). */
export function expectedPredictions(method: FixtureMethod | 'none', seed: number): number[] {
  return rows(seed).map((r) => {
    const u = r.flipped ? 1 - r.y : r.y;
    if (method === 'sae_mask') return u;
    if (method === 'shift') return r.z === 0 ? 0 : u;
    return r.z;
  });
}

/** The explorer file of `seed`. */
export function explorerData(seed: number, xss: boolean): ExplorerData {
  const rs = rows(seed);
  const texts = rs.map((r, i) => {
    const who = r.z === 1 ? 'She' : 'He';
    const job = PROFESSIONS[r.y];
    return i === 3 && xss ? XSS_BIO : `${who} is a ${job} with ${5 + (i % 20)} years at the county hospital (bio ${i}).`;
  });
  const codeA = rs.map((r, i) => (r.z === 1 ? 1.5 + 0.01 * (i % 7) : 0));
  const codeB = rs.map((r) => (r.z === 0 ? 1.5 : 0));
  const codeC = rs.map((_, i) => (i % 3 === 0 ? 0.25 : 0));
  const codeD = rs.map(() => 0);
  const contrib = { 101: 2, 7: -2, 55: 0.5, 300: 1 };
  const features = [
    { index: 101, codes: codeA, genderScore: 0.9 },
    { index: 7, codes: codeB, genderScore: 0.8 },
    { index: 55, codes: codeC, genderScore: 0.1 },
    { index: 300, codes: codeD, genderScore: 0.05 },
  ];
  const binary = rs.map((r, i) => (r.flipped ? 1 - 2 * r.y : 2 * r.y - 1) + 2 * codeA[i]! - 2 * codeB[i]! + 0.5 * codeC[i]!);
  const splits: ExplorerData['splits'] = { balanced: { rows: rs.map((_, i) => i), y: rs.map((r) => r.y), z: rs.map((r) => r.z) } };
  GROUPS.forEach(([name], g) => {
    const idx = Array.from({ length: PER_GROUP }, (_, j) => g * PER_GROUP + j);
    splits[name] = { rows: idx, y: idx.map((i) => rs[i]!.y), z: idx.map((i) => rs[i]!.z) };
  });
  return {
    version: 1,
    seed,
    hook: HOOK,
    professions: PROFESSIONS,
    texts,
    splits,
    features,
    heads: {
      biased: { nOut: 1, base: binary.map((b) => [b]), contrib: features.map((f) => [contrib[f.index as keyof typeof contrib]]) },
      // The same decision as two logits: class 1 iff 0.5 + b > 0.5.
      two_class: { nOut: 2, base: binary.map((b) => [0.5, 0.5 + b]), contrib: features.map((f) => [0, contrib[f.index as keyof typeof contrib]]) },
    },
    methods: { sae_mask: { head: 'biased', features: [...METHODS.sae_mask].sort((a, b) => a - b) }, shift: { head: 'biased', features: [...METHODS.shift] } },
    excluded: { leace: 'it removes directions at layers.0.resid_out, not only SAE features at layers.0.resid_out' },
    promotes: { '101': [' she', ' her', ' <b>'], '7': [' he', ' his'] },
    // Feature 7 fires on "He" alone: its mean over a bio's tokens is its pooled code, 1.5.
    tokens: Object.fromEntries(
      texts.flatMap((text, i) => {
        if (codeB[i]! <= 0 || i === 3) return [];
        const pieces = text.split(' ').map((w) => ` ${w}`);
        return [[String(i), { pieces, acts: { '7': pieces.map((p) => (p === ' He' ? 1.5 * pieces.length : 0)) } }]];
      }),
    ),
  };
}

/** `method`'s result at `seed`, scored from its closed-form predictions with the project's metrics. */
export function seedResult(method: FixtureMethod, seed: number): MethodSeedResult & { removed: Record<string, { kind: 'sae_features'; indices: number[] }> } {
  const rs = rows(seed);
  const pred = expectedPredictions(method, seed);
  const y = rs.map((r) => r.y);
  const z = rs.map((r) => r.z);
  const subgroup_acc = subgroupAccuracies(pred, y, z, PROFESSIONS);
  const removed: Record<string, { kind: 'sae_features'; indices: number[] }> = { [HOOK]: { kind: 'sae_features', indices: [...METHODS[method]] } };
  // SHIFT also ablates a feature at an earlier hook, which the explorer does not list.
  if (method === 'shift') removed['layers.0.mlp_out'] = { kind: 'sae_features', indices: [9] };
  return {
    seed,
    profession_acc: accuracy(pred, y),
    gender_agreement: genderAgreement(pred, z),
    worst_group_acc: worstGroup(subgroup_acc),
    subgroup_acc,
    gender_probe_acc: wilson(method === 'sae_mask' ? 30 : 36, 40),
    units_removed: METHODS[method].length,
    seconds: 1.5 + seed,
    summary: `${method} removes SAE features ${METHODS[method].join(', ')} at ${HOOK}`,
    supervision: SUPERVISION[method],
    removed,
  };
}

export interface FixtureOptions {
  /** Leave out metrics.json and the last results line (a run still going). */
  partial?: boolean;
  /** Put XSS_BIO among the texts. */
  xss?: boolean;
  /** Write no history.jsonl. */
  noHistory?: boolean;
  /** Seeds to write (default SEEDS). */
  seeds?: number[];
  /** Fit and save real sae_mask erasers (needs the engine initialised); their mask logits by seed are returned. */
  erasers?: boolean;
}

/** Writes the fixture run folder into `dir`; returns the saved mask logits by seed (when `erasers`). */
export async function makeRunFolder(dir: string, options: FixtureOptions = {}): Promise<Map<number, Float32Array>> {
  const seeds = options.seeds ?? SEEDS;
  mkdirSync(join(dir, 'explorer'), { recursive: true });
  const config = {
    source: 'configs/fixture.json',
    config: {
      name: 'report fixture <b>run</b>',
      model: 'toy-model',
      probeHook: HOOK,
      seeds,
      methods: { sae_mask: {}, shift: {} },
      dataset: { professions: PROFESSIONS },
    },
    provenance: {
      package: { name: 'sae-eraser', version: '0.0.0-test' },
      git: { commit: '0123456789abcdef0123456789abcdef01234567', dirty: false },
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      backend: 'cpu',
      threads: 1,
      started: '2025-01-01T00:00:00.000Z',
    },
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const lines = seeds.flatMap((seed) => (Object.keys(METHODS) as FixtureMethod[]).map((method) => ({ method, seed, result: seedResult(method, seed) })));
  const written = options.partial === true ? lines.slice(0, -1) : lines;
  writeFileSync(join(dir, 'results.jsonl'), written.map((l) => `${JSON.stringify(l)}\n`).join(''));
  for (const seed of seeds) writeFileSync(join(dir, 'explorer', `seed-${seed}.json`), JSON.stringify(explorerData(seed, options.xss === true)));
  if (options.noHistory !== true) {
    const history: string[] = [];
    for (const seed of seeds) {
      for (let e = 1; e <= 3; e++) history.push(JSON.stringify({ stage: `original/seed-${seed}/probe`, step: e, elapsed: e, loss: 0.7 / e }));
      for (let s = 1; s <= 60; s++) {
        const t = 1 - (0.99 * (s - 1)) / 59;
        history.push(
          JSON.stringify({
            stage: `sae_mask/seed-${seed}/mask`,
            step: s,
            elapsed: 3 + s / 10,
            loss: 1 / s + 0.2,
            task_loss: 0.5 / s + 0.1,
            adversary_loss: 0.5 / s + 0.1,
            temperature: t,
          }),
        );
      }
    }
    for (let s = 1; s <= 40; s++)
      history.push(JSON.stringify({ stage: `sae ${HOOK}`, step: s * 10, elapsed: s, loss: 2 / s, fve: 1 - 0.5 / s, l0: 20 + 60 / s, dead: 0 }));
    writeFileSync(join(dir, 'history.jsonl'), history.join('\n') + '\n');
  }
  const logits = new Map<number, Float32Array>();
  if (options.erasers === true) {
    for (const seed of seeds) {
      const p = plantedPooled({ kind: 'sae', nTrain: 64, nConcept: 64, seed });
      const probe = biasedProbe(p.cache, p.train);
      const eraser = await createSaeMaskFitter({ epochs: 3, lr: 0.05 }).fit(pooledContext(p, probe));
      try {
        saveEraser(eraser, join(dir, 'erasers', 'sae_mask', `seed-${seed}`));
        logits.set(seed, asMaskEraser(eraser).maskLogits(HOOK));
      } finally {
        eraser.dispose();
        probe.dispose();
        p.sae?.dispose();
        tf.disposeVariables();
      }
    }
  }
  if (options.partial !== true) {
    const result: ExperimentResult = {
      config: config.source,
      name: config.config.name,
      model: config.config.model,
      probeHook: HOOK,
      professions: PROFESSIONS,
      seeds,
      n_test: { balanced: 40, subgroups: Object.fromEntries(GROUPS.map(([g]) => [g, PER_GROUP])) },
      n_train: { ambiguous: 100, balanced: 50, concept: 64 },
      methods: {},
      seconds: { cache: 1, total: 12 },
    };
    for (const method of Object.keys(METHODS)) {
      const runs = lines.filter((l) => l.method === method).map((l) => l.result);
      const pick = (f: (r: MethodSeedResult) => number): ReturnType<typeof summarize> => summarize(runs.map(f));
      result.methods[method] = {
        profession_acc: pick((r) => r.profession_acc.value),
        gender_agreement: pick((r) => r.gender_agreement.value),
        worst_group_acc: pick((r) => r.worst_group_acc.value),
        subgroup_acc: Object.fromEntries(GROUPS.map(([g]) => [g, pick((r) => r.subgroup_acc[g]!.value)])),
        gender_probe_acc: pick((r) => r.gender_probe_acc.value),
        n_test: 40,
        units_removed: runs[0]!.units_removed,
        seconds: 2,
        supervision: seedsSupervision(runs),
        per_seed: runs,
      };
    }
    writeFileSync(join(dir, 'metrics.json'), JSON.stringify(result, null, 2));
  }
  return logits;
}
