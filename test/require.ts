/**
 * Skipping a test whose data or reference environment is absent: it says why, and when
 * `SAE_ERASER_REQUIRE_ALL=1` (CI sets it, since CI has ../shared and builds the references) the
 * absence is an error instead, so a test that silently stopped running cannot pass as green.
 */

/** True when the test must be skipped because `missing` holds; prints `why`, or throws under SAE_ERASER_REQUIRE_ALL=1. */
export function skipWithout(missing: boolean, why: string): boolean {
  if (!missing) return false;
  if (process.env.SAE_ERASER_REQUIRE_ALL === '1') throw new Error(`SAE_ERASER_REQUIRE_ALL=1, but a required test would be skipped: ${why}`);
  console.warn(`skipping: ${why}`);
  return true;
}
