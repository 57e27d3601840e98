/**
 * The `random` control for SHIFT: zero-ablate k SAE features chosen uniformly at random (seeded),
 * through the same edit code as SHIFT (ablate.ts: x' = x - sum_{i in S} f_i(x) v_i, SAE error kept).
 * If SHIFT's effect comes from *which* features it removes, removing as many random ones should
 * do much less.
 *
 * How many, and where:
 *   - `perHook: { hook: count }`: that many random features at each hook (matching SHIFT hook by
 *     hook); hook i (in the model's forward order) draws with seed `seed + i`;
 *   - `k: number`: k features drawn uniformly from the union of all features of the eligible hooks
 *     (`hooks`, default every hook with an SAE at or before the probe hook), seed `seed`;
 *   - neither: fit SHIFT with the same options and use its per-hook counts.
 * SHIFT's fields are read only in the last case; with `k` or `perHook` they are refused when the
 * config is read, as is `hooks` with `perHook` (which names its hooks).
 * `seed` defaults to FitContext.seed. Draws use `chooseRandomUnits` (src/erasure/random-units.ts).
 *
 * Supervision: the biased probe's (the ambiguous split's task labels) and, when SHIFT's counts are
 * used, whatever SHIFT's selection read (its concept-set labels, or its hand-picked features),
 * since the counts carry that information.
 */
import { z } from 'zod';
import type { HookName } from '../models/model.js';
import { hooksUpToProbe } from './ablate.js';
import { supervision, type Eraser, type EraserFitter, type EraserSae, type FitContext, type Supervision } from './eraser.js';
import { FeatureAblationEraser, type RandomPlan } from './feature-ablation.js';
import { chooseRandomUnits } from './random-units.js';
import { chooseShiftFeatures, shiftSupervision } from './shift.js';
import { checkShiftOptions, resolveShiftOptions, shiftOptionFields, type ShiftField } from './shift-options.js';

const SHIFT_FIELDS = Object.keys(shiftOptionFields) as ShiftField[];

export const randomOptionsSchema = z
  .strictObject({
    ...shiftOptionFields,
    k: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe('Draw this many features uniformly from all features of the eligible hooks (`hooks`); exclusive with perHook.'),
    perHook: z
      .record(z.string(), z.number().int().min(0))
      .optional()
      .describe(
        'Draw this many features at each listed hook, { hook: count }; exclusive with k. With neither, the counts are the ones SHIFT (same options) selects.',
      ),
    seed: z.number().int().optional().describe("Seed of the draws (hook i in forward order uses seed + i with perHook). Default the run's seed."),
  })
  .superRefine((o, ctx) => {
    if (o.k !== undefined && o.perHook !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['k'], message: '"perHook" and "k" are exclusive: give one' });
    } else if (o.k === undefined && o.perHook === undefined) {
      checkShiftOptions(o, ctx, false);
    } else {
      // Given counts replace SHIFT: none of its fields is read, except `hooks` (where k draws from).
      const counts = o.k !== undefined ? '"k"' : '"perHook"';
      for (const field of SHIFT_FIELDS) {
        if (o[field] === undefined || (field === 'hooks' && o.k !== undefined)) continue;
        const message =
          field === 'hooks'
            ? 'applies only with "k" (the hooks it draws from) or without counts (SHIFT\'s hooks): "perHook" names its own hooks'
            : `applies only when SHIFT chooses the counts, without "k" or "perHook" (${counts} is given)`;
        ctx.addIssue({ code: 'custom', path: [field], message });
      }
    }
  })
  .describe('Control for SHIFT: zero-ablate as many SAE features, chosen at random.');

export type RandomOptions = z.output<typeof randomOptionsSchema>;

/** How the features were drawn, in words (the end of the eraser's summary). */
function selectedBy(p: RandomPlan): string {
  const where =
    p.source === 'k'
      ? `uniformly from all features of ${p.hooks.join(', ')}`
      : p.source === 'shift'
        ? 'matching the per-hook counts SHIFT selects'
        : 'with the configured per-hook counts';
  return `features drawn at random (seed ${p.seed}) ${where}; the control for SHIFT`;
}

/**
 * The labels the random control reads with these options (see the module note): the biased
 * probe's; with neither `k` nor `perHook`, also what SHIFT's selection with the same options reads.
 */
export function randomSupervision(o: RandomOptions): Supervision {
  return o.k !== undefined || o.perHook !== undefined ? supervision(['ambiguous_task']) : shiftSupervision(resolveShiftOptions(o));
}

class RandomFitter implements EraserFitter {
  readonly method = 'random' as const;

  constructor(private readonly options: RandomOptions) {}

  async fit(ctx: FitContext): Promise<Eraser> {
    const o = this.options;
    const seed = o.seed ?? ctx.seed;
    let features: Record<HookName, Int32Array>;
    let plan: RandomPlan;
    const read = randomSupervision(o);
    if (o.k !== undefined) {
      const eligible = hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, o.hooks);
      plan = { seed, source: 'k', k: o.k, hooks: eligible };
      features = drawFromUnion(ctx.saes, eligible, o.k, seed);
    } else {
      let perHook: Record<HookName, number>;
      let source: RandomPlan['source'];
      if (o.perHook !== undefined) {
        perHook = { ...o.perHook };
        hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, Object.keys(perHook));
        source = 'perHook';
      } else {
        const shift = chooseShiftFeatures(ctx, resolveShiftOptions(o));
        perHook = Object.fromEntries(Object.entries(shift.features).map(([h, f]) => [h, f.length]));
        source = 'shift';
      }
      const order = ctx.model.hookNames;
      features = {};
      for (const [hook, count] of Object.entries(perHook)) features[hook] = chooseRandomUnits(ctx.saes[hook]!.dSae, count, seed + order.indexOf(hook));
      plan = { seed, source, perHook, hooks: Object.keys(perHook) };
    }
    return FeatureAblationEraser.create('random', ctx.saes, ctx.probeHook, features, { selectedBy: selectedBy(plan), fields: { plan }, supervision: read });
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

/** The fitter of `random`, with options parsed by `randomOptionsSchema`. */
export function createRandomFitter(options: RandomOptions): EraserFitter {
  return new RandomFitter(options);
}
