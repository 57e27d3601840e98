/**
 * AdamW (Loshchilov & Hutter 2019), written out in tfjs ops so that it matches
 * `torch.optim.AdamW` step for step (tfjs has no decoupled weight decay).
 *
 * For each parameter p with gradient g, at step t = 1, 2, ...:
 *   p <- p * (1 - lr * wd)                       (decoupled decay, applied first, as torch does)
 *   m <- b1 * m + (1 - b1) * g
 *   v <- b2 * v + (1 - b2) * g^2
 *   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * Defaults are torch's: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 (note: AdamW in
 * torch decays by default, so the SHIFT probes are trained with wd = 0.01 on weight and bias).
 */
import { tf } from '../engine/engine.js';

export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export class AdamW {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private step_ = 0;
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];

  constructor(
    private readonly params: readonly tf.Variable[],
    options: AdamWOptions = {},
  ) {
    this.lr = options.lr ?? 1e-3;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.01;
    for (const [name, value] of [
      ['lr', this.lr],
      ['eps', this.eps],
      ['weightDecay', this.weightDecay],
    ] as const) {
      if (!(value >= 0) || !Number.isFinite(value)) throw new Error(`AdamW: ${name} must be a finite non-negative number, got ${value}`);
    }
    for (const [name, value] of [
      ['beta1', this.beta1],
      ['beta2', this.beta2],
    ] as const) {
      if (!(value >= 0 && value < 1)) throw new Error(`AdamW: ${name} must be in [0, 1), got ${value}`);
    }
    this.m = params.map((p) => zeroVariable(p));
    this.v = params.map((p) => zeroVariable(p));
  }

  /** Number of steps taken. */
  get steps(): number {
    return this.step_;
  }

  /** One update; `grads[i]` is the gradient of `params[i]` (not disposed here). */
  step(grads: readonly tf.Tensor[]): void {
    if (grads.length !== this.params.length) throw new Error(`AdamW: ${grads.length} gradients for ${this.params.length} parameters`);
    this.step_++;
    const t = this.step_;
    const bias1 = 1 - this.beta1 ** t;
    const bias2 = 1 - this.beta2 ** t;
    tf.tidy(() => {
      this.params.forEach((p, i) => {
        const g = grads[i]!;
        if (g.shape.length !== p.shape.length || g.shape.some((d, k) => d !== p.shape[k])) {
          throw new Error(`AdamW: gradient ${i} has shape [${g.shape.join(', ')}], parameter has [${p.shape.join(', ')}]`);
        }
        const m = tf.add(tf.mul(this.m[i]!, this.beta1), tf.mul(g, 1 - this.beta1));
        const v = tf.add(tf.mul(this.v[i]!, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
        this.m[i]!.assign(m);
        this.v[i]!.assign(v);
        const decayed = tf.mul(p, 1 - this.lr * this.weightDecay);
        const denom = tf.add(tf.sqrt(tf.div(v, bias2)), this.eps);
        const update = tf.div(tf.mul(m, this.lr / bias1), denom);
        p.assign(tf.sub(decayed, update));
      });
    });
  }

  /** Frees the moment estimates (the parameters belong to the caller). */
  dispose(): void {
    for (const x of [...this.m, ...this.v]) x.dispose();
  }
}

/** A non-trainable zero variable shaped like `p` (the temporary initial value is freed). */
function zeroVariable(p: tf.Tensor): tf.Variable {
  const zeros = tf.zerosLike(p);
  const v = tf.variable(zeros, false);
  zeros.dispose();
  return v;
}
