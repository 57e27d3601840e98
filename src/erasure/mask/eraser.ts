/**
 * `MaskEraser`: a fitted learned mask, frozen. At each masked hook it applies the trained gate,
 * the hard gate [m > 0] (`hardMask`, default) or the soft gate sigmoid(m / tempEnd), through the
 * units' edit x' = sum_j s_j a_j(x) v_j + rest(x) (units.ts): per token in `edits()` (as ONNX
 * nodes in `graphEdits()`), and on cached mean-pooled values in `erasePooled` when the only masked
 * hook is the probe hook.
 */
import { tf } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { RawTensor } from '../../io/safetensors.js';
import type { Edit, GraphEdit, HookName } from '../../models/model.js';
import { checkWidth, type CheckpointContent, type Eraser, type EraserDescription } from '../eraser.js';
import { withoutHead } from '../head.js';
import { hardGate, softGate } from './gate.js';
import { maskSupervision, type MaskConfig, type MaskMethod } from './options.js';
import { unitGraphEdit, type CheckpointHook, type UnitFrame, type UnitKind, type UnitSpace } from './units.js';

/** The checkpoint format of the mask family (checkpoint.ts reads it). */
export const MASK_FORMAT = 'sae-eraser/mask';

/** The mask of one hook, frozen for application. */
export interface FrozenMask {
  space: UnitSpace;
  logits: Float32Array;
  /** The gate applied `[units]`. */
  gate: tf.Tensor1D;
  frame: UnitFrame;
}

/** Freezes `space` and its trained `logits` into the gate the options ask for; the result owns `space`. */
export function freezeMask(space: UnitSpace, logits: Float32Array, config: Pick<MaskConfig, 'hardMask' | 'tempEnd'>): FrozenMask {
  space.freeze();
  const gate = tf.tidy(() => {
    const m = tf.tensor1d(logits);
    return config.hardMask ? hardGate(m) : softGate(m, config.tempEnd);
  });
  return { space, logits, gate, frame: space.frame() };
}

function disposeMask(f: FrozenMask): void {
  f.gate.dispose();
  f.space.dispose();
}

const KIND_WORDS: Readonly<Record<UnitKind, string>> = { sae_features: 'SAE features', neurons: 'neurons', directions: 'learned directions' };

export class MaskEraser implements Eraser {
  readonly head = undefined;

  /** Takes ownership of `masks`. */
  constructor(
    readonly method: MaskMethod,
    /** The hook the probe reads. */
    readonly probeHook: HookName,
    private readonly masks: readonly FrozenMask[],
    /** The options it was trained with, resolved. */
    readonly config: Readonly<MaskConfig>,
  ) {
    if (masks.length === 0) throw new Error(`${method}: a mask eraser needs at least one masked hook`);
  }

  /** Hooks with a mask, in training order. */
  get hooks(): HookName[] {
    return this.masks.map((f) => f.space.hook);
  }

  private maskAt(hook: HookName): FrozenMask {
    const f = this.masks.find((x) => x.space.hook === hook);
    if (f === undefined) throw new Error(`${this.method}: no mask at hook "${hook}" (masked: ${this.hooks.join(', ')})`);
    return f;
  }

  edits(): Record<HookName, Edit> {
    const out: Record<HookName, Edit> = {};
    for (const f of this.masks) {
      out[f.space.hook] = (x) => {
        checkWidth(this.method, f.space.hook, f.space.dIn, x.shape[2]);
        return tf.tidy(() => f.frame.edit(x, f.gate));
      };
    }
    return out;
  }

  /** `edits()` as ONNX nodes (`unitGraphEdit`); undefined when a masked hook's units have no ONNX form. */
  graphEdits(): Record<HookName, GraphEdit> | undefined {
    const out: Record<HookName, GraphEdit> = {};
    for (const f of this.masks) {
      const hook = f.space.hook;
      const edit = unitGraphEdit(f.space, f.frame, f.gate);
      if (edit === undefined) return undefined;
      out[hook] = (g, x, d) => {
        checkWidth(this.method, hook, f.space.dIn, d);
        return edit(g, x);
      };
    }
    return out;
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined {
    if (this.masks.length !== 1 || this.masks[0]!.space.hook !== this.probeHook) return undefined;
    const f = this.masks[0]!;
    checkWidth(this.method, f.space.hook, f.space.dIn, cache.dim(f.space.hook));
    const all = Array.from(rows);
    if (all.length === 0) return tf.zeros([0, f.space.dIn]) as tf.Tensor2D;
    const parts: tf.Tensor2D[] = [];
    try {
      // Chunks bound the dense [rows, units] codes an SAE decode needs.
      for (let s = 0; s < all.length; s += 256) parts.push(tf.tidy(() => f.frame.erasePooled(cache, all.slice(s, s + 256), f.gate)));
      return parts.length === 1 ? parts.pop()! : tf.concat(parts, 0);
    } finally {
      tf.dispose(parts);
    }
  }

  /** Mask logits of a hook (a copy). */
  maskLogits(hook: HookName): Float32Array {
    return this.maskAt(hook).logits.slice();
  }

  /** Indices of removed units (hard gate 0, i.e. m <= 0) per hook. */
  removedUnits(): Record<HookName, number[]> {
    const out: Record<HookName, number[]> = {};
    for (const f of this.masks) {
      const idx: number[] = [];
      f.logits.forEach((m, j) => {
        if (!(m > 0)) idx.push(j);
      });
      out[f.space.hook] = idx;
    }
    return out;
  }

  /** A named unit tensor of a hook as saved (the DAS `householder` vectors or `basis`), row-major. */
  unitTensor(hook: HookName, name: string): Float32Array {
    const all = this.maskAt(hook).space.savedTensors();
    try {
      const t = all[name];
      if (t === undefined) throw new Error(`${this.method}: no unit tensor "${name}" at hook "${hook}"`);
      return Float32Array.from(t instanceof tf.Tensor ? t.dataSync() : (t.data as Float32Array));
    } finally {
      tf.dispose(Object.values(all).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
    }
  }

  /**
   * The DAS basis U `[d, k]` (row-major) at a hook: removed units are the columns u_j with gate 0
   * (the rotation R, k = d, for a checkpoint of the earlier Cayley parametrisation).
   */
  basis(hook: HookName): Float32Array {
    if (this.method !== 'das_mask') throw new Error(`${this.method}: only das_mask learns directions`);
    const saved = this.maskAt(hook).space.checkpointInfo().parametrisation;
    return this.unitTensor(hook, saved === 'cayley' ? 'rotation' : 'basis');
  }

  describe(): EraserDescription {
    const removed = this.removedUnits();
    const details: EraserDescription['removed'] = {};
    const phrases: string[] = [];
    let total = 0;
    for (const f of this.masks) {
      const idx = removed[f.space.hook]!;
      total += idx.length;
      details[f.space.hook] =
        f.space.unitKind === 'directions' ? { kind: 'directions', indices: idx, rank: idx.length } : { kind: f.space.unitKind, indices: idx };
      const shown = idx.length <= 10 ? idx.join(', ') : `${idx.slice(0, 10).join(', ')}, ...`;
      phrases.push(`${idx.length} of ${f.space.nUnits} ${KIND_WORDS[f.space.unitKind]} at ${f.space.hook}${idx.length > 0 ? ` (${shown})` : ''}`);
    }
    return {
      method: this.method,
      hooks: this.hooks,
      unitsRemoved: total,
      summary: `${this.method} (${this.config.objective} objective${this.config.hardMask ? '' : ', soft mask'}) removes ${phrases.join('; ')}`,
      removed: details,
      supervision: maskSupervision(this.config),
    };
  }

  /**
   * eraser.json fields: `probeHook`, `hooks` (per hook: units, width and the units' own fields),
   * `options` (the trainer's config) and `evalTemperature` (of the soft gate); tensors
   * `<hook>.mask_logits` and the units' own (`<hook>.<name>`). checkpoint.ts reads them back and
   * checks that the fields repeating each other agree.
   */
  checkpoint(): CheckpointContent {
    const tensors: Record<string, tf.Tensor | RawTensor> = {};
    try {
      for (const f of this.masks) {
        tensors[`${f.space.hook}.mask_logits`] = { dtype: 'F32', shape: [f.logits.length], data: f.logits };
        for (const [name, t] of Object.entries(f.space.savedTensors())) tensors[`${f.space.hook}.${name}`] = t;
      }
    } catch (err) {
      tf.dispose(Object.values(tensors).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
      throw err;
    }
    const hooks: CheckpointHook[] = this.masks.map((f) => ({ hook: f.space.hook, units: f.space.nUnits, dIn: f.space.dIn, ...f.space.checkpointInfo() }));
    return {
      format: MASK_FORMAT,
      fields: { probeHook: this.probeHook, hooks, options: this.config, evalTemperature: this.config.tempEnd },
      tensors,
    };
  }

  dispose(): void {
    for (const f of this.masks) disposeMask(f);
  }
}

/** The mask eraser in `eraser` (itself, or under a retrained head); throws for other erasers. */
export function asMaskEraser(eraser: Eraser): MaskEraser {
  const inner = withoutHead(eraser);
  if (!(inner instanceof MaskEraser)) throw new Error(`${eraser.method}: not a learned-mask eraser`);
  return inner;
}
