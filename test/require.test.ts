import { afterEach, describe, expect, it } from 'vitest';
import { skipWithout } from './require.js';

const saved = process.env.SAE_ERASER_REQUIRE_ALL;
afterEach(() => {
  if (saved === undefined) delete process.env.SAE_ERASER_REQUIRE_ALL;
  else process.env.SAE_ERASER_REQUIRE_ALL = saved;
});

describe('skipWithout', () => {
  it('runs a test whose data is there, skips one whose data is missing, and fails it when everything is required', () => {
    delete process.env.SAE_ERASER_REQUIRE_ALL;
    expect(skipWithout(false, 'x')).toBe(false);
    expect(skipWithout(true, 'the data is absent')).toBe(true);
    process.env.SAE_ERASER_REQUIRE_ALL = '1';
    expect(skipWithout(false, 'x')).toBe(false);
    expect(() => skipWithout(true, 'the data is absent')).toThrow(/SAE_ERASER_REQUIRE_ALL=1, but a required test would be skipped: the data is absent/);
  });
});
