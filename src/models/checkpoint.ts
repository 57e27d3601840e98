/**
 * Reads a model's weights from a Hugging Face safetensors checkpoint (single file or shards) and
 * checks each one against the shape the config implies before any data is read.
 *
 * Architectures save their weights under a prefix that depends on the class that saved them
 * (`gpt_neox.` for GPTNeoXForCausalLM, none for GPTNeoXModel; `bert.` for BertForMaskedLM, none
 * for BertModel): `withPrefix` finds which one a checkpoint uses. Tensors the model does not use
 * (pooler, masked-LM head, cached masks and rotary buffers of old checkpoints) are ignored, as
 * transformers does.
 */
import { basename } from 'node:path';
import { tf } from '../engine/engine.js';
import { openCheckpoint, type SafetensorsFile } from '../io/safetensors.js';

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

export class Checkpoint {
  private constructor(
    readonly dir: string,
    private readonly files: ReadonlyMap<string, SafetensorsFile>,
    private readonly prefix: string,
  ) {}

  /** Opens the safetensors of `dir` (validates headers only; no tensor data is read). */
  static open(dir: string): Checkpoint {
    return new Checkpoint(dir, openCheckpoint(dir), '');
  }

  /** True when the checkpoint holds `name` (no prefix applied). */
  hasRaw(name: string): boolean {
    return this.files.has(name);
  }

  /**
   * A view that prepends the first of `prefixes` under which `probe` exists (e.g. `gpt_neox.` or
   * ``). Throws a missing-tensor error naming every name tried when none does.
   */
  withPrefix(prefixes: readonly string[], probe: string): Checkpoint {
    for (const p of prefixes) if (this.files.has(p + probe)) return new Checkpoint(this.dir, this.files, p);
    throw new Error(`${this.describeFiles()}: missing tensor ${prefixes.map((p) => `"${p}${probe}"`).join(' or ')}`);
  }

  /** True when the checkpoint holds `name` under this view's prefix. */
  has(name: string): boolean {
    return this.files.has(this.prefix + name);
  }

  /** Checks that `name` exists with a float dtype and the `expected` shape; errors name the file and tensor. */
  check(name: string, expected: readonly number[], why: string): void {
    const full = this.prefix + name;
    const file = this.files.get(full);
    if (file === undefined) throw new Error(`${this.describeFiles()}: missing tensor "${full}" (${why})`);
    const { dtype, shape } = file.info(full);
    if (!FLOAT_DTYPES.has(dtype)) {
      throw new Error(`${file.path}: tensor "${full}" has dtype ${dtype}, expected a float dtype (F32, F16, BF16 or F64)`);
    }
    if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i])) {
      throw new Error(`${file.path}: tensor "${full}" has shape [${shape.join(', ')}] but the config implies [${expected.join(', ')}] (${why})`);
    }
  }

  /**
   * Refuses a checkpoint holding more layers than the config says (`layerOf` reads a layer index
   * from a tensor name under this view's prefix, or undefined): loading would silently drop them
   * and run a truncated model.
   */
  checkLayerCount(nLayers: number, layerOf: (name: string) => number | undefined, configKey: string): void {
    let deepest = -1;
    for (const full of this.files.keys()) {
      if (!full.startsWith(this.prefix)) continue;
      const layer = layerOf(full.slice(this.prefix.length));
      if (layer !== undefined && layer > deepest) deepest = layer;
    }
    if (deepest >= nLayers) {
      throw new Error(
        `${this.describeFiles()}: the checkpoint holds ${deepest + 1} layers but the config's ${configKey} is ${nLayers}; loading it would silently drop layers (fix ${configKey} in config.json)`,
      );
    }
  }

  /** Reads a checked tensor as float32. Call `check` first (the model loaders check everything up front). */
  read(name: string): tf.Tensor {
    const full = this.prefix + name;
    const file = this.files.get(full);
    if (file === undefined) throw new Error(`${this.describeFiles()}: missing tensor "${full}"`);
    return file.tensor(full);
  }

  /** Reads a checked tensor's values as float32 (row-major). */
  float32(name: string): Float32Array {
    const full = this.prefix + name;
    const file = this.files.get(full);
    if (file === undefined) throw new Error(`${this.describeFiles()}: missing tensor "${full}"`);
    return file.float32(full);
  }

  /** Reads a `[out, in]` linear weight and returns it transposed, `[in, out]`, ready for `x @ W^T`. */
  readTransposed(name: string): tf.Tensor2D {
    const w = this.read(name);
    const t = tf.transpose(w) as tf.Tensor2D;
    w.dispose();
    return t;
  }

  private describeFiles(): string {
    const paths = [...new Set([...this.files.values()].map((f) => f.path))];
    return paths.length === 1 ? paths[0]! : `${this.dir} (${paths.map((p) => basename(p)).join(', ')})`;
  }
}

/** The layer index a tensor name carries under `pattern` (one capture group), or undefined. */
export function layerIndex(pattern: RegExp, name: string): number | undefined {
  const m = pattern.exec(name);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}
