import { describe, expect, it } from 'vitest';
import { chooseRandomUnits, randomSubspaceErasure, randomUnitMask } from '../../src/erasure/random-units.js';
import { matMul64, projectionMatrix, transpose64 } from '../../src/erasure/linear-algebra.js';
import { maxAbsDiff } from './synthetic.js';

describe('chooseRandomUnits', () => {
  it('returns k distinct sorted units in range', () => {
    const units = chooseRandomUnits(1000, 50, 42);
    expect(units.length).toBe(50);
    expect(new Set(units).size).toBe(50);
    for (let i = 0; i < units.length; i++) {
      expect(units[i]).toBeGreaterThanOrEqual(0);
      expect(units[i]).toBeLessThan(1000);
      if (i > 0) expect(units[i]).toBeGreaterThan(units[i - 1]!);
    }
  });

  it('is reproducible for a seed and differs across seeds', () => {
    expect(Array.from(chooseRandomUnits(1000, 50, 7))).toEqual(Array.from(chooseRandomUnits(1000, 50, 7)));
    expect(Array.from(chooseRandomUnits(1000, 50, 7))).not.toEqual(Array.from(chooseRandomUnits(1000, 50, 8)));
  });

  it('defaults to seed 42', () => {
    expect(Array.from(chooseRandomUnits(100, 10))).toEqual(Array.from(chooseRandomUnits(100, 10, 42)));
  });

  it('never picks excluded units and can take all the rest', () => {
    const exclude = [0, 3, 5, 9];
    const units = chooseRandomUnits(10, 6, 1, { exclude });
    expect(Array.from(units)).toEqual([1, 2, 4, 6, 7, 8]);
    for (let seed = 0; seed < 20; seed++) {
      for (const u of chooseRandomUnits(50, 10, seed, { exclude })) expect(exclude).not.toContain(u);
    }
  });

  it('picks every unit about equally often', () => {
    const n = 20;
    const k = 5;
    const trials = 4000;
    const counts = new Array<number>(n).fill(0);
    for (let seed = 0; seed < trials; seed++) for (const u of chooseRandomUnits(n, k, seed)) counts[u]!++;
    const expected = (trials * k) / n;
    // Binomial sd = sqrt(trials * p * (1 - p)) ~ 27; allow ~5 sd.
    for (const c of counts) expect(Math.abs(c - expected)).toBeLessThan(140);
  });

  it('makes a mask with exactly the chosen units', () => {
    const mask = randomUnitMask(100, 7, 3);
    const units = chooseRandomUnits(100, 7, 3);
    expect(mask.reduce((s, v) => s + v, 0)).toBe(7);
    for (const u of units) expect(mask[u]).toBe(1);
  });

  it('rejects impossible requests', () => {
    expect(() => chooseRandomUnits(10, 11)).toThrow(/cannot choose 11 of 10/);
    expect(() => chooseRandomUnits(10, 9, 42, { exclude: [1, 2] })).toThrow(/cannot choose 9 of 8/);
    expect(() => chooseRandomUnits(10, 2, 42, { exclude: [10] })).toThrow(/excluded unit 10/);
    expect(() => chooseRandomUnits(10, 1.5)).toThrow(/k must be/);
  });
});

describe('randomSubspaceErasure', () => {
  const d = 12;
  const k = 3;

  it('is an orthogonal projection of rank k with orthonormal directions', () => {
    const e = randomSubspaceErasure(d, k, 5);
    expect(e.rank).toBe(k);
    const p = projectionMatrix(e);
    expect(maxAbsDiff(matMul64(p, p, d, d, d), p)).toBeLessThan(1e-12);
    expect(maxAbsDiff(transpose64(p, d, d), p)).toBeLessThan(1e-12);
    const gram = matMul64(e.right, e.left, k, d, k);
    expect(maxAbsDiff(gram, [1, 0, 0, 0, 1, 0, 0, 0, 1])).toBeLessThan(1e-12);
  });

  it('is reproducible for a seed and differs across seeds', () => {
    expect(maxAbsDiff(randomSubspaceErasure(d, k, 5).right, randomSubspaceErasure(d, k, 5).right)).toBe(0);
    const a = projectionMatrix(randomSubspaceErasure(d, k, 5));
    const b = projectionMatrix(randomSubspaceErasure(d, k, 6));
    expect(maxAbsDiff(a, b)).toBeGreaterThan(1e-3);
  });

  it('handles k = 0 and rejects k > d', () => {
    expect(randomSubspaceErasure(d, 0).rank).toBe(0);
    expect(() => randomSubspaceErasure(d, d + 1)).toThrow(/k must be an integer in \[0, 12\]/);
  });
});
