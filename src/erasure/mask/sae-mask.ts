/**
 * `sae_mask`: a learned mask over SAE features (the product's original method, with its fixes;
 * docs/masks.md).
 *
 * Edit at a hook with SAE (encode f(x), decode(f) = f W_dec + b_dec) and gate s `[dSae]`:
 *   x' = decode(s ⊙ f(x)) + (x - decode(f(x)))      (keepError, default)
 *   x' = decode(s ⊙ f(x))                            (keepError: false, as the original)
 * per token. Decoding is affine, so mean pooling commutes with it, and at the probe hook
 *   x̄' = decode(s ⊙ f̄) + ē
 * with f̄ and ē the cached mean-pooled SAE codes and error (`saePooledDense`, `saeErrorPooled`):
 * `erasePooled` computes exactly this, and training uses it without rerunning the model. The
 * cache must have been built with the same SAE (only the width can be checked here).
 */
import { z } from 'zod';
import { tf } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { HookName } from '../../models/model.js';
import type { EraserSae, FitContext } from '../eraser.js';
import type { LoadTarget } from '../checkpoint.js';
import { MaskFitter } from './fitter.js';
import { checkObjectiveFields, KEEP_ERROR_FIELD, MASK_OPTION_FIELDS, maskConfigSchema, type MaskConfig } from './options.js';
import type { MaskTrainingCallbacks } from './trainer.js';
import type { CheckpointHook, CheckpointTensors, MaskKind, SaeUnitsSource, UnitFrame, UnitSpace } from './units.js';
import { parseStrict } from '../../util/schema.js';

const SAE_MASK_FIELDS = { ...MASK_OPTION_FIELDS, keepError: KEEP_ERROR_FIELD };

/** Options of `sae_mask` (fields described in options.ts). */
export const saeMaskOptionsSchema = z.strictObject(SAE_MASK_FIELDS).superRefine(checkObjectiveFields);

/** Rows of dense codes per chunk in token-level edits: keeps a chunk near 32 MB. */
function chunkTokens(dSae: number): number {
  return Math.max(1, Math.floor((8 * 1024 * 1024) / dSae));
}

class SaeUnits implements UnitSpace {
  readonly unitKind = 'sae_features' as const;
  readonly variables = {};
  readonly nUnits: number;
  readonly dIn: number;
  /** Decoder rows `[dSae, dIn]`. */
  private readonly decoder: tf.Tensor2D;
  /** b_dec = decode(0), `[1, dIn]`. */
  private readonly decoderBias: tf.Tensor2D;

  /** What the edit's ONNX form needs (`unitGraphEdit` in units.ts). */
  get saeUnits(): SaeUnitsSource {
    return { sae: this.sae, keepError: this.keepError };
  }

  constructor(
    readonly hook: HookName,
    private readonly sae: EraserSae,
    private readonly keepError: boolean,
  ) {
    this.nUnits = sae.dSae;
    this.dIn = sae.dIn;
    this.decoder = sae.decoderDirections();
    if (this.decoder.shape[0] !== sae.dSae || this.decoder.shape[1] !== sae.dIn) {
      const shape = this.decoder.shape.join(', ');
      this.decoder.dispose();
      throw new Error(`sae_mask at ${hook}: the SAE's decoder directions have shape [${shape}], expected [${sae.dSae}, ${sae.dIn}]`);
    }
    try {
      this.decoderBias = tf.tidy(() => tf.reshape(sae.decode(tf.zeros([1, sae.dSae])), [1, sae.dIn]) as tf.Tensor2D);
    } catch (err) {
      this.decoder.dispose();
      throw err;
    }
  }

  private checkCache(cache: ActivationCache): void {
    const cached = cache.dSae(this.hook);
    if (cached !== this.nUnits) {
      throw new Error(
        `sae_mask at ${this.hook}: the cache holds SAE codes of width ${cached}, the mask's SAE has width ${this.nUnits}; rebuild the cache with this SAE`,
      );
    }
  }

  private pooledCodes(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D {
    this.checkCache(cache);
    return cache.saePooledDense(this.hook, rows);
  }

  pooledInputs(cache: ActivationCache, rows: ArrayLike<number>): { raw: tf.Tensor2D; rest: tf.Tensor2D } {
    const raw = this.pooledCodes(cache, rows);
    const rest = tf.tidy(() =>
      this.keepError ? (tf.add(cache.saeErrorPooled(this.hook, rows), this.decoderBias) as tf.Tensor2D) : tf.tile(this.decoderBias, [rows.length, 1]),
    );
    return { raw, rest };
  }

  frame(): UnitFrame {
    const { sae, keepError, decoder, hook } = this;
    const pooledCodes = (cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D => this.pooledCodes(cache, rows);
    return {
      units: (raw) => raw,
      directions: decoder,
      constantDirections: true,
      edit(x, gate) {
        const [n, seq, d] = x.shape;
        const flat = tf.reshape(x, [n * seq, d]) as tf.Tensor2D;
        const step = chunkTokens(sae.dSae);
        const parts: tf.Tensor[] = [];
        for (let s = 0; s < n * seq; s += step) {
          const xs = tf.slice(flat, [s, 0], [Math.min(step, n * seq - s), d]);
          const f = sae.encode(xs);
          const kept = sae.decode(tf.mul(f, gate));
          parts.push(keepError ? tf.add(kept, tf.sub(xs, sae.decode(f))) : kept);
        }
        return tf.reshape(parts.length === 1 ? parts[0]! : tf.concat(parts, 0), [n, seq, d]) as tf.Tensor3D;
      },
      erasePooled(cache, rows, gate) {
        const kept = sae.decode(tf.mul(pooledCodes(cache, rows), gate)) as tf.Tensor2D;
        return keepError ? (tf.add(kept, cache.saeErrorPooled(hook, rows)) as tf.Tensor2D) : kept;
      },
    };
  }

  freeze(): void {}

  checkpointInfo(): Record<string, unknown> {
    return { dSae: this.nUnits, keepError: this.keepError };
  }

  savedTensors(): Record<string, tf.Tensor> {
    return {};
  }

  dispose(): void {
    this.decoder.dispose();
    this.decoderBias.dispose();
  }
}

function saeAt(hook: HookName, saes: FitContext['saes'] | undefined, what: string): EraserSae {
  const sae = saes?.[hook];
  if (sae === undefined) {
    const have = Object.keys(saes ?? {});
    throw new Error(`sae_mask: ${what} hook "${hook}", but no SAE is given for it (SAEs at: ${have.length > 0 ? have.join(', ') : 'none'})`);
  }
  return sae;
}

function keepErrorOf(config: MaskConfig): boolean {
  if (config.keepError === undefined) throw new Error('internal: sae_mask options without keepError');
  return config.keepError;
}

export const SAE_MASK: MaskKind = {
  method: 'sae_mask',
  config: maskConfigSchema(SAE_MASK_FIELDS),
  entryFields: {
    dSae: z.number().int().min(1).describe('Width of the SAE the mask was fitted with (its units).'),
    keepError: z.boolean().describe('Whether the edit keeps the SAE error (options.keepError).'),
  },
  create(hook: HookName, ctx: FitContext, config: MaskConfig): UnitSpace {
    const sae = saeAt(hook, ctx.saes, 'the mask is asked for at');
    return new SaeUnits(hook, sae, keepErrorOf(config));
  },
  restore(entry: CheckpointHook, file: CheckpointTensors, target: LoadTarget, config: MaskConfig): UnitSpace {
    const sae = saeAt(entry.hook, target.saes, `checkpoint ${file.path} was made for`);
    const want = entry.dSae;
    if (sae.dSae !== want) {
      throw new Error(
        `sae_mask: checkpoint ${file.path} was made for an SAE of width ${String(want)} at hook ${entry.hook}; the SAE given there has width ${sae.dSae}`,
      );
    }
    if (sae.dIn !== entry.dIn) {
      throw new Error(
        `sae_mask: checkpoint ${file.path} was made for an SAE reading width ${entry.dIn} at hook ${entry.hook}; the SAE given there reads width ${sae.dIn}`,
      );
    }
    if (entry.keepError !== keepErrorOf(config)) {
      throw new Error(
        `${file.jsonPath}: the hooks entry of ${entry.hook} says keepError ${String(entry.keepError)}, but options.keepError is ${String(config.keepError)}`,
      );
    }
    return new SaeUnits(entry.hook, sae, keepErrorOf(config));
  },
};

/** The `sae_mask` fitter; `options` are validated against `saeMaskOptionsSchema` (defaults filled in). */
export function createSaeMaskFitter(options: z.input<typeof saeMaskOptionsSchema> = {}, callbacks: MaskTrainingCallbacks = {}): MaskFitter {
  return new MaskFitter(SAE_MASK, parseStrict(saeMaskOptionsSchema, options, 'sae_mask options'), callbacks);
}
