/**
 * Label-read auditing for the supervision tests: a FitContext whose splits record every read of a
 * label, under the names of `LABEL_SOURCES` (src/erasure/eraser.ts), so a test can hold what an
 * eraser says it read (`describe().supervision`) to what its fit did read. The gender labels of the
 * ambiguous and balanced splits have no supervision name (no method may read them): they are
 * recorded as `ambiguous_gender` and `balanced_gender`, which no statement can cover.
 */
import { expect } from 'vitest';
import type { Eraser, FitContext, LabelledSplit } from '../../src/erasure/eraser.js';

/** `split` with its label reads recorded in `reads` as `${name}_task` (y) and `${name}_gender` (z). */
export function auditedSplit(split: LabelledSplit, name: string, reads: Set<string>): LabelledSplit {
  return {
    rows: split.rows,
    texts: split.texts,
    get y() {
      reads.add(`${name}_task`);
      return split.y;
    },
    get z() {
      reads.add(`${name}_gender`);
      return split.z;
    },
  };
}

/** `ctx` with its splits (those it has: tests give partial contexts) audited: `reads` collects the labels a fit reads. */
export function auditedContext(ctx: FitContext): { ctx: FitContext; reads: Set<string> } {
  const reads = new Set<string>();
  const splits = { train: 'ambiguous', concept: 'concept', balanced: 'balanced' } as const;
  const audited: Partial<FitContext> = {};
  for (const [key, name] of Object.entries(splits) as [keyof typeof splits, string][]) {
    const split = ctx[key] as LabelledSplit | undefined;
    if (split !== undefined) audited[key] = auditedSplit(split, name, reads);
  }
  return { reads, ctx: { ...ctx, ...audited } };
}

/**
 * Checks an eraser's statement against the reads of its fit: every label read is stated, and every
 * label stated was read, except the ambiguous task labels, which a fit that retrains no head holds
 * only through the biased probe (trained before it, on them).
 */
export function expectStatedReads(eraser: Eraser, reads: ReadonlySet<string>): void {
  const stated = eraser.describe().supervision.labels as string[];
  expect([...reads].sort()).toEqual(stated.filter((l) => reads.has(l) || l !== 'ambiguous_task').sort());
  expect(stated).toContain('ambiguous_task');
}
