/**
 * Affine heads z = x W + b: the task head and the adversaries the mask is trained against (not to
 * be confused with the probe head retrained on the erased data once the mask is fixed,
 * src/erasure/head.ts). Every head is affine so that it folds into the unit directions
 * (representation.ts): the probe's own map is read off its logits (`affineOfProbe`), and a
 * `TrainableHead` holds W and b as variables with an optional AdamW optimiser for the heads that
 * are re-fitted during training.
 */
import { tf, variableFrom } from '../../engine/engine.js';
import { mulberry32, randomNormal } from '../../data/prng.js';
import { AdamW } from '../../probe/adamw.js';
import type { Probe } from '../../probe/probe.js';

/** An affine map z = x W + b on `[n, d]` rows, W stored as `wT [d, out]` (row-major) and b `[out]`. */
export interface AffineHead {
  d: number;
  nOut: number;
  wT: Float32Array;
  b: Float32Array;
}

/**
 * Reads the affine map of a probe from its logits: b = z(0), row j of W = z(e_j) - z(0), then
 * checks z(x) = x W + b at a few random points. Throws when the probe is not affine (the mask
 * trainer folds the head into the unit directions, which needs an affine head).
 */
export function affineOfProbe(probe: Probe, d: number, seed = 42): AffineHead {
  if (probe.dIn !== d) throw new Error(`mask eraser: the probe reads width ${probe.dIn}, the probe hook has width ${d}`);
  const nOut = probe.nClasses === 2 ? 1 : probe.nClasses;
  const basis = new Float32Array((d + 1) * d);
  for (let j = 0; j < d; j++) basis[(j + 1) * d + j] = 1;
  const z = logitsArray(probe, basis, d + 1, d);
  const b = z.slice(0, nOut);
  const wT = new Float32Array(d * nOut);
  for (let j = 0; j < d; j++) for (let o = 0; o < nOut; o++) wT[j * nOut + o] = z[(j + 1) * nOut + o]! - b[o]!;
  const rng = mulberry32(seed);
  const probes = 3;
  const x = Float32Array.from({ length: probes * d }, () => randomNormal(rng));
  const got = logitsArray(probe, x, probes, d);
  for (let i = 0; i < probes; i++) {
    for (let o = 0; o < nOut; o++) {
      let want = b[o]!;
      let scale = Math.abs(b[o]!);
      for (let j = 0; j < d; j++) {
        want += x[i * d + j]! * wT[j * nOut + o]!;
        scale += Math.abs(x[i * d + j]! * wT[j * nOut + o]!);
      }
      if (Math.abs(got[i * nOut + o]! - want) > 1e-4 * (1 + scale)) {
        throw new Error(`mask eraser: the probe (kind "${probe.kind}") is not affine in its input; mask erasers need a linear probe`);
      }
    }
  }
  return { d, nOut, wT, b };
}

function logitsArray(probe: Probe, x: Float32Array, n: number, d: number): Float32Array {
  return tf.tidy(() => {
    const z = probe.logits(tf.tensor2d(x, [n, d]));
    return Float32Array.from(z.dataSync());
  });
}

/** A head whose parameters are variables; `version` changes whenever they do (for caching V W). */
export class TrainableHead {
  readonly wT: tf.Variable<tf.Rank.R2>;
  readonly b: tf.Variable<tf.Rank.R1>;
  version = 0;
  private readonly optimizer: AdamW | undefined;

  /** `trainable`: whether `step` may update it (AdamW with learning rate `lr`, weight decay 0.01). */
  constructor(init: AffineHead, trainable: boolean, lr: number, name: string) {
    this.wT = variableFrom(tf.tensor2d(init.wT, [init.d, init.nOut]), `${name}_wT`);
    try {
      this.b = variableFrom(tf.tensor1d(init.b), `${name}_b`);
    } catch (err) {
      this.wT.dispose();
      throw err;
    }
    try {
      this.optimizer = trainable ? new AdamW([this.wT, this.b], { lr, weightDecay: 0.01 }) : undefined;
    } catch (err) {
      tf.dispose([this.wT, this.b]);
      throw err;
    }
  }

  get nOut(): number {
    return this.wT.shape[1]!;
  }

  /** One AdamW step on the gradients (wT `[d, out]`, b `[out]`). */
  step(gradWT: tf.Tensor, gradB: tf.Tensor): void {
    if (this.optimizer === undefined) throw new Error('internal: stepping a frozen head');
    this.optimizer.step([gradWT, gradB]);
    this.version++;
  }

  dispose(): void {
    this.optimizer?.dispose();
    this.wT.dispose();
    this.b.dispose();
  }
}
