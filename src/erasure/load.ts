/**
 * `loadEraser(dir)`: reads any eraser checkpoint (layout in checkpoint.ts) by dispatching on its
 * `format` to the method family's restorer, then attaches the saved head. Adding a family is one
 * line here.
 */
import { readCheckpoint, readHead, type LoadTarget, type StoredCheckpoint } from './checkpoint.js';
import type { Eraser } from './eraser.js';
import { withHead } from './head.js';
import { MASK_FORMAT, restoreMaskEraser } from './mask/checkpoint.js';
import { FEATURE_ABLATION_FORMAT, restoreFeatureAblationEraser } from './feature-ablation.js';
import { AFFINE_FORMAT, restoreAffineEraser } from './closed-form.js';
import { WORD_DELETION_FORMAT, restoreWordDeletionEraser } from './word-deletion.js';

/** Builds the eraser (without its head) of one family from a checked checkpoint. */
export type EraserRestorer = (stored: StoredCheckpoint, target: LoadTarget) => Eraser;

const restorers: Readonly<Record<string, EraserRestorer>> = {
  [MASK_FORMAT]: restoreMaskEraser,
  [FEATURE_ABLATION_FORMAT]: restoreFeatureAblationEraser,
  [AFFINE_FORMAT]: restoreAffineEraser,
  [WORD_DELETION_FORMAT]: restoreWordDeletionEraser,
};

/**
 * Loads the eraser saved in `dir` by `saveEraser`. SAE-based erasers need `target.saes`, the SAEs
 * they were fitted with; with `target.probeHook`, a checkpoint made for another probe hook is refused.
 */
export function loadEraser(dir: string, target: LoadTarget = {}): Eraser {
  const { head, ...stored } = readCheckpoint(dir);
  const restore = restorers[stored.format];
  if (restore === undefined) {
    throw new Error(`${stored.jsonPath}: field "format" is ${JSON.stringify(stored.format)}; known formats: ${Object.keys(restorers).join(', ')}`);
  }
  const eraser = restore(stored, target);
  try {
    return withHead(eraser, readHead(dir, head));
  } catch (err) {
    eraser.dispose();
    throw err;
  }
}
