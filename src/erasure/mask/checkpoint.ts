/**
 * Restoring a mask eraser from its checkpoint (layout in src/erasure/checkpoint.ts; the fields
 * are written by `MaskEraser.checkpoint`): eraser.json holds `probeHook`, `hooks` (one entry per
 * masked hook: units, width, the units' own fields), `options` (the trainer's resolved config)
 * and `evalTemperature`; eraser.safetensors holds `<hook>.mask_logits` and the units' tensors.
 * eraser.json is parsed with a strict schema (`checkpointSchema`), so a malformed or unknown field
 * is refused, naming the file and the field. Fields kept for readers that repeat others must agree
 * with them: `options.hooks` with the hook entries, `evalTemperature` with `options.tempEnd`, an
 * sae_mask entry's `keepError` with `options.keepError`, and a das_mask hook's saved `basis`
 * with the one rebuilt from its `householder` vectors (or an earlier checkpoint's `rotation` with
 * the one rebuilt from its `skew`), within 1e-5.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { parseStrict } from '../../util/schema.js';
import type { HookName } from '../../models/model.js';
import { checkpointFields, checkRetrainedHead, ERASER_TENSORS, type LoadTarget, type StoredCheckpoint } from '../checkpoint.js';
import { freezeMask, MaskEraser, MASK_FORMAT, type FrozenMask } from './eraser.js';
import type { MaskConfig } from './options.js';
import type { CheckpointHook, CheckpointTensors, MaskKind } from './units.js';
import { SAE_MASK } from './sae-mask.js';
import { NEURON_MASK } from './neuron-mask.js';
import { DAS_MASK } from './das-mask.js';

export { MASK_FORMAT };

const KINDS: readonly MaskKind[] = [SAE_MASK, NEURON_MASK, DAS_MASK];

/** The fields of a mask checkpoint's eraser.json for `kind` (`options` is checked by `storedConfig`). */
function checkpointSchema(kind: MaskKind) {
  return z.strictObject({
    ...checkpointFields,
    format: z.literal(MASK_FORMAT).describe('The checkpoint family.'),
    method: z.literal(kind.method).describe('The mask method.'),
    probeHook: z.string().min(1).describe('The hook the probe reads.'),
    hooks: z
      .array(
        z.strictObject({
          hook: z.string().min(1).describe('The masked hook.'),
          units: z.number().int().min(1).describe('Units of the mask at the hook (length of `<hook>.mask_logits`).'),
          dIn: z.number().int().min(1).describe('Width of the activation at the hook.'),
          ...kind.entryFields,
        }),
      )
      .min(1)
      .describe('One entry per masked hook, in training order.'),
    options: z.record(z.string(), z.unknown()).describe("The trainer's resolved config (the method's options with every default filled in)."),
    evalTemperature: z.number().positive().describe('Temperature of the soft gate sigmoid(m / T) applied when options.hardMask is false: options.tempEnd.'),
  });
}

/** The stored trainer config: the method's options, every field present and resolved. */
function storedConfig(kind: MaskKind, raw: Record<string, unknown>, saved: readonly HookName[], jsonPath: string): MaskConfig {
  const missing = Object.entries(kind.config.shape)
    .filter(([name, field]) => !(name in raw) && !field.safeParse(undefined).success)
    .map(([name]) => `"${name}"`);
  if (missing.length > 0) throw new Error(`${jsonPath}: field "options" must hold the resolved training options; missing ${missing.join(', ')}`);
  const config = parseStrict(kind.config, raw, `${jsonPath}: field "options"`) as unknown as MaskConfig;
  const { hooks } = config;
  if (hooks.length !== saved.length || hooks.some((h, i) => h !== saved[i])) {
    throw new Error(`${jsonPath}: options.hooks (${hooks.join(', ')}) differ from the masked hooks (${saved.join(', ')})`);
  }
  return config;
}

/**
 * Restores a mask eraser (without its head) from a checked checkpoint. `target.saes` must hold an
 * SAE of the checkpoint's width at each sae_mask hook; `target.probeHook`, when given, must be the
 * checkpoint's.
 */
export function restoreMaskEraser(stored: StoredCheckpoint, target: LoadTarget): MaskEraser {
  const { jsonPath, method } = stored;
  const kind = KINDS.find((k) => k.method === method);
  if (kind === undefined)
    throw new Error(`${jsonPath}: a ${MASK_FORMAT} checkpoint of method ${method}, which is not a mask method (${KINDS.map((k) => k.method).join(', ')})`);
  const json = parseStrict(checkpointSchema(kind), stored.json, jsonPath);
  const entries: CheckpointHook[] = json.hooks;
  const { probeHook } = json;
  if (target.probeHook !== undefined && target.probeHook !== probeHook) {
    throw new Error(`${jsonPath}: the mask was made for a probe reading hook ${probeHook}, but the probe here reads ${target.probeHook}`);
  }
  const config = storedConfig(
    kind,
    json.options,
    entries.map((e) => e.hook),
    jsonPath,
  );
  checkRetrainedHead(stored, config.retrainHead);
  if (json.evalTemperature !== config.tempEnd) {
    throw new Error(
      `${jsonPath}: field "evalTemperature" is ${json.evalTemperature}, but options.tempEnd is ${config.tempEnd} (the soft gate's temperature is tempEnd)`,
    );
  }
  const path = join(stored.dir, ERASER_TENSORS);
  const file = stored.tensors;
  const tensors: CheckpointTensors = {
    path,
    jsonPath,
    float32(name, shape) {
      if (!file.has(name)) throw new Error(`${path}: missing tensor "${name}"`);
      const got = file.info(name).shape;
      if (got.length !== shape.length || got.some((v, i) => v !== shape[i])) {
        throw new Error(`${path}: tensor "${name}" has shape [${got.join(', ')}], expected [${shape.join(', ')}]`);
      }
      return file.float32(name);
    },
  };
  const masks: FrozenMask[] = [];
  try {
    for (const entry of entries) {
      const space = kind.restore(entry, tensors, target, config);
      try {
        if (space.nUnits !== entry.units)
          throw new Error(`${jsonPath}: hook ${entry.hook} has ${entry.units} units in the checkpoint, the restored units have ${space.nUnits}`);
        masks.push(freezeMask(space, tensors.float32(`${entry.hook}.mask_logits`, [entry.units]), config));
      } catch (err) {
        space.dispose();
        throw err;
      }
    }
    return new MaskEraser(kind.method, probeHook, masks, config);
  } catch (err) {
    for (const f of masks) {
      f.gate.dispose();
      f.space.dispose();
    }
    throw err;
  }
}
