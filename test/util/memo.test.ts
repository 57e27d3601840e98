import { describe, expect, it } from 'vitest';
import { IdentityMemo } from '../../src/util/memo.js';

describe('IdentityMemo', () => {
  it('reuses a value only for the same owner, key and inputs (by identity)', () => {
    const memo = new IdentityMemo<number>();
    let calls = 0;
    const compute = (): number => ++calls;
    const owner = {};
    const a = { x: 1 };
    const sameContent = { x: 1 };
    expect(memo.get(owner, [a], 'k', compute)).toBe(1);
    expect(memo.get(owner, [a], 'k', compute)).toBe(1);
    // Equal content is not the same input; another key, owner or input count computes again.
    expect(memo.get(owner, [sameContent], 'k', compute)).toBe(2);
    expect(memo.get(owner, [a], 'other', compute)).toBe(3);
    expect(memo.get({}, [a], 'k', compute)).toBe(4);
    expect(memo.get(owner, [a, a], 'k', compute)).toBe(5);
    expect(memo.get(owner, [a], 'k', compute)).toBe(1);
    expect(calls).toBe(5);
  });

  it('remembers nothing when the computation throws', () => {
    const memo = new IdentityMemo<number>();
    const owner = {};
    expect(() =>
      memo.get(owner, [], 'k', () => {
        throw new Error('failed');
      }),
    ).toThrow('failed');
    expect(memo.get(owner, [], 'k', () => 7)).toBe(7);
  });
});
