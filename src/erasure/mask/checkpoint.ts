/**
 * Restoring a mask eraser from its checkpoint (layout in src/erasure/checkpoint.ts; the fields
 * are written by `MaskEraser.checkpoint`): eraser.json holds `probeHook`, `hooks` (one entry per
 * masked hook: units, width, the units' own fields), `options` (the trainer's resolved config)
 * and `evalTemperature`; eraser.safetensors holds `<hook>.mask_logits` and the units' tensors.
 */
import { join } from 'node:path';
import type { HookName } from '../../models/model.js';
import { ERASER_TENSORS, type LoadTarget, type StoredCheckpoint } from '../checkpoint.js';
import { freezeMask, MaskEraser, MASK_FORMAT, type FrozenMask } from './eraser.js';
import { parseMaskOptions, type MaskConfig } from './options.js';
import type { CheckpointHook, CheckpointTensors, MaskKind } from './units.js';
import { SAE_MASK } from './sae-mask.js';
import { NEURON_MASK } from './neuron-mask.js';
import { DAS_MASK } from './das-mask.js';

export { MASK_FORMAT };

const KINDS: readonly MaskKind[] = [SAE_MASK, NEURON_MASK, DAS_MASK];

function checkEntries(hooks: unknown, jsonPath: string): CheckpointHook[] {
  if (!Array.isArray(hooks) || hooks.length === 0) throw new Error(`${jsonPath}: field "hooks" must be a non-empty list`);
  for (const [i, e] of hooks.entries()) {
    const entry = e as Partial<CheckpointHook> | null;
    if (typeof entry !== 'object' || entry === null || typeof entry.hook !== 'string' || !Number.isInteger(entry.units) || !Number.isInteger(entry.dIn)) {
      throw new Error(`${jsonPath}: hooks[${i}] must be an object with a string "hook" and integer "units" and "dIn", got ${JSON.stringify(e)}`);
    }
  }
  return hooks as CheckpointHook[];
}

/** The stored trainer config: the method's options, with every fit-dependent default present. */
function storedConfig(kind: MaskKind, raw: unknown, saved: readonly HookName[], jsonPath: string): MaskConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${jsonPath}: field "options" must be an object`);
  const { hooks, seed, retrainHead, ...rest } = parseMaskOptions(kind.method, kind.options, raw, `${jsonPath}: field "options"`);
  if (hooks === undefined || seed === undefined || retrainHead === undefined) {
    throw new Error(`${jsonPath}: field "options" must hold the resolved training options, with "hooks", "seed" and "retrainHead"`);
  }
  if (hooks.length !== saved.length || hooks.some((h, i) => h !== saved[i])) {
    throw new Error(`${jsonPath}: options.hooks (${hooks.join(', ')}) differ from the masked hooks (${saved.join(', ')})`);
  }
  return { ...rest, hooks, seed, retrainHead };
}

/**
 * Restores a mask eraser (without its head) from a checked checkpoint. `target.saes` must hold an
 * SAE of the checkpoint's width at each sae_mask hook; `target.probeHook`, when given, must be the
 * checkpoint's.
 */
export function restoreMaskEraser(stored: StoredCheckpoint, target: LoadTarget): MaskEraser {
  const { jsonPath, json, method } = stored;
  const kind = KINDS.find((k) => k.method === method);
  if (kind === undefined)
    throw new Error(`${jsonPath}: a ${MASK_FORMAT} checkpoint of method ${method}, which is not a mask method (${KINDS.map((k) => k.method).join(', ')})`);
  const entries = checkEntries(json.hooks, jsonPath);
  const probeHook = json.probeHook;
  if (typeof probeHook !== 'string') throw new Error(`${jsonPath}: field "probeHook" must be a hook name, got ${JSON.stringify(probeHook)}`);
  if (target.probeHook !== undefined && target.probeHook !== probeHook) {
    throw new Error(`${jsonPath}: the mask was made for a probe reading hook ${probeHook}, but the probe here reads ${target.probeHook}`);
  }
  const config = storedConfig(
    kind,
    json.options,
    entries.map((e) => e.hook),
    jsonPath,
  );
  const path = join(stored.dir, ERASER_TENSORS);
  const file = stored.tensors;
  const tensors: CheckpointTensors = {
    path,
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
