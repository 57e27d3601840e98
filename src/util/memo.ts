/**
 * Results remembered for the life of an owner object: a value is reused when it was computed for
 * the same owner, the same key (settings, as a string) and the same inputs (compared by identity).
 * The owner is held weakly, so nothing outlives it; inputs are held as long as their entry.
 */
export class IdentityMemo<T> {
  private readonly entries = new WeakMap<object, { inputs: readonly unknown[]; key: string; value: T }[]>();

  /** The value remembered for `owner`, `key` and `inputs`, or `compute()`'s, remembered. */
  get(owner: object, inputs: readonly unknown[], key: string, compute: () => T): T {
    let list = this.entries.get(owner);
    if (list === undefined) this.entries.set(owner, (list = []));
    const hit = list.find((e) => e.key === key && e.inputs.length === inputs.length && e.inputs.every((x, i) => x === inputs[i]));
    if (hit !== undefined) return hit.value;
    const value = compute();
    list.push({ inputs, key, value });
    return value;
  }
}
