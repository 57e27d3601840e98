/**
 * Evaluation metrics with 95% intervals, as reported for the SHIFT experiments: accuracy on the
 * profession (y), gender agreement (the profession predictions scored against the gender labels z,
 * the paper's "unintended feature accuracy"), per-subgroup and worst-group accuracy, the TPR gap
 * between genders, and gender recoverability (can a fresh probe still read z?). Aggregation over
 * seeds uses a Student-t interval.
 *
 * Proportions get the Wilson score interval (Wilson 1927): with p = k/n and z = 1.95996,
 *   centre = (p + z^2 / (2n)) / (1 + z^2 / n)
 *   half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
 * It stays inside [0, 1] and behaves at p = 0 or 1, unlike the normal approximation.
 * A difference of two proportions p1 - p2 gets Newcombe's hybrid score interval (method 10 of
 * Newcombe 1998), built from the two Wilson intervals [l1, u1], [l2, u2]:
 *   lo = (p1 - p2) - sqrt((p1 - l1)^2 + (u2 - p2)^2),  hi = (p1 - p2) + sqrt((u1 - p1)^2 + (p2 - l2)^2).
 * It treats the two proportions as independent. Two methods scored on the same test examples are
 * paired, and their errors are positively correlated, which makes the variance of the difference
 * smaller: the interval is then conservative (a difference it finds is real; it may miss some).
 * Worst-group accuracy, a minimum over groups, gets its own interval (`worstGroupInterval`), which
 * combines with another the same way.
 */
import { tf } from '../engine/engine.js';
import { permutation } from '../data/prng.js';
import { checkLabels, type Labels } from '../probe/probe.js';
import { LinearProbe, type LinearProbeOptions } from '../probe/linear.js';

/** A point estimate with its 95% interval and the number of examples behind it. */
export interface Interval {
  value: number;
  lo: number;
  hi: number;
  n: number;
}

/** The two-sided 95% standard normal quantile, Phi^-1(0.975). */
export const Z95 = 1.959963984540054;

/** Wilson score interval for k successes out of n (see the module note). */
export function wilson(successes: number, n: number, z = Z95): Interval {
  if (!Number.isInteger(n) || n <= 0) throw new Error(`wilson: n must be a positive integer, got ${n}`);
  if (!Number.isInteger(successes) || successes < 0 || successes > n) throw new Error(`wilson: successes must be an integer in 0..${n}, got ${successes}`);
  const p = successes / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return { value: p, lo: Math.max(0, centre - half), hi: Math.min(1, centre + half), n };
}

function asInt32(a: Labels, what: string): Int32Array {
  const out = Int32Array.from(a);
  for (let i = 0; i < out.length; i++) {
    if (out[i] !== a[i]) throw new Error(`${what}: entry ${i} is ${a[i]}, expected an integer`);
  }
  return out;
}

function sameLength(a: Labels, b: Labels, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: ${a.length} predictions for ${b.length} labels`);
}

/** Fraction of predictions equal to the labels, with its Wilson interval. */
export function accuracy(pred: Labels, labels: Labels): Interval {
  sameLength(pred, labels, 'accuracy');
  if (pred.length === 0) throw new Error('accuracy: no examples');
  const p = asInt32(pred, 'accuracy predictions');
  const y = asInt32(labels, 'accuracy labels');
  let correct = 0;
  for (let i = 0; i < p.length; i++) if (p[i] === y[i]) correct++;
  return wilson(correct, p.length);
}

/**
 * Gender agreement: profession predictions (0 = first profession) scored against gender labels
 * (0 = male). On the balanced set, 0.5 means the probe ignores gender; 1 means it predicts gender
 * (the first profession being the male-dominated one).
 */
export function genderAgreement(professionPred: Labels, gender: Labels): Interval {
  return accuracy(professionPred, gender);
}

/** Accuracy of each named group: `{ group: { pred, y } }`. */
export function groupAccuracies(groups: Readonly<Record<string, { pred: Labels; y: Labels }>>): Record<string, Interval> {
  const out: Record<string, Interval> = {};
  for (const [name, { pred, y }] of Object.entries(groups)) {
    try {
      out[name] = accuracy(pred, y);
    } catch (err) {
      throw new Error(`group ${name}: ${(err as Error).message}`, { cause: err });
    }
  }
  return out;
}

/**
 * Accuracy in each (profession, gender) subgroup of one evaluation set, keyed like the Bias in
 * Bios subgroups: male_<p0>, female_<p0>, male_<p1>, female_<p1>. Every subgroup must be present.
 */
export function subgroupAccuracies(pred: Labels, y: Labels, z: Labels, professions: readonly [string, string] = ['y0', 'y1']): Record<string, Interval> {
  sameLength(pred, y, 'subgroup accuracy');
  sameLength(pred, z, 'subgroup accuracy (gender labels)');
  const yy = checkLabels(y, y.length, 2, 'subgroup accuracy: profession labels');
  const zz = checkLabels(z, z.length, 2, 'subgroup accuracy: gender labels');
  const p = asInt32(pred, 'subgroup accuracy predictions');
  const groups: Record<string, { pred: number[]; y: number[] }> = {};
  for (const yv of [0, 1]) for (const zv of [0, 1]) groups[`${zv === 0 ? 'male' : 'female'}_${professions[yv]}`] = { pred: [], y: [] };
  for (let i = 0; i < p.length; i++) {
    const g = groups[`${zz[i] === 0 ? 'male' : 'female'}_${professions[yy[i]!]}`]!;
    g.pred.push(p[i]!);
    g.y.push(yy[i]!);
  }
  for (const [name, g] of Object.entries(groups)) {
    if (g.y.length === 0) throw new Error(`subgroup accuracy: subgroup ${name} has no examples`);
  }
  return groupAccuracies(groups);
}

/** The group with the lowest accuracy (ties: the first in key order). */
export function worstGroup(groups: Readonly<Record<string, Interval>>): Interval & { group: string } {
  let worst: (Interval & { group: string }) | undefined;
  for (const [group, acc] of Object.entries(groups)) {
    if (worst === undefined || acc.value < worst.value) worst = { group, ...acc };
  }
  if (worst === undefined) throw new Error('worstGroup: no groups');
  return worst;
}

/** Newcombe's interval for p1 - p2 from two Wilson intervals (see the module note). */
export function differenceInterval(a: Interval, b: Interval): Interval {
  const d = a.value - b.value;
  return {
    value: d,
    lo: d - Math.sqrt((a.value - a.lo) ** 2 + (b.hi - b.value) ** 2),
    hi: d + Math.sqrt((a.hi - a.value) ** 2 + (b.value - b.lo) ** 2),
    n: a.n + b.n,
  };
}

/** Successes behind a proportion interval (value = successes / n), or an error naming `what`. */
function successesOf(p: Interval, what: string): number {
  if (!Number.isInteger(p.n) || p.n <= 0) throw new Error(`${what}: n must be a positive integer, got ${p.n}`);
  const k = Math.round(p.value * p.n);
  if (Math.abs(k / p.n - p.value) > 1e-9) throw new Error(`${what}: ${p.value} is not a proportion of n = ${p.n}`);
  return k;
}

/**
 * A confidence interval (default 95%) for the worst-group accuracy min_g p_g, from the accuracies
 * of the groups (each a proportion: value = successes / n, as `accuracy` returns). The reported
 * value is the observed minimum, whose own Wilson interval (what `worstGroup` returns) is too
 * optimistic about the upper end: the observed minimum is biased low, and which group is worst is
 * itself read off the data. Bounds, with alpha = 1 - level and G groups:
 *  - lower: min_g of the Wilson lower bounds at level 1 - alpha. If g* is the truly worst group,
 *    p_{g*} >= lo_{g*} >= min_g lo_g holds with probability 1 - alpha/2; no correction needed,
 *    since g* is fixed.
 *  - upper: min_g of the Wilson upper bounds at level 1 - alpha/G (Bonferroni). min_g p_g > min_g hi_g
 *    needs some group with p_g > hi_g, which has probability at most G * alpha/(2G) = alpha/2; the
 *    correction is needed when groups are close (then any of them may be the observed minimum).
 * So the interval covers min_g p_g with probability at least `level` (as far as the Wilson
 * intervals hold theirs). Use `differenceInterval` on two of these to compare worst groups.
 */
export function worstGroupInterval(groups: Readonly<Record<string, Interval>>, level = 0.95): Interval & { group: string } {
  if (!(level > 0 && level < 1)) throw new Error(`worstGroupInterval: level must be in (0, 1), got ${level}`);
  const entries = Object.entries(groups);
  if (entries.length === 0) throw new Error('worstGroupInterval: no groups');
  const alpha = 1 - level;
  const zLower = normalQuantile(1 - alpha / 2);
  const zUpper = normalQuantile(1 - alpha / (2 * entries.length));
  const worst = worstGroup(groups);
  let lo = Infinity;
  let hi = Infinity;
  for (const [name, acc] of entries) {
    const k = successesOf(acc, `worstGroupInterval: group ${name}`);
    lo = Math.min(lo, wilson(k, acc.n, zLower).lo);
    hi = Math.min(hi, wilson(k, acc.n, zUpper).hi);
  }
  return { group: worst.group, value: worst.value, lo, hi, n: worst.n };
}

export interface TprGap extends Interval {
  /** TPR among women (z = 1) of the class. */
  female: Interval;
  /** TPR among men (z = 0) of the class. */
  male: Interval;
}

/**
 * TPR gap for class `cls` (De-Arteaga et al. 2019): TPR_female - TPR_male, where TPR_g is the
 * fraction of class-`cls` examples of gender g predicted as `cls`. Interval: Newcombe's.
 */
export function tprGap(pred: Labels, y: Labels, z: Labels, cls = 1): TprGap {
  sameLength(pred, y, 'TPR gap');
  sameLength(pred, z, 'TPR gap (gender labels)');
  const p = asInt32(pred, 'TPR gap predictions');
  const yy = asInt32(y, 'TPR gap labels');
  const zz = checkLabels(z, z.length, 2, 'TPR gap: gender labels');
  const hits = [0, 0];
  const totals = [0, 0];
  for (let i = 0; i < p.length; i++) {
    if (yy[i] !== cls) continue;
    totals[zz[i]!]!++;
    if (p[i] === cls) hits[zz[i]!]!++;
  }
  for (const g of [0, 1]) {
    if (totals[g] === 0) throw new Error(`TPR gap: no ${g === 0 ? 'male' : 'female'} examples of class ${cls}`);
  }
  const male = wilson(hits[0]!, totals[0]!);
  const female = wilson(hits[1]!, totals[1]!);
  return { ...differenceInterval(female, male), female, male };
}

export interface RecoverabilityOptions {
  /** Fraction of rows used to train the fresh probe; the rest score it. Default 0.5. */
  trainFraction?: number;
  /** Seed of the train/score split (and, plus one, of the probe); default 42. */
  seed?: number;
  /**
   * Probe options. Default: the paper's probe recipe but 10 epochs, because an adversary probe
   * should be trained to convergence (one epoch on a few hundred rows is a handful of steps).
   */
  probe?: LinearProbeOptions;
}

export interface Recoverability {
  /** Accuracy of the fresh gender probe on the held-out part. */
  accuracy: Interval;
  /** Accuracy of always predicting the held-out part's majority gender (the chance level). */
  majority: Interval;
  nTrain: number;
  nTest: number;
}

/**
 * Gender recoverability: trains a fresh linear probe for z on a seeded `trainFraction` of the
 * representations `X [n, d]` and scores it on the disjoint rest. Near the majority rate means the
 * gender information a linear probe can use is gone.
 */
export function genderRecoverability(X: tf.Tensor2D, z: Labels, options: RecoverabilityOptions = {}): Recoverability {
  const n = X.shape[0];
  const zz = checkLabels(z, n, 2, 'gender recoverability: gender labels');
  const fraction = options.trainFraction ?? 0.5;
  const seed = options.seed ?? 42;
  const nTrain = Math.floor(n * fraction);
  if (!(fraction > 0 && fraction < 1) || nTrain < 1 || nTrain >= n) {
    throw new Error(`gender recoverability: trainFraction ${fraction} of ${n} rows leaves an empty part`);
  }
  const order = permutation(n, seed);
  const trainIdx = order.subarray(0, nTrain);
  const testIdx = order.subarray(nTrain);
  const probe = new LinearProbe(X.shape[1], 2, { epochs: 10, ...options.probe, seed: options.probe?.seed ?? seed + 1 });
  try {
    const [xTrain, xTest] = tf.tidy(() => [
      tf.gather(X, tf.tensor1d(trainIdx, 'int32')) as tf.Tensor2D,
      tf.gather(X, tf.tensor1d(testIdx, 'int32')) as tf.Tensor2D,
    ]);
    try {
      probe.fit(
        xTrain!,
        Array.from(trainIdx, (i) => zz[i]!),
      );
      const zTest = Int32Array.from(testIdx, (i) => zz[i]!);
      const pred = probe.predict(xTest!);
      const ones = zTest.reduce((s, v) => s + v, 0);
      return {
        accuracy: accuracy(pred, zTest),
        majority: wilson(Math.max(ones, zTest.length - ones), zTest.length),
        nTrain,
        nTest: testIdx.length,
      };
    } finally {
      xTrain!.dispose();
      xTest!.dispose();
    }
  } finally {
    probe.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Aggregation over seeds.

export interface SeedSummary {
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); NaN for one value. */
  std: number;
  /** Student-t interval for the mean, mean +- t_{0.975, n-1} std / sqrt(n); NaN for one value. */
  lo: number;
  hi: number;
  n: number;
}

/** Mean, sample std and the t-interval of the mean of per-seed results. */
export function aggregateSeeds(values: readonly number[], level = 0.95): SeedSummary {
  const n = values.length;
  if (n === 0) throw new Error('aggregateSeeds: no values');
  if (!(level > 0 && level < 1)) throw new Error(`aggregateSeeds: level must be in (0, 1), got ${level}`);
  const mean = values.reduce((s, v) => s + v, 0) / n;
  if (n === 1) return { mean, std: Number.NaN, lo: Number.NaN, hi: Number.NaN, n };
  const std = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
  const half = studentTQuantile((1 + level) / 2, n - 1) * (std / Math.sqrt(n));
  return { mean, std, lo: mean - half, hi: mean + half, n };
}

/**
 * ln Gamma(x) for x > 0: shift up to x >= 15 with ln Gamma(x) = ln Gamma(x + k) - ln(x (x+1) ... (x+k-1)),
 * then Stirling's series
 *   ln Gamma(z) = (z - 1/2) ln z - z + ln(2 pi)/2 + sum_k B_2k / (2k (2k-1) z^(2k-1)),
 * with the Bernoulli terms 1/12, -1/360, 1/1260, -1/1680, 1/1188, -691/360360, 1/156 (the next
 * term is below 1e-18 at z = 15).
 */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new Error(`logGamma: x must be positive, got ${x}`);
  let z = x;
  let logProduct = 0;
  while (z < 15) {
    logProduct += Math.log(z);
    z += 1;
  }
  const r = 1 / z;
  const r2 = r * r;
  const series = r * (1 / 12 + r2 * (-1 / 360 + r2 * (1 / 1260 + r2 * (-1 / 1680 + r2 * (1 / 1188 + r2 * (-691 / 360360 + r2 / 156))))));
  return (z - 0.5) * Math.log(z) - z + 0.5 * Math.log(2 * Math.PI) + series - logProduct;
}

/** Continued fraction for the incomplete beta function (modified Lentz). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return h;
}

/** Regularised incomplete beta I_x(a, b). */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lnFront = logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x);
  // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(lnFront) * betaContinuedFraction(x, a, b)) / a;
  return 1 - (Math.exp(lnFront) * betaContinuedFraction(1 - x, b, a)) / b;
}

/** CDF of Student's t with `df` degrees of freedom: for t >= 0, 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2. */
export function studentTCdf(t: number, df: number): number {
  const tail = 0.5 * regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/**
 * Regularised lower incomplete gamma P(a, x) = gamma(a, x) / Gamma(a), for a > 0, x >= 0: the
 * series sum_k x^k / (a (a+1) ... (a+k)) times x^a e^-x / Gamma(a) for x < a + 1, otherwise 1 minus
 * the continued fraction of the upper function Q(a, x) (modified Lentz), where each converges fast.
 */
export function regularizedLowerGamma(a: number, x: number): number {
  if (!(a > 0)) throw new Error(`regularizedLowerGamma: a must be positive, got ${a}`);
  if (!(x >= 0)) throw new Error(`regularizedLowerGamma: x must be >= 0, got ${x}`);
  if (x === 0) return 0;
  if (x === Infinity) return 1;
  const lnFront = a * Math.log(x) - x - logGamma(a);
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let k = 1; k <= 1000 && Math.abs(term) > Math.abs(sum) * 1e-16; k++) {
      term *= x / (a + k);
      sum += term;
    }
    return sum * Math.exp(lnFront);
  }
  // Q(a, x) = e^-x x^a / Gamma(a) * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...))).
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i <= 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return 1 - Math.exp(lnFront) * h;
}

/** Standard normal CDF: Phi(x) = (1 + sign(x) P(1/2, x^2 / 2)) / 2. */
export function normalCdf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const half = 0.5 * regularizedLowerGamma(0.5, 0.5 * x * x);
  return x >= 0 ? 0.5 + half : 0.5 - half;
}

/**
 * The p-quantile of the standard normal (bisection on `normalCdf`; |error| < 1e-12), e.g. the z
 * of a Bonferroni-corrected interval, normalQuantile(1 - alpha / (2 m)).
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`normalQuantile: p must be in (0, 1), got ${p}`);
  if (p < 0.5) return -normalQuantile(1 - p);
  let lo = 0;
  let hi = 1;
  while (normalCdf(hi) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12; i++) {
    const mid = (lo + hi) / 2;
    if (normalCdf(mid) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** The p-quantile of Student's t (bisection on the CDF; |error| < 1e-12). */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`studentTQuantile: p must be in (0, 1), got ${p}`);
  if (!(df > 0)) throw new Error(`studentTQuantile: df must be positive, got ${df}`);
  if (p < 0.5) return -studentTQuantile(1 - p, df);
  let lo = 0;
  let hi = 1;
  while (studentTCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * Math.max(1, hi); i++) {
    const mid = (lo + hi) / 2;
    if (studentTCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}
