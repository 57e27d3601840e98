import { describe, expect, it } from 'vitest';
import { maxOf, minOf, pushAll } from '../../src/util/arrays.js';

describe('array reductions of any length', () => {
  it('agree with Math.max / Math.min, NaN and empty included', () => {
    for (const values of [[3, -1, 7], [-0.5], [], [1, NaN, 2]]) {
      expect(maxOf(values)).toBe(Math.max(...values));
      expect(minOf(values)).toBe(Math.min(...values));
    }
  });

  it('handle arrays far past the call-stack limit of spreading', () => {
    const n = 500_000;
    const values = Int32Array.from({ length: n }, (_, i) => (i * 7919) % n);
    expect(() => Math.max(...values)).toThrow(RangeError);
    expect(maxOf(values)).toBe(n - 1);
    expect(minOf(values)).toBe(0);
    const target = [1];
    pushAll(
      target,
      Array.from({ length: n }, () => 2),
    );
    expect(target).toHaveLength(n + 1);
  });
});
