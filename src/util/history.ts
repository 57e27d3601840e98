/**
 * Training history: what long loops report besides the progress line, so that curves (losses,
 * temperature, FVE, L0, accuracies) outlive the run. A loop takes an optional `HistoryLog` and calls
 * it once per logged step or epoch; the caller decides where the records go (a run folder's
 * `history.jsonl`, a test's array). Passed in as a callback, so that no lower layer imports the
 * run folder.
 */

/** One logged step or epoch. */
export interface HistoryRecord {
  /** What is training, e.g. "sae_mask/seed-42" or "sae layers.3.resid_out". */
  stage: string;
  /** Step (or epoch) number within the stage, from 1. */
  step: number;
  /** The quantities logged at this step; all finite numbers are kept as they are. */
  values: Record<string, number>;
}

export type HistoryLog = (record: HistoryRecord) => void;

/** A log that prefixes every stage with `prefix/`; undefined stays undefined (nothing logs). */
export function withStagePrefix(log: HistoryLog | undefined, prefix: string): HistoryLog | undefined {
  if (log === undefined) return undefined;
  return (record) => log({ ...record, stage: `${prefix}/${record.stage}` });
}
