/**
 * `das_mask`: a learned mask over k learned orthonormal directions (distributed alignment search
 * with a boundless mask, low-rank as pyvene's LowRankRotatedSpaceIntervention), trained jointly
 * with the directions.
 *
 * Edit with a basis U `[d, k]` of orthonormal columns u_j and gate s `[k]`:
 *   x' = x - U diag(1 - s) U^T x     (per token; row vectors: x' = x - ((x U) ⊙ (1 - s)) U^T)
 * i.e. the coordinates a = U^T x of x in span(U) are masked and the orthogonal complement is kept:
 * x' = sum_j s_j a_j u_j + rest with rest = x - U U^T x (units.ts). With k = d (U a rotation R)
 * this is the full-rank x' = R diag(s) R^T x. Linear, so at the probe hook the same formula holds
 * for cached mean-pooled activations. Removed units are the directions u_j with a hard gate of 0;
 * `describe()` gives their count as the rank of the removed subspace.
 *
 * U = H_1 .. H_k E_k is a product of Householder reflections of free vectors (the parameter
 * `householder` `[k, d]`, src/erasure/orthogonal.ts): O(d k^2) per step in float64 with an
 * explicit gradient, and no inverse, so a step costs about what a neuron mask step does for small
 * k. The vectors start as Gaussian noise (seed + 2), a random k-frame.
 *
 * Checkpoints hold `<hook>.householder` and, for readers, `<hook>.basis` (U, checked against the
 * one rebuilt from the vectors). Checkpoints written before (parametrisation "cayley": a full
 * rotation R = cayley(A) saved as `<hook>.skew` A and `<hook>.rotation` R) still load, as the
 * basis U = R with k = d.
 *
 * With k = d and a uniform gate, x' = s x whatever U, so U gets no gradient at the start; the
 * initial logits get multiplicative noise (`initNoise`, default 0.05 here) to break the tie.
 *
 * With the concept objective the mask also drives the concept set's class-mean difference to 0
 * (`meanDifferenceWeight`, trainer.ts): a difference is one vector, which one learned direction
 * can hold, so the mask then zeroes the statistic LEACE zeroes, with square-root balanced weights
 * under `balanceConcept` (docs/masks.md has the measurements that chose them).
 */
import { z } from 'zod';
import { tf, variableFrom } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import { mulberry32, randomNormal } from '../../data/prng.js';
import type { HookName } from '../../models/model.js';
import type { FitContext } from '../eraser.js';
import { cayley64, householderBasis, householderBasis64, orthogonalityError } from '../orthogonal.js';
import { MaskFitter } from './fitter.js';
import { checkObjectiveFields, initNoiseField, MASK_OPTION_FIELDS, maskConfigSchema, NO_KEEP_ERROR_FIELD, type MaskConfig } from './options.js';
import type { MaskTrainingCallbacks } from './trainer.js';
import { hookWidth, type CheckpointHook, type CheckpointTensors, type MaskKind, type UnitFrame, type UnitSpace } from './units.js';
import { parseStrict } from '../../util/schema.js';

/** Default number of learned directions. */
export const DEFAULT_DAS_RANK = 16;

/** Default weight of the mean-difference term (concept objective), chosen on training data (docs/masks.md). */
export const DEFAULT_MEAN_DIFFERENCE_WEIGHT = 100;

const RANK_FIELD = z
  .number()
  .int()
  .min(1)
  .describe(
    `Number of learned directions k, the mask's units (clamped to the hook's width d; k = d is the full rotation of the original DAS). A step costs O(d k^2) for the basis. Default ${DEFAULT_DAS_RANK}.`,
  );

const MEAN_DIFFERENCE_FIELD = z
  .number()
  .min(0)
  .describe(
    `Weight w of the mean-difference term (trainer.ts): w |δ'|^2 / |δ|^2, the squared fraction of the whole concept set's class-mean difference δ (LEACE's statistic; square-root balanced under balanceConcept, else unweighted) that the mask keeps, computed on the whole set every step, so that the mask removes the direction of the difference. 0 turns it off. Default ${DEFAULT_MEAN_DIFFERENCE_WEIGHT}. Objective "concept" only.`,
  );

const DAS_MASK_FIELDS = {
  ...MASK_OPTION_FIELDS,
  rank: RANK_FIELD.default(DEFAULT_DAS_RANK),
  initNoise: initNoiseField(0.05),
  meanDifferenceWeight: MEAN_DIFFERENCE_FIELD.optional(),
  keepError: NO_KEEP_ERROR_FIELD,
};

/**
 * Options of `das_mask` (fields described in options.ts and above; `initNoise` defaults to 0.05;
 * `meanDifferenceWeight`, like every field of one objective, is left unset by parsing and filled
 * in by the fitter).
 */
export const dasMaskOptionsSchema = z.strictObject(DAS_MASK_FIELDS).superRefine((o, ctx) => {
  checkObjectiveFields(o, ctx);
  if (o.meanDifferenceWeight !== undefined && o.objective !== 'concept') {
    ctx.addIssue({ code: 'custom', path: ['meanDifferenceWeight'], message: `applies only to objective "concept" (the objective here is "${o.objective}")` });
  }
});

/** Largest entry-wise difference allowed between a checkpoint's saved basis and the one rebuilt from its parameters. */
const BASIS_TOLERANCE = 1e-5;

/** How a basis is parametrised, as checkpoints name it. */
type Parametrisation = 'householder' | 'cayley';

/** Tensors a restored basis came from, saved back unchanged. */
type SavedBasis = Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>;

class SubspaceUnits implements UnitSpace {
  readonly unitKind = 'directions' as const;
  readonly variables: Record<string, tf.Variable>;
  /** U and U^T once training is over (or from the start for a restored Cayley rotation). */
  private frozen: { u: tf.Tensor2D; uT: tf.Tensor2D } | undefined;

  /**
   * `source`: the Householder vectors `[k, d]` to train or restore, or a restored Cayley rotation
   * (`basis` R `[d, d]` and the tensors it was saved with).
   */
  constructor(
    readonly hook: HookName,
    readonly dIn: number,
    readonly nUnits: number,
    private readonly source: { kind: 'householder'; vectors: Float32Array } | { kind: 'cayley'; basis: Float32Array; saved: SavedBasis },
  ) {
    if (nUnits > dIn) throw new Error(`das_mask at ${hook}: rank ${nUnits} exceeds the hook's width ${dIn}`);
    if (source.kind === 'householder') {
      this.variables = { householder: variableFrom(tf.tensor2d(source.vectors, [nUnits, dIn]), `das_householder_${hook}`) };
    } else {
      this.variables = {};
      const u = tf.tensor2d(source.basis, [dIn, nUnits]);
      this.frozen = { u, uT: tf.transpose(u) };
    }
  }

  get parametrisation(): Parametrisation {
    return this.source.kind;
  }

  private pooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D {
    const width = cache.dim(this.hook);
    if (width !== this.dIn) throw new Error(`das_mask at ${this.hook}: the cache holds width ${width}, the directions have width ${this.dIn}`);
    return cache.pooled(this.hook, rows);
  }

  /** U `[d, k]`: the frozen one after `freeze`, else computed from the parameter (differentiable). */
  basis(): tf.Tensor2D {
    return this.frozen?.u ?? householderBasis(this.variables.householder as tf.Variable<tf.Rank.R2>);
  }

  pooledInputs(cache: ActivationCache, rows: ArrayLike<number>): { raw: tf.Tensor2D; rest: null } {
    return { raw: this.pooled(cache, rows), rest: null };
  }

  frame(): UnitFrame {
    const u = this.basis();
    const uT = this.frozen?.uT ?? tf.transpose(u);
    const pooled = (cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D => this.pooled(cache, rows);
    // x - ((x U) ⊙ (1 - s)) U^T
    const apply = (x2d: tf.Tensor2D, gate: tf.Tensor1D): tf.Tensor2D => tf.sub(x2d, tf.matMul(tf.mul(tf.matMul(x2d, u), tf.sub(1, gate)), uT)) as tf.Tensor2D;
    return {
      units: (raw) => tf.matMul(raw, u) as tf.Tensor2D,
      directions: uT,
      constantDirections: this.frozen !== undefined,
      rest: (raw) => tf.sub(raw, tf.matMul(tf.matMul(raw, u), uT)) as tf.Tensor2D,
      edit: (x, gate) => {
        const [n, seq, d] = x.shape;
        return tf.reshape(apply(tf.reshape(x, [n * seq, d]) as tf.Tensor2D, gate), [n, seq, d]) as tf.Tensor3D;
      },
      erasePooled: (cache, rows, gate) => apply(pooled(cache, rows), gate),
    };
  }

  freeze(): void {
    if (this.frozen !== undefined) return;
    const u = tf.tidy(() => householderBasis(this.variables.householder as tf.Variable<tf.Rank.R2>));
    this.frozen = { u, uT: tf.transpose(u) };
  }

  /** max |U^T U - I| of the current basis. */
  orthogonalityError(): number {
    const u = tf.tidy(() => tf.clone(this.basis()));
    try {
      return orthogonalityError(u.dataSync(), this.dIn, this.nUnits);
    } finally {
      u.dispose();
    }
  }

  checkpointInfo(): Record<string, unknown> {
    return { parametrisation: this.source.kind };
  }

  savedTensors(): Record<string, tf.Tensor | SavedBasis[string]> {
    if (this.source.kind === 'cayley') return { ...this.source.saved };
    const v = this.variables.householder!;
    return { householder: tf.clone(v), basis: tf.tidy(() => tf.clone(this.basis())) };
  }

  dispose(): void {
    for (const v of Object.values(this.variables)) v.dispose();
    if (this.frozen !== undefined) tf.dispose([this.frozen.u, this.frozen.uT]);
    this.frozen = undefined;
  }
}

/** Refuses a saved basis `[rows, cols]` that differs from the rebuilt one by more than the tolerance. */
function checkBasis(saved: Float32Array, rebuilt: ArrayLike<number>, hook: HookName, names: [string, string], path: string): void {
  let worst = 0;
  for (let i = 0; i < saved.length; i++) worst = Math.max(worst, Math.abs(saved[i]! - rebuilt[i]!));
  if (!(worst <= BASIS_TOLERANCE)) {
    throw new Error(
      `das_mask: ${path}: tensor "${hook}.${names[0]}" differs from the one rebuilt from "${hook}.${names[1]}" by up to ${worst} (tolerance ${BASIS_TOLERANCE}); the checkpoint is inconsistent`,
    );
  }
}

/** Gaussian reflection vectors `[k, d]` (a random k-frame), from `seed`. */
function randomVectors(k: number, d: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: k * d }, () => randomNormal(rng, 0, 1 / Math.sqrt(d)));
}

/** The number of directions at a hook of width `d`: options.rank clamped to d. */
function rankAt(config: MaskConfig, d: number): number {
  if (config.rank === undefined) throw new Error('internal: das_mask options without rank');
  return Math.min(config.rank, d);
}

export const DAS_MASK: MaskKind = {
  method: 'das_mask',
  // `rank` may be absent from checkpoints written before it existed (full rotations, k = d), and
  // `meanDifferenceWeight` from those written before it (and for the task objective).
  config: maskConfigSchema(DAS_MASK_FIELDS).extend({
    rank: RANK_FIELD.optional(),
    meanDifferenceWeight: MEAN_DIFFERENCE_FIELD.optional(),
  }),
  entryFields: {
    parametrisation: z
      .enum(['householder', 'cayley'])
      .describe(
        'How the directions are parametrised: "householder", U = H_1 .. H_k E_k of the saved vectors `<hook>.householder`; "cayley" (checkpoints written before), the rotation cayley(A) of the saved skew-symmetric `<hook>.skew` (src/erasure/orthogonal.ts).',
      ),
  },
  create: (hook: HookName, ctx: FitContext, config: MaskConfig) => {
    const d = hookWidth(ctx, hook);
    const k = rankAt(config, d);
    return new SubspaceUnits(hook, d, k, { kind: 'householder', vectors: randomVectors(k, d, config.seed + 2) });
  },
  restore(entry: CheckpointHook, file: CheckpointTensors, _target, config: MaskConfig): UnitSpace {
    const d = entry.dIn;
    const k = entry.units;
    if (entry.parametrisation === 'cayley') {
      if (k !== d) throw new Error(`${file.jsonPath}: hook ${entry.hook} holds a Cayley rotation, whose units must equal its width ${d}; it says ${k}`);
      const skew = file.float32(`${entry.hook}.skew`, [d, d]);
      const rotation = file.float32(`${entry.hook}.rotation`, [d, d]);
      const rebuilt = cayley64(skew, d);
      checkBasis(rotation, rebuilt, entry.hook, ['rotation', 'skew'], file.path);
      const saved: SavedBasis = {
        skew: { dtype: 'F32', shape: [d, d], data: skew },
        rotation: { dtype: 'F32', shape: [d, d], data: rotation },
      };
      return new SubspaceUnits(entry.hook, d, d, { kind: 'cayley', basis: Float32Array.from(rebuilt), saved });
    }
    if (config.rank === undefined || rankAt(config, d) !== k) {
      throw new Error(
        `${file.jsonPath}: hook ${entry.hook} has ${k} units, but options.rank ${String(config.rank)} gives ${config.rank === undefined ? 'none' : rankAt(config, d)} at width ${d}`,
      );
    }
    const vectors = file.float32(`${entry.hook}.householder`, [k, d]);
    let rebuilt: Float64Array;
    try {
      rebuilt = householderBasis64(vectors, k, d);
    } catch (err) {
      throw new Error(`das_mask: ${file.path}: tensor "${entry.hook}.householder": ${(err as Error).message}`, { cause: err });
    }
    checkBasis(file.float32(`${entry.hook}.basis`, [d, k]), rebuilt, entry.hook, ['basis', 'householder'], file.path);
    return new SubspaceUnits(entry.hook, d, k, { kind: 'householder', vectors });
  },
};

/**
 * The `das_mask` fitter; `options` are validated against `dasMaskOptionsSchema` (defaults filled
 * in, and `meanDifferenceWeight` for the concept objective: DEFAULT_MEAN_DIFFERENCE_WEIGHT).
 */
export function createDasMaskFitter(options: z.input<typeof dasMaskOptionsSchema> = {}, callbacks: MaskTrainingCallbacks = {}): MaskFitter {
  const parsed = parseStrict(dasMaskOptionsSchema, options, 'das_mask options');
  const meanDifferenceWeight = parsed.objective === 'concept' ? (parsed.meanDifferenceWeight ?? DEFAULT_MEAN_DIFFERENCE_WEIGHT) : undefined;
  return new MaskFitter(DAS_MASK, { ...parsed, meanDifferenceWeight }, callbacks);
}
