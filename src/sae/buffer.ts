/**
 * Activation streams for SAE training, with bounded memory.
 *
 * An `ActivationSource` yields chunks of token activations `[n, dIn]` (row-major Float32Array),
 * one pass (epoch) at a time. `modelHookSource` runs a Model over texts in a seeded shuffled
 * document order and keeps the real (mask 1) tokens of several hooks, all captured by one forward
 * pass per chunk (`modelActivationSource` is its one-hook view). `spillHookActivations` writes one
 * such pass to one file per hook, so that SAEs at many hooks train from one pass of the model with
 * memory bounded by a chunk.
 *
 * `ActivationBuffer` holds at most `capacityTokens` rows. It refills from the source whenever it is
 * half empty (a pass that ends first ends the refill once a batch is there) and hands out batches of rows drawn uniformly at random without replacement from what
 * it holds, so a batch mixes tokens of many documents (as dictionary_learning's ActivationBuffer
 * does). When a pass ends the source restarts with the next epoch's shuffle.
 *
 * For exact resumption the buffer's whole state can be saved and restored (`state()`,
 * `restore()`): the rows it holds, a chunk part read but not yet stored, the number of draws taken
 * from its seeded generator, and the source's position (its pass and how far into it).
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { concatTyped } from '../util/arrays.js';
import { Breather } from '../util/yield.js';
import { tf } from '../engine/engine.js';
import { mulberry32, permutation, randomInt, type Rng } from '../data/prng.js';
import { chooseExecutor, OnnxForward, type ExecutorName } from '../models/executor.js';
import type { Batch, HookName, Model } from '../models/model.js';

export interface ActivationSource {
  readonly dIn: number;
  /** Starts pass `epoch` (0, 1, ...): a fresh shuffle of the data. */
  restart(epoch: number): void;
  /** The next chunk `[n, dIn]` of this pass, or undefined when the pass is over. */
  nextChunk(): Promise<Float32Array | undefined>;
  /** How far into the current pass the source is (items consumed: documents or rows), for checkpoints. */
  position(): number;
  /** Continues pass `epoch` from `position` (a value `position()` returned), without reading what comes before. */
  seek(epoch: number, position: number): void;
  /** Frees what the source holds (an ONNX Runtime session); it may still be used afterwards. */
  dispose?(): Promise<void>;
}

/** A seeded generator that counts its draws, so that its state is (seed, draws) and can be restored. */
export class CountingRng {
  private readonly base: Rng;
  /** Draws taken so far. */
  draws = 0;
  /** The generator as an `Rng`. */
  readonly next: Rng = () => {
    this.draws++;
    return this.base();
  };

  /**
   * @param seed the generator's seed (mulberry32)
   * @param skip draws to take first, restoring a generator that had taken this many
   */
  constructor(seed: number, skip = 0) {
    if (!Number.isSafeInteger(skip) || skip < 0) throw new Error(`CountingRng: cannot skip ${skip} draws`);
    this.base = mulberry32(seed);
    for (let i = 0; i < skip; i++) this.base();
    this.draws = skip;
  }
}

/** Checks a saved source position against the number of items in a pass. */
function checkSeek(what: string, epoch: number, position: number, items: number): void {
  if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(position) || position < 0 || position > items) {
    throw new Error(`${what}: cannot continue pass ${epoch} at item ${position} of ${items} (the data differ from the checkpoint's)`);
  }
}

/**
 * One pass over `items` items in a seeded shuffled order (seed `seed + epoch` for pass `epoch`),
 * and how far into it a source is: the position state every source shares.
 */
class ShuffledPass {
  order: Int32Array;
  /** Items consumed in this pass. */
  pos = 0;

  constructor(
    readonly items: number,
    private readonly seed: number,
    /** Names the source in errors. */
    private readonly what: string,
  ) {
    this.order = permutation(items, seed);
  }

  restart(epoch: number): void {
    this.order = permutation(this.items, this.seed + epoch);
    this.pos = 0;
  }

  seek(epoch: number, position: number): void {
    checkSeek(this.what, epoch, position, this.items);
    this.order = permutation(this.items, this.seed + epoch);
    this.pos = position;
  }

  /** The source methods over this pass. */
  methods(): Pick<ActivationSource, 'restart' | 'position' | 'seek'> {
    return { restart: (epoch) => this.restart(epoch), position: () => this.pos, seek: (epoch, position) => this.seek(epoch, position) };
  }
}

export interface ModelSourceOptions {
  model: Model;
  /** Right-padded batch of texts (for example `OpenedModel.tokenize`). */
  tokenize: (texts: string[]) => Batch;
  texts: readonly string[];
  hook: HookName;
  /** Documents per forward pass (default 16). */
  docsPerBatch?: number;
  /** Seed of the document order (pass `epoch` shuffles with `seed + epoch`; default 42). */
  seed?: number;
  /** The executor of the forward passes (default: `chooseExecutor`'s choice, src/models/executor.ts). */
  executor?: ExecutorName;
}

/**
 * Activations at several hooks, all from one forward pass per chunk of documents: the chunks of
 * every hook hold the same tokens in the same order. Position, seek and restart are the
 * `ActivationSource`'s (documents consumed).
 */
export interface HookActivationSource extends Omit<ActivationSource, 'nextChunk'> {
  /** The hooks captured, in the model's forward order. */
  readonly hooks: readonly HookName[];
  /** The next chunk at every hook (`[n, dIn]` each, the same `n`), or undefined when the pass is over. */
  nextChunks(): Promise<Readonly<Record<HookName, Float32Array>> | undefined>;
}

/**
 * Activations at `hooks` over `texts` (each forward pass captures all of them), documents shuffled
 * per epoch with seed `seed + epoch`.
 */
export function modelHookSource(options: Omit<ModelSourceOptions, 'hook'> & { hooks: readonly HookName[] }): HookActivationSource {
  const { model, tokenize, texts } = options;
  for (const hook of options.hooks) if (!model.hookNames.includes(hook)) throw new Error(`unknown hook "${hook}" for this model`);
  const hooks = model.hookNames.filter((h) => options.hooks.includes(h));
  if (hooks.length === 0) throw new Error('modelHookSource: no hooks');
  if (texts.length === 0) throw new Error('modelActivationSource: no texts');
  const docsPerBatch = options.docsPerBatch ?? 16;
  const seed = options.seed ?? 42;
  const pass = new ShuffledPass(texts.length, seed, 'modelActivationSource');
  // A tfjs chunk is a synchronous forward pass: collecting many in a row must still let the event loop run.
  const breather = new Breather();
  const executor = chooseExecutor(model, options.executor);
  const d = model.config.dModel;
  let onnx: Promise<OnnxForward> | undefined;
  return {
    dIn: d,
    hooks,
    ...pass.methods(),
    async nextChunks() {
      await breather.maybe();
      if (pass.pos >= texts.length) return undefined;
      const docs = Array.from(pass.order.subarray(pass.pos, Math.min(pass.pos + docsPerBatch, texts.length)), (i) => texts[i]!);
      pass.pos += docs.length;
      const batch = tokenize(docs);
      try {
        const values: Record<HookName, Float32Array> = {};
        if (executor === 'onnx') {
          onnx ??= OnnxForward.create(
            model,
            hooks,
            (g, at) => hooks.forEach((h, i) => g.output(`acts_${i}`, at[h]!, 'float32', ['batch', 'seq', d])),
            `activations at ${hooks.join(', ')}`,
          );
          const out = await (await onnx).run(batch);
          hooks.forEach((h, i) => (values[h] = out[`acts_${i}`]!.data as Float32Array));
        } else {
          const { captures } = model.run(batch, { capture: hooks, stopAfter: hooks.at(-1) });
          for (const h of hooks) values[h] = captures[h]!.dataSync() as Float32Array;
          tf.dispose(Object.values(captures));
        }
        const mask = batch.attentionMask.dataSync();
        return Object.fromEntries(hooks.map((h) => [h, realTokens(values[h]!, mask, d)]));
      } finally {
        tf.dispose([batch.inputIds, batch.attentionMask]);
      }
    },
    async dispose() {
      const session = onnx;
      onnx = undefined;
      if (session !== undefined) await (await session).dispose();
    },
  };
}

/** One hook of a multi-hook source, as an `ActivationSource` (it drives the whole source). */
function hookOf(source: HookActivationSource, hook: HookName): ActivationSource {
  return {
    dIn: source.dIn,
    restart: (epoch) => source.restart(epoch),
    position: () => source.position(),
    seek: (epoch, position) => source.seek(epoch, position),
    dispose: async () => await source.dispose?.(),
    nextChunk: async () => (await source.nextChunks())?.[hook],
  };
}

/** Activations of `hook` over `texts`, documents shuffled per epoch with seed `seed + epoch` (`modelHookSource` at one hook). */
export function modelActivationSource(options: ModelSourceOptions): ActivationSource {
  const { hook, ...rest } = options;
  return hookOf(modelHookSource({ ...rest, hooks: [hook] }), hook);
}

/** The rows of `values` `[positions, d]` whose mask entry is nonzero. */
function realTokens(values: Float32Array, mask: ArrayLike<number>, d: number): Float32Array {
  let real = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] !== 0) real++;
  const out = new Float32Array(real * d);
  let r = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i] !== 0) out.set(values.subarray(i * d, (i + 1) * d), r++ * d);
  return out;
}

/** A source over rows already in memory (tests, cached activations); shuffled per epoch. */
export function arrayActivationSource(rows: Float32Array, dIn: number, options: { chunkTokens?: number; seed?: number } = {}): ActivationSource {
  const n = rows.length / dIn;
  if (!Number.isInteger(n) || n === 0) throw new Error(`arrayActivationSource: ${rows.length} values do not make rows of width ${dIn}`);
  const chunk = options.chunkTokens ?? 256;
  const seed = options.seed ?? 42;
  const pass = new ShuffledPass(n, seed, 'arrayActivationSource');
  return {
    dIn,
    ...pass.methods(),
    nextChunk() {
      const { order, pos } = pass;
      if (pos >= n) return Promise.resolve(undefined);
      const m = Math.min(chunk, n - pos);
      const out = new Float32Array(m * dIn);
      for (let i = 0; i < m; i++) out.set(rows.subarray(order[pos + i]! * dIn, (order[pos + i]! + 1) * dIn), i * dIn);
      pass.pos += m;
      return Promise.resolve(out);
    },
  };
}

/** Reads up to `maxTokens` rows of one pass of `source` (e.g. a held-out set), then frees what the source holds. */
export async function collectActivations(source: ActivationSource, maxTokens: number): Promise<Float32Array> {
  const d = source.dIn;
  source.restart(0);
  const parts: Float32Array[] = [];
  let total = 0;
  try {
    while (total < maxTokens) {
      const c = await source.nextChunk();
      if (c === undefined) break;
      const take = Math.min(c.length / d, maxTokens - total);
      parts.push(take * d === c.length ? c : c.subarray(0, take * d));
      total += take;
    }
  } finally {
    await source.dispose?.();
  }
  return concatTyped(parts, Float32Array);
}

/** A source over chunks spilled to a file by `spillActivations`; `dispose()` deletes the file. */
export interface SpilledActivations extends ActivationSource {
  /** Rows in the file (tokens of one pass of the spilled source). */
  readonly tokens: number;
  dispose(): Promise<void>;
}

/** Where one hook's spill goes: a temporary subfolder of `dir`; its chunks are read back in an order shuffled with `seed + epoch`. */
export interface SpillPlace {
  dir: string;
  /** Default 42. */
  seed?: number;
}

/**
 * Writes one pass of `source` to one temporary file per hook of `places` (raw float32 rows, chunk by
 * chunk, each in a new subfolder of its place's `dir`) and returns, per hook, a source that reads its
 * file back, chunks shuffled per epoch with its place's seed: the pass is computed once (one forward
 * pass over the texts for every hook), and memory stays bounded by a chunk however many tokens and
 * hooks there are (the `ActivationBuffer` then mixes rows of many chunks). Every hook's file holds
 * the same tokens in the same chunks. With `maxTokens`, the pass stops after that many tokens. Each
 * file is deleted by its source's `dispose()`; the source is disposed once the pass is read.
 */
export async function spillHookActivations(
  source: HookActivationSource,
  places: Readonly<Record<HookName, SpillPlace>>,
  options: { maxTokens?: number } = {},
): Promise<Record<HookName, SpilledActivations>> {
  const d = source.dIn;
  const hooks = Object.keys(places);
  for (const hook of hooks) if (!source.hooks.includes(hook)) throw new Error(`spillActivations: the source does not capture hook "${hook}"`);
  if (hooks.length === 0) throw new Error('spillActivations: no hooks to spill');
  const maxTokens = options.maxTokens ?? Infinity;
  // A file's entry is made before it is opened, so that its folder is removed if opening fails.
  const files = new Map<HookName, { path: string; fd?: number }>();
  const closeAll = (): void => {
    for (const { fd } of files.values()) if (fd !== undefined) closeSync(fd);
  };
  const removeAll = (): void => {
    for (const { path } of files.values()) rmSync(dirname(path), { recursive: true, force: true });
  };
  const starts: number[] = [0];
  try {
    for (const hook of hooks) {
      const file: { path: string; fd?: number } = { path: join(mkdtempSync(join(places[hook]!.dir, 'sae-activations-')), 'rows.f32') };
      files.set(hook, file);
      file.fd = openSync(file.path, 'w');
    }
    source.restart(0);
    while (starts.at(-1)! < maxTokens) {
      const chunks = await source.nextChunks();
      if (chunks === undefined) break;
      const rows = Math.min(chunks[hooks[0]!]!.length / d, maxTokens - starts.at(-1)!);
      if (rows === 0) continue;
      for (const hook of hooks) {
        const chunk = chunks[hook]!;
        if (chunk.length !== chunks[hooks[0]!]!.length)
          throw new Error(`spillActivations: hook "${hook}" gave ${chunk.length / d} rows where "${hooks[0]}" gave ${chunks[hooks[0]!]!.length / d}`);
        writeSync(files.get(hook)!.fd!, new Uint8Array(chunk.buffer, chunk.byteOffset, rows * d * 4));
      }
      starts.push(starts.at(-1)! + rows);
    }
  } catch (err) {
    closeAll();
    removeAll();
    throw err;
  } finally {
    await source.dispose?.();
  }
  closeAll();
  if (starts.length === 1) {
    removeAll();
    throw new Error('spillActivations: the source yielded no rows');
  }
  return Object.fromEntries(hooks.map((hook) => [hook, spilledSource(files.get(hook)!.path, starts, d, places[hook]!.seed ?? 42)]));
}

/** `spillHookActivations` for a source of one stream of rows: one file in `dir`, read back in chunk orders shuffled with `seed + epoch`. */
export async function spillActivations(source: ActivationSource, dir: string, seed = 42): Promise<SpilledActivations> {
  const rows: HookActivationSource = {
    dIn: source.dIn,
    hooks: ['rows'],
    restart: (epoch) => source.restart(epoch),
    position: () => source.position(),
    seek: (epoch, position) => source.seek(epoch, position),
    dispose: async () => await source.dispose?.(),
    nextChunks: async () => {
      const chunk = await source.nextChunk();
      return chunk === undefined ? undefined : { rows: chunk };
    },
  };
  return (await spillHookActivations(rows, { rows: { dir, seed } })).rows!;
}

/** Reads back the chunks (row offsets `starts`) of the file at `path`; `dispose()` deletes its folder. */
function spilledSource(path: string, starts: readonly number[], d: number, seed: number): SpilledActivations {
  const chunks = starts.length - 1;
  const pass = new ShuffledPass(chunks, seed, 'spillActivations');
  let reader: number | undefined;
  return {
    dIn: d,
    tokens: starts.at(-1)!,
    ...pass.methods(),
    nextChunk() {
      if (pass.pos >= chunks) return Promise.resolve(undefined);
      const c = pass.order[pass.pos++]!;
      const rows = starts[c + 1]! - starts[c]!;
      const out = new Float32Array(rows * d);
      reader ??= openSync(path, 'r');
      const bytes = new Uint8Array(out.buffer);
      let read = 0;
      while (read < bytes.length) {
        const n = readSync(reader, bytes, read, bytes.length - read, starts[c]! * d * 4 + read);
        if (n === 0) throw new Error(`${path}: ended before chunk ${c} (the spilled activations were changed from outside)`);
        read += n;
      }
      return Promise.resolve(out);
    },
    dispose() {
      if (reader !== undefined) closeSync(reader);
      reader = undefined;
      rmSync(dirname(path), { recursive: true, force: true });
      return Promise.resolve();
    },
  };
}

export interface BufferOptions {
  /** Rows held at most (default 32768). */
  capacityTokens?: number;
  seed?: number;
}

/** Everything an `ActivationBuffer` needs to continue exactly where it was (see `state()`). */
export interface BufferState {
  /** The rows held, `[count, dIn]`, in buffer order. */
  rows: Float32Array;
  /** The unread rest of the last chunk, `[m, dIn]` (empty when none). */
  pending: Float32Array;
  /** Draws taken from the buffer's generator. */
  draws: number;
  epoch: number;
  tokensRead: number;
  /** The source's `position()` in pass `epoch`. */
  sourcePosition: number;
}

export class ActivationBuffer {
  readonly dIn: number;
  readonly capacity: number;
  private readonly rows: Float32Array;
  private count = 0;
  private pending: Float32Array | undefined;
  private readonly seed: number;
  private rng: CountingRng;
  /** Passes over the source started so far. */
  epoch = 0;
  /** Rows read from the source so far. */
  tokensRead = 0;

  constructor(
    private readonly source: ActivationSource,
    options: BufferOptions = {},
  ) {
    this.dIn = source.dIn;
    this.capacity = options.capacityTokens ?? 32768;
    if (this.capacity < 1) throw new Error('ActivationBuffer: capacityTokens must be >= 1');
    this.rows = new Float32Array(this.capacity * this.dIn);
    this.seed = options.seed ?? 42;
    this.rng = new CountingRng(this.seed);
    source.restart(0);
  }

  /** A copy of the buffer's state, to save in a checkpoint. */
  state(): BufferState {
    return {
      rows: this.rows.slice(0, this.count * this.dIn),
      pending: this.pending !== undefined ? this.pending.slice() : new Float32Array(0),
      draws: this.rng.draws,
      epoch: this.epoch,
      tokensRead: this.tokensRead,
      sourcePosition: this.source.position(),
    };
  }

  /** Continues from a saved state of a buffer with the same seed, capacity and source. */
  restore(state: BufferState): void {
    const d = this.dIn;
    if (state.rows.length % d !== 0 || state.pending.length % d !== 0) {
      throw new Error(`ActivationBuffer.restore: the saved rows are not rows of width ${d}`);
    }
    if (state.rows.length / d > this.capacity) {
      throw new Error(`ActivationBuffer.restore: the saved state holds ${state.rows.length / d} rows, more than the capacity ${this.capacity}`);
    }
    this.source.seek(state.epoch, state.sourcePosition);
    this.rows.set(state.rows);
    this.count = state.rows.length / d;
    this.pending = state.pending.length > 0 ? state.pending.slice() : undefined;
    this.rng = new CountingRng(this.seed, state.draws);
    this.epoch = state.epoch;
    this.tokensRead = state.tokensRead;
  }

  /** Rows currently held. */
  get size(): number {
    return this.count;
  }

  /** Reads until full; a pass that ends with at least `need` rows held also ends the refill (small data sets). */
  private async refill(need: number): Promise<void> {
    const d = this.dIn;
    let emptyPasses = 0;
    while (this.count < this.capacity) {
      let chunk = this.pending;
      this.pending = undefined;
      if (chunk === undefined) chunk = await this.source.nextChunk();
      if (chunk === undefined) {
        // End of a pass: start the next one; two passes in a row without a token is an error.
        if (++emptyPasses > 1 && this.count === 0) throw new Error('ActivationBuffer: the activation source yields no tokens');
        this.epoch++;
        this.source.restart(this.epoch);
        if (emptyPasses > 1 || this.count >= need) return;
        continue;
      }
      if (chunk.length % d !== 0) throw new Error(`ActivationBuffer: a chunk of ${chunk.length} values is not a whole number of rows of width ${d}`);
      emptyPasses = 0;
      const n = chunk.length / d;
      const take = Math.min(n, this.capacity - this.count);
      this.rows.set(chunk.subarray(0, take * d), this.count * d);
      this.count += take;
      this.tokensRead += take;
      if (take < n) this.pending = chunk.subarray(take * d);
    }
  }

  /** `batchSize` rows `[batchSize, dIn]`, uniformly drawn without replacement from the buffer. */
  async next(batchSize: number): Promise<Float32Array> {
    if (batchSize > this.capacity / 2) throw new Error(`ActivationBuffer: batch size ${batchSize} exceeds half the capacity (${this.capacity})`);
    if (this.count < Math.max(batchSize, this.capacity / 2)) await this.refill(batchSize);
    const d = this.dIn;
    const out = new Float32Array(batchSize * d);
    for (let b = 0; b < batchSize; b++) {
      const j = randomInt(this.rng.next, this.count);
      out.set(this.rows.subarray(j * d, (j + 1) * d), b * d);
      this.count--;
      if (j !== this.count) this.rows.copyWithin(j * d, this.count * d, (this.count + 1) * d);
    }
    return out;
  }
}
