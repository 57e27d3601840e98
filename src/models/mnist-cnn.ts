/**
 * A small convolutional MNIST classifier with one dense hidden layer, the model of the MNIST digit
 * erasure experiment (src/mnist/). Shapes for a batch of n images (row vectors throughout):
 *
 *   x      [n, 28, 28]      normalised pixels (src/data/mnist.ts `normaliseMnist`)
 *   conv   [n, 14, 14, C]   = relu(conv5x5(x, stride 2, zero padding 2) + b_conv)
 *   hidden [n, H]           = relu(flatten(conv) W_dense + b_dense)        <- the layer masks act on
 *   logits [n, 10]          = hidden W_out + b_out
 *
 * Why a stride-2 convolution and no pooling: the wasm backend has no kernel for the filter
 * gradient of `conv2d` (Conv2DBackpropFilter) and its max-pool gradient is slow, so the one
 * convolution is written as a matrix product over image patches (im2col), built in JavaScript
 * (`convPatches`), with its gradient P^T dY written out (`patchConv`). The input needs no gradient,
 * so nothing else is required, and every other layer is a dense product.
 *
 * Checkpoints: one safetensors file with the six tensors (`conv.weight [k*k, C]`, `conv.bias`,
 * `dense.weight [C*14*14, H]`, `dense.bias`, `out.weight [H, 10]`, `out.bias`) and the config as
 * JSON in the metadata (`mnist_cnn_config`).
 */
import { tf, variableFrom } from '../engine/engine.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { mulberry32 } from '../data/prng.js';
import { MNIST_COLS, MNIST_ROWS } from '../data/mnist.js';

/** Kernel size, stride and padding of the convolution (fixed: they define the 14 x 14 output grid). */
export const CONV_KERNEL = 5;
export const CONV_STRIDE = 2;
export const CONV_PADDING = 2;
/** Output grid side: floor((28 + 2 * 2 - 5) / 2) + 1 = 14. */
export const CONV_GRID = Math.floor((MNIST_ROWS + 2 * CONV_PADDING - CONV_KERNEL) / CONV_STRIDE) + 1;
export const MNIST_CLASSES = 10;

export interface MnistCnnConfig {
  /** Convolution channels C. */
  channels: number;
  /** Width H of the dense hidden layer. */
  hidden: number;
}

export const DEFAULT_MNIST_CNN_CONFIG: Readonly<MnistCnnConfig> = { channels: 32, hidden: 128 };

const META_KEY = 'mnist_cnn_config';
const PIXELS = MNIST_ROWS * MNIST_COLS;
const PATCH = CONV_KERNEL * CONV_KERNEL;
const CELLS = CONV_GRID * CONV_GRID;

/** The tensors of a checkpoint, with their shapes for a config. */
function parameterShapes(config: MnistCnnConfig): Record<ParameterName, number[]> {
  return {
    'conv.weight': [PATCH, config.channels],
    'conv.bias': [config.channels],
    'dense.weight': [CELLS * config.channels, config.hidden],
    'dense.bias': [config.hidden],
    'out.weight': [config.hidden, MNIST_CLASSES],
    'out.bias': [MNIST_CLASSES],
  };
}

const PARAMETER_NAMES = ['conv.weight', 'conv.bias', 'dense.weight', 'dense.bias', 'out.weight', 'out.bias'] as const;
export type ParameterName = (typeof PARAMETER_NAMES)[number];

function checkConfig(config: MnistCnnConfig, where: string): void {
  for (const key of ['channels', 'hidden'] as const) {
    const v = config[key];
    if (!Number.isInteger(v) || v < 1) throw new Error(`${where}: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
  }
}

/**
 * Image patches of the convolution for images `x [n * 784]` (normalised, row-major 28 x 28):
 * `patches [n * 196, 25]` (row (i, oy, ox), column (ky, kx): pixel (2 oy - 2 + ky, 2 ox - 2 + kx)
 * of image i, 0 outside the image) and its transpose `[25, n * 196]`, both row-major.
 * `shifts`, when given, holds a (dy, dx) pair per image: image i is read shifted by (dy, dx) pixels
 * (its pixel (r, c) is taken from (r - dy, c - dx)), which is how training augments.
 */
export function convPatches(x: Float32Array, n: number, shifts?: Int8Array): { patches: Float32Array; transposed: Float32Array } {
  if (x.length !== n * PIXELS) throw new Error(`convPatches: ${x.length} values are not ${n} images of ${PIXELS} pixels`);
  if (shifts !== undefined && shifts.length !== 2 * n) throw new Error(`convPatches: ${shifts.length} shift values for ${n} images (need 2 each)`);
  const rows = n * CELLS;
  const patches = new Float32Array(rows * PATCH);
  const transposed = new Float32Array(PATCH * rows);
  for (let i = 0; i < n; i++) {
    const base = i * PIXELS;
    const dy = shifts === undefined ? 0 : shifts[2 * i]!;
    const dx = shifts === undefined ? 0 : shifts[2 * i + 1]!;
    for (let oy = 0; oy < CONV_GRID; oy++) {
      for (let ox = 0; ox < CONV_GRID; ox++) {
        const row = i * CELLS + oy * CONV_GRID + ox;
        for (let ky = 0; ky < CONV_KERNEL; ky++) {
          const r = CONV_STRIDE * oy - CONV_PADDING + ky - dy;
          for (let kx = 0; kx < CONV_KERNEL; kx++) {
            const c = CONV_STRIDE * ox - CONV_PADDING + kx - dx;
            const v = r >= 0 && r < MNIST_ROWS && c >= 0 && c < MNIST_COLS ? x[base + r * MNIST_COLS + c]! : 0;
            const col = ky * CONV_KERNEL + kx;
            patches[row * PATCH + col] = v;
            transposed[col * rows + row] = v;
          }
        }
      }
    }
  }
  return { patches, transposed };
}

/**
 * P W for constant patches `patches [m, 25]` (with `transposed` = P^T) and a weight `w [25, C]`,
 * differentiable in W only: dL/dW = P^T dL/dY (the patches are data, so no input gradient).
 * The backward pass reads `transposed`: create both outside the function being differentiated.
 */
export function patchConv(patches: tf.Tensor2D, transposed: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const weight = args[0] as tf.Tensor2D;
    return { value: tf.matMul(patches, weight), gradFunc: (dy: tf.Tensor) => [tf.matMul(transposed, dy as tf.Tensor2D)] };
  });
  return op(w) as tf.Tensor2D;
}

export class MnistCnn {
  readonly config: Readonly<MnistCnnConfig>;
  /** The parameters by checkpoint name (trainable variables). */
  readonly parameters: Readonly<Record<ParameterName, tf.Variable>>;
  private disposed = false;

  /** Takes over `values` (one tensor per parameter, of the shapes `parameterShapes` gives). */
  private constructor(config: MnistCnnConfig, values: Record<ParameterName, tf.Tensor>, where: string) {
    checkConfig(config, where);
    this.config = { channels: config.channels, hidden: config.hidden };
    const shapes = parameterShapes(config);
    for (const name of PARAMETER_NAMES) {
      const got = values[name].shape;
      const want = shapes[name];
      if (got.length !== want.length || got.some((d, k) => d !== want[k])) {
        tf.dispose(Object.values(values));
        throw new Error(`${where}: tensor "${name}" has shape [${got.join(', ')}], expected [${want.join(', ')}]`);
      }
    }
    this.parameters = Object.fromEntries(PARAMETER_NAMES.map((name) => [name, variableFrom(values[name], `mnist_${name}`)])) as Record<
      ParameterName,
      tf.Variable
    >;
  }

  /**
   * A fresh network: weights uniform in +-sqrt(6 / fan_in) (He-uniform, for the ReLU layers) and
   * +-1 / sqrt(fan_in) for the output layer, biases 0, drawn from the project PRNG with `seed`.
   */
  static init(config: MnistCnnConfig = DEFAULT_MNIST_CNN_CONFIG, seed = 42): MnistCnn {
    checkConfig(config, 'MnistCnn');
    const rng = mulberry32(seed);
    const shapes = parameterShapes(config);
    const values = {} as Record<ParameterName, tf.Tensor>;
    for (const name of PARAMETER_NAMES) {
      const shape = shapes[name];
      const size = shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(size);
      if (name.endsWith('.weight')) {
        const fanIn = shape[0]!;
        const bound = name === 'out.weight' ? 1 / Math.sqrt(fanIn) : Math.sqrt(6 / fanIn);
        for (let i = 0; i < size; i++) data[i] = (2 * rng() - 1) * bound;
      }
      values[name] = tf.tensor(data, shape);
    }
    return new MnistCnn(config, values, 'MnistCnn');
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error('MnistCnn: used after dispose()');
  }

  /** The trainable variables in checkpoint order. */
  get variables(): tf.Variable[] {
    return PARAMETER_NAMES.map((name) => this.parameters[name]);
  }

  /** Hidden activations `[n, H]` from precomputed patches (`convPatches`, as tensors); differentiable in the parameters. */
  hiddenFromPatches(patches: tf.Tensor2D, transposed: tf.Tensor2D): tf.Tensor2D {
    this.checkAlive();
    const n = patches.shape[0] / CELLS;
    if (!Number.isInteger(n) || patches.shape[1] !== PATCH) {
      throw new Error(`MnistCnn: patches must be [n * ${CELLS}, ${PATCH}], got [${patches.shape.join(', ')}]`);
    }
    const p = this.parameters;
    return tf.tidy(() => {
      const conv = tf.relu(tf.add(patchConv(patches, transposed, p['conv.weight'] as tf.Tensor2D), p['conv.bias']));
      const flat = tf.reshape(conv, [n, CELLS * this.config.channels]);
      return tf.relu(tf.add(tf.matMul(flat, p['dense.weight'] as tf.Tensor2D), p['dense.bias'])) as tf.Tensor2D;
    });
  }

  /** Hidden activations `[n, H]` of normalised images `x [n * 784]`. */
  hidden(x: Float32Array, n: number): tf.Tensor2D {
    const { patches, transposed } = convPatches(x, n);
    return tf.tidy(() => this.hiddenFromPatches(tf.tensor2d(patches, [n * CELLS, PATCH]), tf.tensor2d(transposed, [PATCH, n * CELLS])));
  }

  /** The output layer: logits `[n, 10]` of hidden activations `h [n, H]` (edited or not). */
  head(h: tf.Tensor2D): tf.Tensor2D {
    this.checkAlive();
    if (h.rank !== 2 || h.shape[1] !== this.config.hidden)
      throw new Error(`MnistCnn: hidden activations must be [n, ${this.config.hidden}], got [${h.shape.join(', ')}]`);
    return tf.tidy(() => tf.add(tf.matMul(h, this.parameters['out.weight'] as tf.Tensor2D), this.parameters['out.bias']) as tf.Tensor2D);
  }

  /** The output layer's weights `[H, 10]` and bias `[10]` as plain arrays. */
  headWeights(): { weight: Float32Array; bias: Float32Array } {
    this.checkAlive();
    return { weight: Float32Array.from(this.parameters['out.weight'].dataSync()), bias: Float32Array.from(this.parameters['out.bias'].dataSync()) };
  }

  /** Writes the parameters and the config to a safetensors file (atomically). */
  save(path: string): void {
    this.checkAlive();
    writeSafetensors(path, this.parameters, { [META_KEY]: JSON.stringify(this.config) });
  }

  /** Reads a network written by `save`; errors name the file and the bad field or tensor. */
  static load(path: string): MnistCnn {
    const file = readSafetensors(path);
    const raw = file.metadata[META_KEY];
    if (raw === undefined) throw new Error(`${path}: no "${META_KEY}" metadata; not an MNIST CNN checkpoint`);
    let config: MnistCnnConfig;
    try {
      config = JSON.parse(raw) as MnistCnnConfig;
    } catch (err) {
      throw new Error(`${path}: metadata "${META_KEY}" is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
    if (typeof config !== 'object' || config === null) throw new Error(`${path}: metadata "${META_KEY}" is not a JSON object`);
    checkConfig(config, `${path}: metadata "${META_KEY}"`);
    const shapes = parameterShapes(config);
    for (const name of PARAMETER_NAMES) {
      const shape = file.info(name).shape;
      const want = shapes[name];
      if (shape.length !== want.length || shape.some((d, k) => d !== want[k])) {
        throw new Error(`${path}: tensor "${name}" has shape [${shape.join(', ')}], expected [${want.join(', ')}] for ${raw}`);
      }
    }
    const values = Object.fromEntries(PARAMETER_NAMES.map((name) => [name, tf.tensor(file.float32(name), shapes[name])])) as Record<ParameterName, tf.Tensor>;
    return new MnistCnn(config, values, path);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose(Object.values(this.parameters));
  }
}
