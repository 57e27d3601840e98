import { describe, expect, it } from 'vitest';
import {
  mulberry32,
  permutation,
  randomInt,
  randomNormal,
  randomNormalArray,
  randomUniformArray,
  shuffle,
  shuffleInPlace,
  type Rng,
} from '../../src/data/prng.js';

/** mulberry32 written independently with unsigned BigInt arithmetic mod 2^32. */
function mulberry32Reference(seed: number, count: number): number[] {
  const M = 1n << 32n;
  let s = BigInt(seed >>> 0);
  const out: number[] = [];
  for (let k = 0; k < count; k++) {
    s = (s + 0x6d2b79f5n) % M;
    let t = ((s ^ (s >> 15n)) * (s | 1n)) % M;
    t = t ^ ((t + (t ^ (t >> 7n)) * (t | 61n)) % M);
    out.push(Number(t ^ (t >> 14n)) / 2 ** 32);
  }
  return out;
}

/** A generator that replays fixed values, for hand-computed shuffles. */
function replay(values: number[]): Rng {
  let i = 0;
  return () => values[i++]!;
}

describe('project PRNG', () => {
  it('matches an independent BigInt mulberry32 for several seeds', () => {
    for (const seed of [0, 1, 42, 123456789, 2 ** 32 - 1]) {
      const rng = mulberry32(seed);
      const got = Array.from({ length: 50 }, () => rng());
      expect(got).toEqual(mulberry32Reference(seed, 50));
    }
  });

  it('is deterministic per seed, differs across seeds and stays in [0, 1)', () => {
    const a = randomUniformArray(1000, 7);
    expect(randomUniformArray(1000, 7)).toEqual(a);
    expect(randomUniformArray(1000, 8)).not.toEqual(a);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...a)).toBeLessThan(1);
    expect(() => mulberry32(1.5)).toThrow(/integer/);
  });

  it('has the moments of a uniform and a standard normal', () => {
    const u = randomUniformArray(20000, 1);
    const mean = u.reduce((s, v) => s + v, 0) / u.length;
    // Std of the mean of 20000 uniforms is 0.289 / sqrt(20000) = 0.002; allow 5 sigma.
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const z = randomNormalArray(20000, 2);
    const zm = z.reduce((s, v) => s + v, 0) / z.length;
    const zv = z.reduce((s, v) => s + (v - zm) ** 2, 0) / (z.length - 1);
    expect(Math.abs(zm)).toBeLessThan(0.035);
    expect(Math.abs(zv - 1)).toBeLessThan(0.05);
    const rng = mulberry32(3);
    const shifted = Array.from({ length: 5000 }, () => randomNormal(rng, 10, 0.5));
    expect(Math.abs(shifted.reduce((s, v) => s + v, 0) / 5000 - 10)).toBeLessThan(0.03);
  });

  it('randomInt covers [0, n) evenly', () => {
    const rng = mulberry32(4);
    const counts = new Array<number>(5).fill(0);
    for (let i = 0; i < 50000; i++) counts[randomInt(rng, 5)]!++;
    // Expected 10000 each, std sqrt(50000 * 0.2 * 0.8) = 89; allow 5 sigma.
    for (const c of counts) expect(Math.abs(c - 10000)).toBeLessThan(450);
    expect(() => randomInt(rng, 0)).toThrow(/positive integer/);
  });

  it('Fisher-Yates swaps as computed by hand', () => {
    // n = 3: i = 2 draws j = floor(0.9 * 3) = 2 (no swap); i = 1 draws j = floor(0.1 * 2) = 0 (swap).
    expect(shuffle(['a', 'b', 'c'], replay([0.9, 0.1]))).toEqual(['b', 'a', 'c']);
    // n = 4: i = 3: j = floor(0.0 * 4) = 0 -> [d, b, c, a]; i = 2: j = floor(0.5 * 3) = 1 -> [d, c, b, a];
    // i = 1: j = floor(0.99 * 2) = 1 (no swap).
    expect(shuffle(['a', 'b', 'c', 'd'], replay([0.0, 0.5, 0.99]))).toEqual(['d', 'c', 'b', 'a']);
  });

  it('shuffles are permutations, uniform over the 6 orders of 3 items, and leave the input alone', () => {
    const input = [0, 1, 2];
    const rng = mulberry32(5);
    const counts = new Map<string, number>();
    for (let k = 0; k < 60000; k++) {
      const key = shuffle(input, rng).join('');
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    expect(input).toEqual([0, 1, 2]);
    expect([...counts.keys()].sort()).toEqual(['012', '021', '102', '120', '201', '210']);
    // Expected 10000 each, std 91; allow 5 sigma.
    for (const c of counts.values()) expect(Math.abs(c - 10000)).toBeLessThan(460);
    const p = permutation(1000, 42);
    expect(Array.from(p).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(permutation(1000, 42)).toEqual(p);
    expect(shuffleInPlace(Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 42)).toEqual(permutation(8, 42));
  });
});
