/**
 * The `random` control for SHIFT: zero-ablate k SAE features chosen uniformly at random (seeded),
 * through the same edit code as SHIFT (ablate.ts: x' = x - sum_{i in S} f_i(x) v_i, SAE error kept).
 * If SHIFT's effect comes from *which* features it removes, removing as many random ones should
 * do much less.
 *
 * How many, and where (FitContext.options):
 *   - `perHook: { hook: count }`: that many random features at each hook (matching SHIFT hook by
 *     hook); hook i (in the model's forward order) draws with seed `seed + i`;
 *   - `k: number`: k features drawn uniformly from the union of all features of the eligible hooks
 *     (`hooks`, default every hook with an SAE at or before the probe hook), seed `seed`;
 *   - neither: fit SHIFT with the same options and use its per-hook counts.
 * `seed` defaults to FitContext.seed. Draws use `chooseRandomUnits` (src/erasure/random-units.ts).
 */
import type { HookName } from '../models/model.js';
import { FeatureAblationEraser, hooksUpToProbe, readFeatureAblationCheckpoint } from './ablate.js';
import type { EraserSae, FitContext } from './eraser.js';
import { chooseRandomUnits } from './random-units.js';
import { chooseShiftFeatures, resolveShiftOptions } from './shift.js';

interface RandomPlan {
  seed: number;
  source: 'perHook' | 'k' | 'shift';
  perHook?: Record<HookName, number>;
  k?: number;
  hooks: HookName[];
}

function readSeed(options: Readonly<Record<string, unknown>>, fallback: number): number {
  const seed = options.seed ?? fallback;
  if (typeof seed !== 'number' || !Number.isInteger(seed)) throw new Error(`random option "seed" must be an integer, got ${JSON.stringify(seed)}`);
  return seed;
}

export class RandomAblationEraser extends FeatureAblationEraser {
  private plan: RandomPlan | undefined;

  constructor() {
    super('random');
  }

  async fit(ctx: FitContext): Promise<void> {
    const o = ctx.options;
    const seed = readSeed(o, ctx.seed);
    // Validates the shared option block (hooks, SHIFT settings for the fallback).
    const shiftOptions = resolveShiftOptions(o);
    const eligible = hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, shiftOptions.hooks);
    if (o.perHook !== undefined && o.k !== undefined) throw new Error('random options "perHook" and "k" are exclusive: give one');
    let perHook: Record<HookName, number> | undefined;
    let source: RandomPlan['source'];
    if (o.perHook !== undefined) {
      if (typeof o.perHook !== 'object' || o.perHook === null || Array.isArray(o.perHook)) throw new Error('random option "perHook" must map hook names to feature counts');
      perHook = {};
      for (const [hook, count] of Object.entries(o.perHook)) {
        if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) throw new Error(`random option "perHook"["${hook}"] must be a non-negative integer, got ${JSON.stringify(count)}`);
        perHook[hook] = count;
      }
      hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, Object.keys(perHook));
      source = 'perHook';
    } else if (o.k !== undefined) {
      const k = o.k;
      if (typeof k !== 'number' || !Number.isInteger(k) || k < 0) throw new Error(`random option "k" must be a non-negative integer, got ${JSON.stringify(k)}`);
      this.plan = { seed, source: 'k', k, hooks: eligible };
      this.setAblation(ctx.saes, ctx.probeHook, drawFromUnion(ctx.saes, eligible, k, seed));
      return;
    } else {
      const shift = chooseShiftFeatures(ctx, shiftOptions);
      perHook = Object.fromEntries(Object.entries(shift.features).map(([h, f]) => [h, f.length]));
      source = 'shift';
    }
    const order = ctx.model.hookNames;
    const features: Record<HookName, Int32Array> = {};
    for (const [hook, count] of Object.entries(perHook)) {
      features[hook] = chooseRandomUnits(ctx.saes[hook]!.dSae, count, seed + order.indexOf(hook));
    }
    this.plan = { seed, source, perHook, hooks: Object.keys(perHook) };
    this.setAblation(ctx.saes, ctx.probeHook, features);
  }

  protected how(): string {
    const p = this.plan;
    if (p === undefined) return 'random features from a checkpoint';
    const where = p.source === 'k' ? `uniformly from all features of ${p.hooks.join(', ')}` : p.source === 'shift' ? 'matching the per-hook counts SHIFT selects' : 'with the configured per-hook counts';
    return `features drawn at random (seed ${p.seed}) ${where}; the control for SHIFT`;
  }

  protected override extraJson(): Record<string, unknown> {
    return { plan: this.plan ?? null };
  }

  /** Reads a `random` checkpoint; `saes` must be the SAEs it was fitted with. */
  static load(dir: string, saes: Readonly<Record<HookName, EraserSae>>): RandomAblationEraser {
    const ckpt = readFeatureAblationCheckpoint(dir, saes, ['random']);
    const eraser = new RandomAblationEraser();
    eraser.restore(ckpt, saes);
    eraser.plan = (ckpt.json.plan as RandomPlan | null) ?? undefined;
    return eraser;
  }
}

/** k features drawn uniformly from the concatenated feature indices of `hooks`. */
function drawFromUnion(saes: Readonly<Record<HookName, EraserSae>>, hooks: HookName[], k: number, seed: number): Record<HookName, Int32Array> {
  const offsets: number[] = [];
  let total = 0;
  for (const h of hooks) {
    offsets.push(total);
    total += saes[h]!.dSae;
  }
  const chosen = chooseRandomUnits(total, k, seed);
  const lists: Record<HookName, number[]> = {};
  for (const g of chosen) {
    let j = hooks.length - 1;
    while (offsets[j]! > g) j--;
    (lists[hooks[j]!] ??= []).push(g - offsets[j]!);
  }
  return Object.fromEntries(Object.entries(lists).map(([h, l]) => [h, Int32Array.from(l)]));
}

export function createRandomAblationEraser(): RandomAblationEraser {
  return new RandomAblationEraser();
}
