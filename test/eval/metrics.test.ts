import { describe, expect, it, beforeAll } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import {
  accuracy,
  aggregateSeeds,
  differenceInterval,
  genderAgreement,
  genderRecoverability,
  groupAccuracies,
  logGamma,
  normalCdf,
  normalQuantile,
  regularizedLowerGamma,
  studentTCdf,
  studentTQuantile,
  subgroupAccuracies,
  tprGap,
  wilson,
  worstGroup,
  worstGroupInterval,
  Z95,
} from '../../src/eval/metrics.js';
import { mulberry32, randomNormal, type Rng } from '../../src/data/prng.js';

beforeAll(async () => {
  await initEngine();
});

describe('Wilson interval', () => {
  it('matches hand computations from the formula', () => {
    // 8/10: z^2 = 3.841459, denom = 1.384146, centre = (0.8 + 0.192073) / 1.384146 = 0.716740,
    // half = 1.416016 * sqrt(0.016 + 0.009604) = 0.226578 -> [0.490162, 0.943318].
    const a = wilson(8, 10);
    expect(a.value).toBe(0.8);
    expect(a.n).toBe(10);
    expect(a.lo).toBeCloseTo(0.490162, 5);
    expect(a.hi).toBeCloseTo(0.943318, 5);
    // 50/100: centre 0.5, half = 1.887459 * sqrt(0.0025 + 0.000096) = 0.096168.
    const b = wilson(50, 100);
    expect(b.lo).toBeCloseTo(0.403832, 5);
    expect(b.hi).toBeCloseTo(0.596168, 5);
    // 0/10: centre = half = 0.192073 / 1.384146 = 0.138766 -> [0, 0.277533].
    const c = wilson(0, 10);
    expect(c.lo).toBe(0);
    expect(c.hi).toBeCloseTo(0.277533, 5);
    // 10/10 mirrors 0/10.
    const d = wilson(10, 10);
    expect(d.lo).toBeCloseTo(1 - 0.277533, 5);
    expect(d.hi).toBeCloseTo(1, 10);
    expect(() => wilson(3, 0)).toThrow(/n must be a positive integer/);
    expect(() => wilson(11, 10)).toThrow(/successes must be an integer in 0\.\.10/);
  });
});

describe('metrics on hand examples', () => {
  // 8 examples: y (profession), z (gender), pred.
  const y = [0, 0, 0, 0, 1, 1, 1, 1];
  const z = [0, 0, 1, 1, 0, 0, 1, 1];
  const pred = [0, 0, 1, 0, 0, 1, 1, 1];

  it('accuracy and gender agreement', () => {
    // Correct: rows 0, 1, 3, 5, 6, 7 -> 6/8.
    expect(accuracy(pred, y)).toEqual(wilson(6, 8));
    // pred vs z: rows 0, 1, 2, 6, 7 agree (row 3: 0 vs 1, row 4: 0 vs 0 agrees too) -> 0,1,2,4,6,7 = 6/8.
    expect(genderAgreement(pred, z)).toEqual(wilson(6, 8));
    expect(accuracy([1, 1, 1], [1, 1, 0]).value).toBeCloseTo(2 / 3, 12);
    expect(() => accuracy([1], [1, 0])).toThrow(/1 predictions for 2 labels/);
    expect(() => accuracy([], [])).toThrow(/no examples/);
  });

  it('per-subgroup and worst-group accuracy', () => {
    const groups = subgroupAccuracies(pred, y, z, ['professor', 'nurse']);
    expect(Object.keys(groups)).toEqual(['male_professor', 'female_professor', 'male_nurse', 'female_nurse']);
    // male professors rows 0,1: 2/2; female professors rows 2,3: 1/2; male nurses rows 4,5: 1/2; female nurses rows 6,7: 2/2.
    expect(groups.male_professor).toEqual(wilson(2, 2));
    expect(groups.female_professor).toEqual(wilson(1, 2));
    expect(groups.male_nurse).toEqual(wilson(1, 2));
    expect(groups.female_nurse).toEqual(wilson(2, 2));
    const worst = worstGroup(groups);
    expect(worst.group).toBe('female_professor');
    expect(worst.value).toBe(0.5);
    expect(worstGroup(groupAccuracies({ a: { pred: [1, 1], y: [1, 1] }, b: { pred: [0, 1, 1], y: [1, 1, 1] } })).group).toBe('b');
    expect(() => subgroupAccuracies([0, 1], [0, 1], [0, 0])).toThrow(/subgroup female_y0 has no examples/);
  });

  it('TPR gap with the Newcombe interval', () => {
    // Class 1: 10 women with 8 predicted 1, 10 men with 5 predicted 1. Class-0 rows are ignored.
    const yy = [...new Array<number>(20).fill(1), 0, 0];
    const zz = [...new Array<number>(10).fill(1), ...new Array<number>(10).fill(0), 0, 1];
    const pp = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1];
    const gap = tprGap(pp, yy, zz, 1);
    expect(gap.value).toBeCloseTo(0.3, 12);
    expect(gap.female).toEqual(wilson(8, 10));
    expect(gap.male).toEqual(wilson(5, 10));
    // Wilson 8/10 = [0.490162, 0.943318], 5/10 = [0.236593, 0.763407]:
    // lo = 0.3 - sqrt(0.309838^2 + 0.263407^2) = -0.106672; hi = 0.3 + sqrt(0.143318^2 + 0.263407^2) = 0.599872.
    expect(gap.lo).toBeCloseTo(-0.106672, 5);
    expect(gap.hi).toBeCloseTo(0.599872, 5);
    expect(gap.n).toBe(20);
    expect(differenceInterval(wilson(5, 10), wilson(5, 10)).value).toBe(0);
    expect(() => tprGap([1, 1], [1, 1], [0, 0])).toThrow(/no female examples of class 1/);
  });
});

describe('Student t and aggregation over seeds', () => {
  it('matches table quantiles and known CDF values', () => {
    // Two-sided 95% critical values from standard t tables.
    const table: [number, number][] = [
      [1, 12.7062],
      [2, 4.3027],
      [4, 2.7764],
      [9, 2.2622],
      [29, 2.0452],
    ];
    for (const [df, t] of table) expect(studentTQuantile(0.975, df)).toBeCloseTo(t, 3);
    expect(studentTQuantile(0.95, 5)).toBeCloseTo(2.015, 3);
    expect(studentTQuantile(0.025, 4)).toBeCloseTo(-2.7764, 3);
    expect(studentTQuantile(0.975, 1e6)).toBeCloseTo(1.96, 3);
    // df = 1 is the Cauchy distribution: F(1) = 1/2 + atan(1)/pi = 0.75.
    expect(studentTCdf(1, 1)).toBeCloseTo(0.75, 10);
    expect(studentTCdf(0, 7)).toBeCloseTo(0.5, 12);
    // ln Gamma(5) = ln 24, ln Gamma(1/2) = ln sqrt(pi).
    expect(logGamma(5)).toBeCloseTo(Math.log(24), 12);
    expect(logGamma(0.5)).toBeCloseTo(0.5 * Math.log(Math.PI), 12);
    // ln Gamma(1) = 0, ln Gamma(100) = ln 99! = 359.1342053695754, ln Gamma(0.1) = 2.252712651734206.
    expect(logGamma(1)).toBeCloseTo(0, 13);
    expect(logGamma(100)).toBeCloseTo(359.1342053695754, 10);
    expect(logGamma(0.1)).toBeCloseTo(2.252712651734206, 12);
  });

  it('aggregates mean, sample std and the t interval', () => {
    // [1..5]: mean 3, std sqrt(10/4) = 1.581139, half = 2.776445 * 1.581139 / sqrt(5) = 1.963243.
    const s = aggregateSeeds([1, 2, 3, 4, 5]);
    expect(s.mean).toBe(3);
    expect(s.std).toBeCloseTo(1.581139, 6);
    expect(s.lo).toBeCloseTo(3 - 1.963243, 5);
    expect(s.hi).toBeCloseTo(3 + 1.963243, 5);
    expect(s.n).toBe(5);
    const one = aggregateSeeds([0.7]);
    expect(one.mean).toBe(0.7);
    expect(Number.isNaN(one.std) && Number.isNaN(one.lo) && Number.isNaN(one.hi)).toBe(true);
    expect(() => aggregateSeeds([])).toThrow(/no values/);
  });
});

describe('gender recoverability', () => {
  /** n rows of d features; feature 0 carries z with strength `signal`, the rest is noise. */
  function reps(n: number, d: number, signal: number, seed: number): { X: tf.Tensor2D; z: Int32Array } {
    const rng = mulberry32(seed);
    const z = Int32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 1 : 0));
    const data = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) data[i * d + j] = randomNormal(rng);
      data[i * d] = (data[i * d] ?? 0) + signal * (2 * (z[i] ?? 0) - 1);
    }
    return { X: tf.tensor2d(data, [n, d]), z };
  }

  it('finds gender when it is linearly present and not when it is absent, without leaking tensors', () => {
    const present = reps(1200, 16, 4, 1);
    const before = tf.memory().numTensors;
    const r = genderRecoverability(present.X, present.z);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.nTrain + r.nTest).toBe(1200);
    expect(r.nTrain).toBe(600);
    expect(r.accuracy.value).toBeGreaterThan(0.97);
    // The majority class (z = 0) is about 2/3 of the held-out rows.
    expect(r.majority.value).toBeGreaterThan(0.6);
    expect(r.majority.value).toBeLessThan(0.73);
    const absent = reps(1200, 16, 0, 2);
    const r0 = genderRecoverability(absent.X, absent.z);
    // Without signal the probe cannot beat the majority rate by more than noise.
    expect(r0.accuracy.value).toBeLessThan(r0.majority.value + 0.05);
    expect(r0.accuracy.hi).toBeGreaterThan(r0.majority.value - 0.08);
    expect(() => genderRecoverability(present.X, present.z, { trainFraction: 1 })).toThrow(/leaves an empty part/);
    tf.dispose([present.X, absent.X]);
  });
});

describe('normal distribution', () => {
  it('matches known values of the incomplete gamma, the normal CDF and its quantiles', () => {
    // P(1, x) = 1 - e^-x (continued-fraction branch); P(3, x) = 1 - e^-x (1 + x + x^2/2) (series at
    // x = 2, continued fraction at x = 6); P(1/2, x) = erf(sqrt x): erf(sqrt 0.3) = 0.5614219739190001.
    expect(regularizedLowerGamma(1, 5)).toBeCloseTo(1 - Math.exp(-5), 14);
    expect(regularizedLowerGamma(3, 2)).toBeCloseTo(0.3233235838169365, 14);
    expect(regularizedLowerGamma(3, 6)).toBeCloseTo(0.938031195583341, 14);
    expect(regularizedLowerGamma(0.5, 0.3)).toBeCloseTo(0.5614219739190001, 14);
    expect(regularizedLowerGamma(2, 0)).toBe(0);
    expect(() => regularizedLowerGamma(0, 1)).toThrow(/a must be positive/);
    // Phi(1) = 0.8413447460685429, Phi(-2) = 0.02275013194817921, Phi(-6) = 9.865876449133282e-10.
    expect(normalCdf(0)).toBe(0.5);
    expect(normalCdf(1)).toBeCloseTo(0.8413447460685429, 14);
    expect(normalCdf(-2)).toBeCloseTo(0.02275013194817921, 14);
    expect(normalCdf(-6) / 9.865876449133282e-10).toBeCloseTo(1, 6);
    expect(normalQuantile(0.975)).toBeCloseTo(Z95, 10);
    expect(normalQuantile(0.995)).toBeCloseTo(2.5758293035489, 10);
    // The Bonferroni z of four one-sided 0.625% tails.
    expect(normalQuantile(1 - 0.05 / 8)).toBeCloseTo(2.4977054744123737, 10);
    expect(normalQuantile(0.025)).toBeCloseTo(-Z95, 10);
    expect(() => normalQuantile(1)).toThrow(/p must be in \(0, 1\)/);
  });
});

describe('worst-group interval', () => {
  it('takes the lowest Wilson lower bound and the lowest Bonferroni-corrected upper bound', () => {
    const groups = { a: wilson(90, 100), b: wilson(44, 100), c: wilson(45, 100), d: wilson(95, 100) };
    const w = worstGroupInterval(groups);
    expect(w.group).toBe('b');
    expect(w.value).toBe(0.44);
    expect(w.n).toBe(100);
    // Wilson 44/100 at z = 1.959964: [0.346720, 0.537719]; at z = 2.497705 (alpha/(2*4)): upper 0.563862
    // (45/100 there: 0.573528, higher).
    expect(w.lo).toBeCloseTo(0.34672026630160796, 10);
    expect(w.hi).toBeCloseTo(0.5638624186191801, 10);
    expect(w.hi).toBeGreaterThan(worstGroup(groups).hi);
    // One group: the plain Wilson interval.
    const one = worstGroupInterval({ only: wilson(7, 20) });
    expect(one.lo).toBeCloseTo(wilson(7, 20).lo, 10);
    expect(one.hi).toBeCloseTo(wilson(7, 20).hi, 10);
    expect(() => worstGroupInterval({})).toThrow(/no groups/);
    expect(() => worstGroupInterval({ x: { value: 0.3, lo: 0.2, hi: 0.4, n: 7 } })).toThrow(/group x: 0\.3 is not a proportion of n = 7/);
  });

  /** k ~ Binomial(n, p) from `rng`. */
  function binomial(rng: Rng, n: number, p: number): number {
    let k = 0;
    for (let i = 0; i < n; i++) if (rng() < p) k++;
    return k;
  }

  it("covers the true worst-group accuracy when the groups tie, where the observed worst group's own interval does not", () => {
    // Four groups with the same accuracy 0.7: the observed minimum is biased low, so its own
    // Wilson interval misses 0.7 from below far more often than 2.5% of the time.
    const rng = mulberry32(5);
    const reps = 2000;
    let covered = 0;
    let naiveCovered = 0;
    for (let r = 0; r < reps; r++) {
      const groups = Object.fromEntries(['a', 'b', 'c', 'd'].map((g) => [g, wilson(binomial(rng, 60, 0.7), 60)]));
      const w = worstGroupInterval(groups);
      if (w.lo <= 0.7 && 0.7 <= w.hi) covered++;
      const naive = worstGroup(groups);
      if (naive.lo <= 0.7 && 0.7 <= naive.hi) naiveCovered++;
    }
    // Binomial standard error of a coverage near 0.95 over 2000 draws is 0.005.
    expect(covered / reps).toBeGreaterThan(0.94);
    expect(naiveCovered / reps).toBeLessThan(0.9);
  });

  it('compares worst groups through the Newcombe interval of their difference', () => {
    const before = { a: wilson(44, 100), b: wilson(95, 100) };
    const after = { a: wilson(70, 100), b: wilson(90, 100) };
    const d = differenceInterval(worstGroupInterval(after), worstGroupInterval(before));
    expect(d.value).toBeCloseTo(0.26, 12);
    // Clearly up: 70/100 against 44/100.
    expect(d.lo).toBeGreaterThan(0);
    const same = differenceInterval(worstGroupInterval(before), worstGroupInterval(before));
    expect(same.lo).toBeLessThan(0);
    expect(same.hi).toBeGreaterThan(0);
  });
});
