/**
 * SAE training steps as ONNX graphs: one graph per trainer kind takes the parameters, the Adam
 * moments and a batch, and returns the loss terms and the updated parameters and moments, so that a
 * step is one ONNX Runtime run. The forward pass, the gradients (written out, below) and the update
 * are those of the tfjs trainer in src/sae/train.ts (`trainStep`, which differentiates with
 * `tf.variableGrads`); test/sae/train-graph.test.ts holds the two to each other and the gradients to
 * central finite differences.
 *
 * Forward, for a batch of raw inputs `r [B, d]` and the input scale `s`:
 *
 *     x  = s r                        xc = x - b_dec                h = xc W_enc + b_enc
 *     relu: a = 1[h > 0],                                     f = max(h, 0)
 *     topk: a = 1[h >= h_(k)] 1[h > 0]  (h_(k): the row's k-th largest value), f = h a
 *     xHat = f W_dec + b_dec          e = x - xHat                  q_i = ||e_i||^2
 *     relu: L = (1/B) sum_i sqrt(q_i + 1e-12) + l1 (1/B) sum_ij f_ij
 *     topk: L = sum_i q_i / T,        T = sum_i ||x_i - mean(x)||^2   (fraction of variance unexplained)
 *
 * Backward (G = dL/dxHat, row by row):
 *
 *     relu: G_i = -e_i / (B sqrt(q_i + 1e-12))            topk: G = -2 e / T
 *     dL/dW_dec = f^T G
 *     dL/df     = G W_dec^T  (+ l1 / B for relu: the L1 term's derivative, as f >= 0)
 *     dL/dh     = dL/df * a  (for topk the selection is piecewise constant, d f / d h = a, as the tfjs
 *                             trainer's mask computed outside the tape)
 *     dL/db_enc = sum_i dL/dh_i                dL/dW_enc = xc^T dL/dh
 *     dL/db_dec = sum_i G_i - W_enc dL/db_enc  (b_dec enters xHat directly and h through xc = x - b_dec,
 *                                              and sum_i dL/dxc_i = (sum_i dL/dh_i) W_enc^T)
 *
 * Update, with t the step count (1 on the first step) and lr the step's learning rate:
 *
 *     g_dec <- g_dec - <g_dec_j, W_dec_j> W_dec_j per decoder row j   (no component along the unit rows)
 *     m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   b1 = 0.9, b2 = 0.999
 *     p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + 1e-8)
 *        = p - alpha m / (sqrt(v) + epsHat),   alpha = lr sqrt(1 - b2^t) / (1 - b1^t),   epsHat = 1e-8 sqrt(1 - b2^t)
 *     (the graph computes the second form, with alpha and epsHat from the host in float64: two passes
 *     over each parameter fewer than the first, which the tfjs trainer computes)
 *     W_dec_j <- W_dec_j / (||W_dec_j|| + 1e-12)
 *
 * The step's statistics: FVE = 1 - sum_i q_i / T, L0 = sum_ij a_ij / B, and which features fired
 * (sum_i a_ij > 0). The two executors differ only by float32 rounding: the kernels sum in other
 * orders, and the Adam step and dL/db_dec are computed in the equivalent forms above.
 */
import { int, ints, OnnxGraph, type ElementType } from '../onnx/graph.js';
import { OnnxSession, type HostTensor } from '../onnx/session.js';

/** The trainer kinds (see src/sae/train.ts). */
export type SaeArch = 'relu' | 'topk';

/** Adam's moment decay rates and denominator epsilon, as torch's defaults. */
export const ADAM = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const;
/** Inside the square root of the per-token L2 term, so that its gradient stays finite at e = 0. */
export const L2_EPS = 1e-12;
/** Added to the decoder row norms before dividing by them. */
export const NORM_EPS = 1e-12;

/** Weights of an SAE in training, for scaled inputs: W_enc [dIn, dSae], b_enc [dSae], W_dec [dSae, dIn], b_dec [dIn]. */
export interface SaeTrainingWeights {
  wEnc: Float32Array;
  bEnc: Float32Array;
  wDec: Float32Array;
  bDec: Float32Array;
}

/** The parameter names, in the order of every loop over them (and of the checkpoints' tensors). */
export const PARAM_NAMES = ['wEnc', 'bEnc', 'wDec', 'bDec'] as const;
export type ParamName = (typeof PARAM_NAMES)[number];

/** Everything an optimiser step changes, on the host: the parameters, the Adam moments and step count. */
export interface HostTrainingState {
  params: SaeTrainingWeights;
  m: SaeTrainingWeights;
  v: SaeTrainingWeights;
  /** Adam steps taken. */
  t: number;
}

/** What one optimiser step reports. */
export interface StepResult {
  /** The training objective on the step's batch (before the update). */
  loss: number;
  fve: number;
  l0: number;
  /** 1 for each feature that fired on some token of the batch. */
  fired: Uint8Array;
}

/**
 * One trainer's optimiser state and its steps, on some executor (ONNX Runtime here, tfjs in
 * src/sae/train.ts); the training loop, checkpoints and resampling see only this.
 */
export interface SaeStepper {
  readonly executor: 'onnx' | 'tfjs';
  /** One optimiser step on raw inputs `[batchSize, dIn]` at learning rate `lr`. */
  step(raw: Float32Array, scale: number, lr: number): Promise<StepResult>;
  /** ||x - xHat|| of each row of raw inputs `[batchSize, dIn]` under the current parameters. */
  rowErrors(raw: Float32Array, scale: number): Promise<Float32Array>;
  /** The current state; the arrays are the caller's to read (not to modify) until the next `step` or `write`. */
  read(): HostTrainingState;
  /** Replaces the state; the stepper may keep the arrays. */
  write(state: HostTrainingState): void;
  dispose(): Promise<void>;
}

/** The shape and settings a step graph is built for. */
export interface StepGraphSpec {
  arch: SaeArch;
  dIn: number;
  dSae: number;
  batchSize: number;
  /** Active features per token (topk). */
  k: number;
  /** L1 coefficient (relu). */
  l1: number;
}

function shapes(spec: StepGraphSpec): Record<ParamName, number[]> {
  return { wEnc: [spec.dIn, spec.dSae], bEnc: [spec.dSae], wDec: [spec.dSae, spec.dIn], bDec: [spec.dIn] };
}

interface Forward {
  x: string;
  xc: string;
  /** The 0/1 activity pattern a (float). */
  active: string;
  f: string;
  e: string;
  /** q_i, [B, 1]. */
  q: string;
}

/** The forward pass up to the per-row squared errors, on raw inputs `r` and the scale `s`. */
function forwardNodes(g: OnnxGraph, spec: StepGraphSpec, r: string, s: string, p: Record<ParamName, string>): Forward {
  const x = g.op('Mul', [r, s]);
  const xc = g.op('Sub', [x, p.bDec]);
  const h = g.op('Add', [g.op('MatMul', [xc, p.wEnc]), p.bEnc]);
  let active: string;
  let f: string;
  if (spec.arch === 'relu') {
    f = g.op('Relu', [h]);
    // Read off f rather than h (f > 0 exactly where h > 0) so that h feeds only the Relu, which ONNX
    // Runtime then fuses into the matrix product. (Cast of a comparison: faster than Sign here.)
    active = g.op('Cast', [g.op('Greater', [f, g.scalar(0)])], { to: int(1) });
  } else {
    const [top] = g.nodeN('TopK', [h, g.ints([spec.k])], 2, { axis: int(-1), largest: int(1), sorted: int(0) });
    const kth = g.op('ReduceMin', [top!], { axes: ints([1]), keepdims: int(1) });
    // The tfjs trainer's `topkMask`: every value at least the k-th largest (ties included), if positive.
    active = g.op('Cast', [g.op('And', [g.op('GreaterOrEqual', [h, kth]), g.op('Greater', [h, g.scalar(0)])])], { to: int(1) });
    f = g.op('Mul', [h, active]);
  }
  const xHat = g.op('Add', [g.op('MatMul', [f, p.wDec]), p.bDec]);
  const e = g.op('Sub', [x, xHat]);
  const q = g.op('ReduceSum', [g.op('Mul', [e, e]), g.ints([1])], { keepdims: int(1) });
  return { x, xc, active, f, e, q };
}

function declareParams(g: OnnxGraph, spec: StepGraphSpec, prefix: string): Record<ParamName, string> {
  const dims = shapes(spec);
  return Object.fromEntries(PARAM_NAMES.map((n) => [n, g.input(`${prefix}${n}`, 'float32', dims[n])])) as Record<ParamName, string>;
}

/**
 * Names of the step graph's state inputs and of its outputs (`StepGraph.outputs` maps the latter to
 * the graph's own names). The other inputs are `x` (raw inputs [B, dIn]) and the scalars `scale`,
 * `alpha` and `epsHat` (the step's Adam scalars, `adamScalars`).
 */
export const STEP_IO = {
  param: (n: ParamName): string => n,
  m: (n: ParamName): string => `m.${n}`,
  v: (n: ParamName): string => `v.${n}`,
  next: (name: string): string => `next.${name}`,
  grad: (n: ParamName): string => `grad.${n}`,
  /** [fve, l0, loss]. */
  stats: 'stats',
  /** bool [dSae]. */
  fired: 'fired',
} as const;

/** A step graph and the names its outputs have in it, by their `STEP_IO` names. */
export interface StepGraph {
  graph: OnnxGraph;
  outputs: Readonly<Record<string, string>>;
}

/**
 * The step graph of `spec` (see the file comment). Outputs `next.<p>`, `next.m.<p>`, `next.v.<p>`
 * for every parameter p, `stats` and `fired`; with `gradients`, also `grad.<p>`, dL/dp before the
 * decoder projection (for tests).
 */
export function stepGraph(spec: StepGraphSpec, gradients = false): StepGraph {
  const { dIn, dSae, batchSize: B } = spec;
  const g = new OnnxGraph(`sae-train-${spec.arch}`);
  const outputs: Record<string, string> = {};
  // Outputs keep the names of the nodes that make them: another name would cost an Identity node,
  // a copy of each parameter and moment, every step.
  const output = (name: string, value: string, type: ElementType, dims: readonly number[]): void => {
    g.output(value, value, type, dims);
    outputs[name] = value;
  };
  const r = g.input('x', 'float32', [B, dIn]);
  const [s, alpha, epsHat] = (['scale', 'alpha', 'epsHat'] as const).map((n) => g.input(n, 'float32', []));
  const p = declareParams(g, spec, '');
  const m = declareParams(g, spec, 'm.');
  const v = declareParams(g, spec, 'v.');
  const fw = forwardNodes(g, spec, r, s!, p);

  // Loss terms and G = dL/dxHat.
  const sumQ = g.op('ReduceSum', [fw.q], { keepdims: int(0) });
  const centred = g.op('Sub', [fw.x, g.op('ReduceMean', [fw.x], { axes: ints([0]), keepdims: int(1) })]);
  const total = g.op('ReduceSum', [g.op('Mul', [centred, centred])], { keepdims: int(0) });
  const fvu = g.op('Div', [sumQ, total]);
  let loss: string;
  let gHat: string;
  if (spec.arch === 'relu') {
    const rootQ = g.op('Sqrt', [g.op('Add', [fw.q, g.scalar(L2_EPS)])]);
    const l2 = g.op('ReduceMean', [rootQ], { keepdims: int(0) });
    const l1 = g.op('ReduceMean', [g.op('ReduceSum', [fw.f, g.ints([1])], { keepdims: int(0) })], { keepdims: int(0) });
    loss = g.op('Add', [l2, g.op('Mul', [l1, g.scalar(spec.l1)])]);
    gHat = g.op('Mul', [fw.e, g.op('Div', [g.scalar(-1 / B), rootQ])]);
  } else {
    loss = fvu;
    gHat = g.op('Mul', [fw.e, g.op('Div', [g.scalar(-2), total])]);
  }

  // Gradients.
  const grad: Record<ParamName, string> = { wEnc: '', bEnc: '', wDec: '', bDec: '' };
  grad.wDec = g.op('Gemm', [fw.f, gHat], { transA: int(1) });
  // dL/df = G W_dec^T, plus the L1 term's constant l1 / B (Gemm's C, broadcast).
  const dF = spec.arch === 'relu' ? g.op('Gemm', [gHat, p.wDec, g.scalar(spec.l1 / B)], { transB: int(1) }) : g.op('Gemm', [gHat, p.wDec], { transB: int(1) });
  const dH = g.op('Mul', [dF, fw.active]);
  grad.bEnc = g.op('ReduceSum', [dH, g.ints([0])], { keepdims: int(0) });
  grad.wEnc = g.op('Gemm', [fw.xc, dH], { transA: int(1) });
  // W_enc dL/db_enc as [1, dSae] x W_enc^T: a Gemm, faster than MatMul's matrix-vector path.
  const encTerm = g.op('Reshape', [g.op('Gemm', [g.op('Unsqueeze', [grad.bEnc, g.ints([0])]), p.wEnc], { transB: int(1) }), g.ints([dIn])]);
  grad.bDec = g.op('Sub', [g.op('ReduceSum', [gHat, g.ints([0])], { keepdims: int(0) }), encTerm]);
  const dims = shapes(spec);
  if (gradients) for (const n of PARAM_NAMES) output(STEP_IO.grad(n), grad[n], 'float32', dims[n]);

  // Adam, with the decoder gradient projected off the unit rows first and the rows renormalised after.
  const along = g.op('ReduceSum', [g.op('Mul', [grad.wDec, p.wDec]), g.ints([1])], { keepdims: int(1) });
  const update: Record<ParamName, string> = { ...grad, wDec: g.op('Sub', [grad.wDec, g.op('Mul', [along, p.wDec])]) };
  for (const n of PARAM_NAMES) {
    const gn = update[n];
    const mNext = g.op('Add', [g.op('Mul', [m[n], g.scalar(ADAM.beta1)]), g.op('Mul', [gn, g.scalar(1 - ADAM.beta1)])]);
    const vNext = g.op('Add', [g.op('Mul', [v[n], g.scalar(ADAM.beta2)]), g.op('Mul', [g.op('Mul', [gn, gn]), g.scalar(1 - ADAM.beta2)])]);
    const denom = g.op('Add', [g.op('Sqrt', [vNext]), epsHat!]);
    let pNext = g.op('Sub', [p[n], g.op('Mul', [g.op('Div', [mNext, denom]), alpha!])]);
    if (n === 'wDec') pNext = g.op('Div', [pNext, g.op('Add', [g.op('ReduceL2', [pNext], { axes: ints([1]), keepdims: int(1) }), g.scalar(NORM_EPS)])]);
    output(STEP_IO.next(STEP_IO.param(n)), pNext, 'float32', dims[n]);
    output(STEP_IO.next(STEP_IO.m(n)), mNext, 'float32', dims[n]);
    output(STEP_IO.next(STEP_IO.v(n)), vNext, 'float32', dims[n]);
  }

  // Statistics.
  // Per-feature activity counts give both L0 and which features fired (f > 0 exactly where a = 1).
  const counts = g.op('ReduceSum', [fw.active, g.ints([0])], { keepdims: int(0) });
  const fve = g.op('Sub', [g.scalar(1), fvu]);
  const l0 = g.op('Div', [g.op('ReduceSum', [counts], { keepdims: int(0) }), g.scalar(B)]);
  const asRow = (t: string): string => g.op('Reshape', [t, g.ints([1])]);
  output(STEP_IO.stats, g.op('Concat', [asRow(fve), asRow(l0), asRow(loss)], { axis: int(0) }), 'float32', [3]);
  output(STEP_IO.fired, g.op('Greater', [counts, g.scalar(0)]), 'bool', [dSae]);
  return { graph: g, outputs };
}

/** ||x - xHat|| per row of a batch of raw inputs (what resampling draws rows by). */
export function rowErrorGraph(spec: StepGraphSpec): OnnxGraph {
  const g = new OnnxGraph(`sae-row-errors-${spec.arch}`);
  const r = g.input('x', 'float32', [spec.batchSize, spec.dIn]);
  const s = g.input('scale', 'float32', []);
  const fw = forwardNodes(g, spec, r, s, declareParams(g, spec, ''));
  g.output('errors', g.op('Sqrt', [g.op('Reshape', [fw.q, g.ints([-1])])]), 'float32', [spec.batchSize]);
  return g;
}

/** The Adam bias corrections 1 - b1^t and 1 - b2^t of step t, as the tfjs trainer computes them. */
export function biasCorrections(t: number): [number, number] {
  return [1 - ADAM.beta1 ** t, 1 - ADAM.beta2 ** t];
}

/** The step graph's Adam scalars of step t at learning rate lr: alpha = lr sqrt(c2) / c1 and epsHat = eps sqrt(c2). */
export function adamScalars(t: number, lr: number): { alpha: number; epsHat: number } {
  const [c1, c2] = biasCorrections(t);
  return { alpha: (lr * Math.sqrt(c2)) / c1, epsHat: ADAM.eps * Math.sqrt(c2) };
}

const scalarFeed = (value: number): HostTensor => ({ type: 'float32', data: Float32Array.of(value), dims: [] });

/** Checks that `state` has the sizes of `spec`; throws naming the first array that has not. */
export function checkTrainingState(state: HostTrainingState, spec: StepGraphSpec): void {
  const dims = shapes(spec);
  for (const [what, w] of [
    ['parameter', state.params],
    ['Adam m', state.m],
    ['Adam v', state.v],
  ] as const) {
    for (const n of PARAM_NAMES) {
      const want = dims[n].reduce((a, b) => a * b, 1);
      if (w[n].length !== want) throw new Error(`SAE training state: ${what} ${n} has ${w[n].length} values, expected ${want} ([${dims[n].join(', ')}])`);
    }
  }
}

/** The ONNX Runtime executor of SAE training steps: the state lives on the host and each step is one run. */
export class OnnxStepper implements SaeStepper {
  readonly executor = 'onnx';
  private rowErrorSession: OnnxSession | undefined;

  private constructor(
    private readonly spec: StepGraphSpec,
    private readonly session: OnnxSession,
    /** The step graph's output names (`StepGraph.outputs`). */
    private readonly outputs: Readonly<Record<string, string>>,
    private state: HostTrainingState,
    private readonly threads: number | undefined,
  ) {}

  /**
   * Builds and loads the step graph of `spec`, starting from `state` (kept, not copied).
   * @param threads Intra-op threads (default: src/util/threads.ts).
   */
  static async create(spec: StepGraphSpec, state: HostTrainingState, threads?: number): Promise<OnnxStepper> {
    checkTrainingState(state, spec);
    const opts = threads === undefined ? {} : { threads };
    const { graph, outputs } = stepGraph(spec);
    const session = await OnnxSession.create(graph.toModel(), `sae-train-${spec.arch}`, opts);
    return new OnnxStepper(spec, session, outputs, state, threads);
  }

  private paramFeeds(w: SaeTrainingWeights, name: (n: ParamName) => string): Record<string, HostTensor> {
    const dims = shapes(this.spec);
    return Object.fromEntries(PARAM_NAMES.map((n) => [name(n), { type: 'float32', data: w[n], dims: dims[n] }]));
  }

  async step(raw: Float32Array, scale: number, lr: number): Promise<StepResult> {
    const { spec, state } = this;
    const t = state.t + 1;
    const { alpha, epsHat } = adamScalars(t, lr);
    const out = await this.session.run({
      x: { type: 'float32', data: raw, dims: [spec.batchSize, spec.dIn] },
      scale: scalarFeed(scale),
      alpha: scalarFeed(alpha),
      epsHat: scalarFeed(epsHat),
      ...this.paramFeeds(state.params, STEP_IO.param),
      ...this.paramFeeds(state.m, STEP_IO.m),
      ...this.paramFeeds(state.v, STEP_IO.v),
    });
    const get = (name: string): HostTensor => out[this.outputs[name]!]!;
    const read = (name: string): Float32Array => get(STEP_IO.next(name)).data as Float32Array;
    const next = (name: (n: ParamName) => string): SaeTrainingWeights =>
      Object.fromEntries(PARAM_NAMES.map((n) => [n, read(name(n))])) as unknown as SaeTrainingWeights;
    this.state = { params: next(STEP_IO.param), m: next(STEP_IO.m), v: next(STEP_IO.v), t };
    const [fve, l0, loss] = get(STEP_IO.stats).data as Float32Array;
    return { loss: loss!, fve: fve!, l0: l0!, fired: get(STEP_IO.fired).data as Uint8Array };
  }

  async rowErrors(raw: Float32Array, scale: number): Promise<Float32Array> {
    const { spec } = this;
    this.rowErrorSession ??= await OnnxSession.create(
      rowErrorGraph(spec).toModel(),
      `sae-row-errors-${spec.arch}`,
      this.threads === undefined ? {} : { threads: this.threads },
    );
    const out = await this.rowErrorSession.run({
      x: { type: 'float32', data: raw, dims: [spec.batchSize, spec.dIn] },
      scale: scalarFeed(scale),
      ...this.paramFeeds(this.state.params, STEP_IO.param),
    });
    return out.errors!.data as Float32Array;
  }

  read(): HostTrainingState {
    return this.state;
  }

  write(state: HostTrainingState): void {
    checkTrainingState(state, this.spec);
    this.state = state;
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
    await this.rowErrorSession?.dispose();
  }
}
