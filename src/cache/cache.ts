/**
 * The activation cache: run the frozen model once over a dataset and keep what later steps need.
 *
 * Per example and per cached hook it stores the mean-pooled activation (mean over non-pad tokens)
 * and, for hooks with an SAE, the mean-pooled SAE features (sparse, CSR) and the mean-pooled SAE
 * error. Because the SAE decoder is affine, mean pooling commutes with decoding:
 *   mean_t(W_dec (s * f_t) + b) = W_dec (s * mean_t f_t) + b,
 * so every intervention at the probe's own hook can be trained and evaluated on pooled values.
 * With `perToken`, the per-token SAE features (CSR) and per-token SAE errors are stored too, for
 * interventions that have transformer layers between them and the probe.
 *
 * On disk: `<root>/<key>/index.json` plus `shard-NNNNN.safetensors` files, each holding a run of
 * consecutive examples. The key hashes the model, hooks, SAEs, tokenisation and the texts, so a
 * changed input never reuses stale activations; models and SAEs on disk are named by `weightsId`,
 * which changes when any of their weight or config files is overwritten. Shards and the index are
 * written atomically, and the index lists only finished shards, each with its row range and the
 * sha256 of its file. Every shard is checked against them whenever the cache is read or resumed:
 * building stops trusting the cache at the first missing or damaged shard and recomputes from
 * there on, and reading a damaged cache fails with an error that names the folder. Memory is
 * bounded by one shard of examples.
 */
import { Breather } from '../util/yield.js';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { tf } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type RawTensor } from '../io/safetensors.js';
import type { ExecutorName } from '../models/executor.js';
import type { Batch, HookName, Model } from '../models/model.js';
import { lengthOrder, scatterRows } from '../models/pool.js';
import { concatTyped } from '../util/arrays.js';
import { isQuiet, progress } from '../util/progress.js';
import { createCollector, type BatchValues, type CacheSae, type Collector } from './collect.js';
import { fileSha256 } from './identity.js';

export { weightsId } from './identity.js';
export type { CacheSae } from './collect.js';

export interface CacheSpec {
  /**
   * Identifies the model, hashed with its config: `weightsId(folder)` for a local folder, so the
   * key changes when a weight, config or tokenizer file there is overwritten.
   */
  modelId: string;
  /** Hooks whose pooled activations are cached. */
  hooks: readonly HookName[];
  /** SAEs by hook, each with an id that changes when the SAE does (`weightsId(path)` for one on disk). */
  saes?: Readonly<Record<HookName, { sae: CacheSae; id: string }>>;
  /** Also store per-token sparse SAE features and SAE errors. */
  perToken?: boolean;
  /** Identifies the tokenisation (tokenizer file and max length). */
  tokenizerId: string;
  texts: readonly string[];
}

export interface BuildOptions {
  model: Model;
  /** Tokenises a list of texts into a right-padded batch. */
  tokenize: (texts: string[]) => Batch;
  /** Folder that holds caches (one sub-folder per key). */
  root: string;
  batchSize?: number;
  /** Examples per shard file (also the memory bound). */
  shardSize?: number;
  /** Progress label. */
  label?: string;
  /**
   * The executor of the forward passes (src/models/executor.ts); by default ONNX Runtime where the
   * model and SAEs have an ONNX form. Not part of the key: both compute the same values (to float
   * rounding, held to 1e-4 by the parity tests).
   */
  executor?: ExecutorName;
}

const INDEX_VERSION = 2;

/** `index.json`: what the cache holds, and its finished shards in row order. */
const cacheIndexSchema = z.strictObject({
  version: z.literal(INDEX_VERSION),
  key: z.string(),
  /** The spec's model id (a `weightsId` for a local model). */
  modelId: z.string(),
  tokenizerId: z.string(),
  hooks: z.array(z.string()),
  /** Per hook with an SAE: its id (a `weightsId` for one on disk) and widths. */
  saes: z.record(z.string(), z.strictObject({ id: z.string(), dSae: z.number().int().positive(), dIn: z.number().int().positive() })),
  perToken: z.boolean(),
  n: z.number().int().positive(),
  dims: z.record(z.string(), z.number().int().positive()),
  /** Finished shards: rows `[start, start + count)` of the texts, and the sha256 of the shard file. */
  shards: z.array(z.strictObject({ file: z.string(), start: z.number().int().nonnegative(), count: z.number().int().positive(), sha256: z.string() })),
  complete: z.boolean(),
});

type CacheIndex = z.infer<typeof cacheIndexSchema>;

const DELETE_TO_REBUILD = 'delete the folder to rebuild the cache (or build it again, which recomputes what is damaged)';

/** A cache folder's `index.json` that is missing, unreadable or not an index of this version; `reason` names the file. */
class CacheIndexError extends Error {
  constructor(readonly reason: string) {
    super(`${reason}; ${DELETE_TO_REBUILD}`);
  }
}

/** A shard that is missing or does not match the index: `reason` names it, `shard` is its position. */
class CacheShardError extends Error {
  constructor(
    readonly reason: string,
    readonly shard: number,
  ) {
    super(`${reason}; ${DELETE_TO_REBUILD}`);
  }
}

/** Reads and validates `<dir>/index.json`; throws a `CacheIndexError` naming the file and the fix. */
function readIndex(dir: string): CacheIndex {
  const path = join(dir, 'index.json');
  if (!existsSync(path)) throw new Error(`${dir}: not an activation cache (no index.json)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new CacheIndexError(`${path}: activation cache index is not valid JSON (${(err as Error).message})`);
  }
  const parsed = cacheIndexSchema.safeParse(raw);
  if (!parsed.success) {
    const version = typeof raw === 'object' && raw !== null && 'version' in raw ? (raw as { version: unknown }).version : undefined;
    const why =
      version !== INDEX_VERSION
        ? `was written by another version of sae-eraser (index version ${JSON.stringify(version)}, expected ${INDEX_VERSION})`
        : `is not a valid activation cache index (${parsed.error.issues.map((i) => `${i.path.join('.') || 'index'}: ${i.message}`).join('; ')})`;
    throw new CacheIndexError(`${path}: ${why}`);
  }
  return parsed.data;
}

/**
 * Checks shard `i` of the index against its file and its place: the file exists, its rows follow
 * the previous shard's (`start`), stay within the cache, and its sha256 is the recorded one.
 * Returns what is wrong, or undefined.
 */
function shardProblem(dir: string, index: CacheIndex, i: number, start: number): string | undefined {
  const shard = index.shards[i]!;
  if (basename(shard.file) !== shard.file) return `has a bad file name "${shard.file}" in the index`;
  if (shard.start !== start) return `starts at row ${shard.start} in the index, but the shards before it end at row ${start}`;
  if (shard.start + shard.count > index.n) return `ends at row ${shard.start + shard.count}, past the cache's ${index.n} rows`;
  const path = join(dir, shard.file);
  if (!existsSync(path)) return 'is missing';
  if (fileSha256(path) !== shard.sha256) return 'does not match its checksum (damaged or overwritten)';
  return undefined;
}

/** The number of leading shards of the index that are intact (see `shardProblem`), with what is wrong with the next one. */
function intactShards(dir: string, index: CacheIndex): { count: number; problem?: string } {
  let start = 0;
  for (let i = 0; i < index.shards.length; i++) {
    const problem = shardProblem(dir, index, i, start);
    if (problem !== undefined) return { count: i, problem: `shard ${index.shards[i]!.file} ${problem}` };
    start += index.shards[i]!.count;
  }
  return { count: index.shards.length };
}

function note(message: string): void {
  if (!isQuiet()) process.stderr.write(`${message}\n`);
}

/** Sparse rows: row r's nonzeros are indices/values[offsets[r] .. offsets[r+1]). */
export interface CsrRows {
  offsets: Int32Array;
  indices: Int32Array;
  values: Float32Array;
  nCols: number;
}

function sha256(...parts: (string | Uint8Array)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** The cache key: changes whenever anything that determines the cached values changes. */
export function cacheKey(spec: CacheSpec, modelConfig: unknown): string {
  const textsHash = sha256(...spec.texts.map((t) => `${t.length}:${t}`));
  const saes = Object.entries(spec.saes ?? {})
    .map(([hook, s]) => [hook, s.id, s.sae.dIn, s.sae.dSae])
    .sort();
  return sha256(
    JSON.stringify({
      v: 2,
      model: spec.modelId,
      config: modelConfig,
      hooks: [...spec.hooks].sort(),
      saes,
      perToken: spec.perToken === true,
      tokenizer: spec.tokenizerId,
      texts: textsHash,
      n: spec.texts.length,
    }),
  ).slice(0, 24);
}

/** Converts a dense `[rows, cols]` array to CSR, keeping entries with |v| > 0. */
export function denseToCsr(dense: Float32Array, rows: number, cols: number): CsrRows {
  const offsets = new Int32Array(rows + 1);
  let nnz = 0;
  for (let i = 0; i < dense.length; i++) if (dense[i] !== 0) nnz++;
  const indices = new Int32Array(nnz);
  const values = new Float32Array(nnz);
  let k = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const v = dense[base + c]!;
      if (v !== 0) {
        indices[k] = c;
        values[k] = v;
        k++;
      }
    }
    offsets[r + 1] = k;
  }
  return { offsets, indices, values, nCols: cols };
}

/** Expands the given CSR rows into a dense `[rows.length, nCols]` Float32Array. */
export function csrToDense(csr: CsrRows, rows?: ArrayLike<number>): Float32Array {
  const n = rows === undefined ? csr.offsets.length - 1 : rows.length;
  const out = new Float32Array(n * csr.nCols);
  for (let i = 0; i < n; i++) {
    const r = rows === undefined ? i : rows[i]!;
    for (let k = csr.offsets[r]!; k < csr.offsets[r + 1]!; k++) out[i * csr.nCols + csr.indices[k]!] = csr.values[k]!;
  }
  return out;
}

function concatCsr(parts: CsrRows[], nCols: number): CsrRows {
  const rows = parts.reduce((a, p) => a + p.offsets.length - 1, 0);
  const nnz = parts.reduce((a, p) => a + p.indices.length, 0);
  const offsets = new Int32Array(rows + 1);
  const indices = new Int32Array(nnz);
  const values = new Float32Array(nnz);
  let r = 0;
  let k = 0;
  for (const p of parts) {
    indices.set(p.indices, k);
    values.set(p.values, k);
    for (let i = 1; i < p.offsets.length; i++) offsets[r + i] = k + p.offsets[i]!;
    r += p.offsets.length - 1;
    k += p.indices.length;
  }
  return { offsets, indices, values, nCols };
}

/** The arrays of a cache: per-hook pooled activations `[n * d]`, and pooled SAE codes and errors. */
export interface CacheArrays {
  tokenCounts: Int32Array;
  pooled: Map<HookName, Float32Array>;
  saeErrorPooled: Map<HookName, Float32Array>;
  saePooled: Map<HookName, CsrRows>;
}

/** A finished cache, read back from disk. Pooled arrays are small ([n, d]) and held in memory. */
export class ActivationCache {
  private readonly pooledByHook: Map<HookName, Float32Array>;
  private readonly errorByHook: Map<HookName, Float32Array>;
  private readonly codesByHook: Map<HookName, CsrRows>;
  readonly tokenCounts: Int32Array;

  private constructor(
    readonly dir: string,
    private readonly index: CacheIndex,
    arrays: CacheArrays,
  ) {
    this.tokenCounts = arrays.tokenCounts;
    this.pooledByHook = arrays.pooled;
    this.errorByHook = arrays.saeErrorPooled;
    this.codesByHook = arrays.saePooled;
  }

  /**
   * An in-memory cache over given arrays (for activations computed elsewhere, and for tests).
   * `pooled[hook]` is `[n, d]` row-major; SAE codes and errors are optional per hook.
   */
  static fromArrays(n: number, pooled: Record<HookName, Float32Array>, sae: Record<HookName, { codes: CsrRows; errors: Float32Array }> = {}): ActivationCache {
    const dims: Record<HookName, number> = {};
    for (const [hook, data] of Object.entries(pooled)) {
      if (data.length % n !== 0) throw new Error(`activation cache: pooled "${hook}" has ${data.length} values, not a multiple of ${n} rows`);
      dims[hook] = data.length / n;
    }
    for (const [hook, s] of Object.entries(sae)) {
      if (dims[hook] === undefined) throw new Error(`activation cache: SAE codes at "${hook}" need pooled activations there too`);
      if (s.codes.offsets.length !== n + 1 || s.errors.length !== n * dims[hook]!)
        throw new Error(`activation cache: SAE arrays at "${hook}" do not have ${n} rows`);
    }
    const index: CacheIndex = {
      version: INDEX_VERSION,
      key: 'memory',
      modelId: 'memory',
      tokenizerId: 'memory',
      hooks: Object.keys(pooled),
      perToken: false,
      n,
      dims,
      shards: [],
      complete: true,
      saes: Object.fromEntries(Object.entries(sae).map(([h, s]) => [h, { id: 'memory', dSae: s.codes.nCols, dIn: dims[h]! }])),
    };
    return new ActivationCache('<memory>', index, {
      tokenCounts: new Int32Array(n),
      pooled: new Map(Object.entries(pooled)),
      saeErrorPooled: new Map(Object.entries(sae).map(([h, s]) => [h, s.errors])),
      saePooled: new Map(Object.entries(sae).map(([h, s]) => [h, s.codes])),
    });
  }

  /** Reads every shard, checking each against the index first; throws a `CacheShardError` at the first bad one. */
  private static readShards(dir: string, index: CacheIndex): CacheArrays {
    const counts: Int32Array[] = [];
    const pooled = new Map<HookName, Float32Array[]>();
    const errors = new Map<HookName, Float32Array[]>();
    const codes = new Map<HookName, CsrRows[]>();
    let start = 0;
    for (const [i, shard] of index.shards.entries()) {
      const bad = (problem: string): CacheShardError => new CacheShardError(`${dir}: activation cache shard ${shard.file} ${problem}`, i);
      const problem = shardProblem(dir, index, i, start);
      if (problem !== undefined) throw bad(problem);
      const f = readSafetensors(join(dir, shard.file));
      const nTokens = f.int32('n_tokens');
      if (nTokens.length !== shard.count) throw bad(`holds ${nTokens.length} rows, but the index says ${shard.count}`);
      counts.push(nTokens);
      start += shard.count;
      for (const hook of index.hooks) push(pooled, hook, f.float32(`${hook}.pooled`));
      for (const [hook, s] of Object.entries(index.saes)) {
        push(errors, hook, f.float32(`${hook}.sae_error_pooled`));
        push(codes, hook, {
          offsets: f.int32(`${hook}.sae_pooled.offsets`),
          indices: f.int32(`${hook}.sae_pooled.indices`),
          values: f.float32(`${hook}.sae_pooled.values`),
          nCols: s.dSae,
        });
      }
    }
    if (start !== index.n) {
      throw new CacheShardError(`${dir}: the activation cache's shards hold ${start} rows, but it has ${index.n}`, index.shards.length);
    }
    return {
      tokenCounts: concatTyped(counts, Int32Array),
      pooled: new Map([...pooled].map(([h, parts]) => [h, concatTyped(parts, Float32Array)])),
      saeErrorPooled: new Map([...errors].map(([h, parts]) => [h, concatTyped(parts, Float32Array)])),
      saePooled: new Map([...codes].map(([h, parts]) => [h, concatCsr(parts, index.saes[h]!.dSae)])),
    };
  }

  /**
   * Opens a complete cache folder, checking every shard against the index (row ranges and
   * checksums). Throws, naming the folder or file, if it is missing, unfinished or damaged.
   */
  static open(dir: string): ActivationCache {
    const index = readIndex(dir);
    if (!index.complete) throw new Error(`${dir}: activation cache is unfinished; rebuild it to resume`);
    return new ActivationCache(dir, index, ActivationCache.readShards(dir, index));
  }

  get n(): number {
    return this.index.n;
  }

  get hooks(): readonly HookName[] {
    return this.index.hooks;
  }

  get key(): string {
    return this.index.key;
  }

  dim(hook: HookName): number {
    const d = this.index.dims[hook];
    if (d === undefined) throw new Error(`${this.dir}: hook "${hook}" is not cached (cached: ${this.index.hooks.join(', ')})`);
    return d;
  }

  /** Whether pooled SAE codes are cached at `hook`. */
  hasSae(hook: HookName): boolean {
    return this.index.saes[hook] !== undefined;
  }

  dSae(hook: HookName): number {
    const s = this.index.saes[hook];
    if (s === undefined) throw new Error(`${this.dir}: no SAE features cached at "${hook}"`);
    return s.dSae;
  }

  /** Mean-pooled activations `[rows, d]` (all rows when `rows` is omitted). */
  pooled(hook: HookName, rows?: ArrayLike<number>): tf.Tensor2D {
    const d = this.dim(hook);
    return tf.tensor2d(gatherRows(this.pooledByHook.get(hook)!, d, rows), [rows?.length ?? this.n, d]);
  }

  /** Mean-pooled SAE errors `[rows, d]`. */
  saeErrorPooled(hook: HookName, rows?: ArrayLike<number>): tf.Tensor2D {
    const d = this.dim(hook);
    this.dSae(hook);
    return tf.tensor2d(gatherRows(this.errorByHook.get(hook)!, d, rows), [rows?.length ?? this.n, d]);
  }

  /** Mean-pooled SAE features as CSR rows over all examples. */
  saePooledCsr(hook: HookName): CsrRows {
    this.dSae(hook);
    return this.codesByHook.get(hook)!;
  }

  /** Mean-pooled SAE features, dense `[rows, dSae]`. Mind the size for wide SAEs. */
  saePooledDense(hook: HookName, rows?: ArrayLike<number>): tf.Tensor2D {
    const csr = this.saePooledCsr(hook);
    return tf.tensor2d(csrToDense(csr, rows), [rows?.length ?? this.n, csr.nCols]);
  }
}

function push<T>(m: Map<HookName, T[]>, k: HookName, v: T): void {
  const list = m.get(k);
  if (list === undefined) m.set(k, [v]);
  else list.push(v);
}

function gatherRows(data: Float32Array, d: number, rows?: ArrayLike<number>): Float32Array {
  if (rows === undefined) return data;
  const out = new Float32Array(rows.length * d);
  for (let i = 0; i < rows.length; i++) out.set(data.subarray(rows[i]! * d, rows[i]! * d + d), i * d);
  return out;
}

/** Per-shard accumulators, filled batch by batch. */
interface ShardBuffers {
  nTokens: Int32Array;
  pooled: Map<HookName, Float32Array>;
  saeError: Map<HookName, Float32Array>;
  saeCodes: Map<HookName, Float32Array[]>;
  tokenCodes: Map<HookName, CsrRows[]>;
  tokenErrors: Map<HookName, Float32Array[]>;
}

/**
 * Returns the cache for `spec`, building (or resuming) it when needed. Examples are processed in
 * shards; inside a shard they are batched by length to waste little work on padding.
 */
export async function buildActivationCache(spec: CacheSpec, opts: BuildOptions): Promise<ActivationCache> {
  const { model } = opts;
  const batchSize = opts.batchSize ?? 32;
  const shardSize = opts.shardSize ?? 512;
  const saes = spec.saes ?? {};
  for (const hook of [...spec.hooks, ...Object.keys(saes)]) {
    if (!model.hookNames.includes(hook)) throw new Error(`activation cache: hook "${hook}" does not exist in model ${spec.modelId}`);
  }
  for (const [hook, { sae, id }] of Object.entries(saes)) {
    if (!spec.hooks.includes(hook)) throw new Error(`activation cache: SAE ${id} is at hook "${hook}", which is not among the cached hooks`);
    if (sae.dIn !== model.config.dModel)
      throw new Error(`activation cache: SAE ${id} has dIn ${sae.dIn} but hook "${hook}" of ${spec.modelId} has width ${model.config.dModel}`);
  }
  if (spec.texts.length === 0) throw new Error('activation cache: no texts to cache');
  const key = cacheKey(spec, model.config);
  const dir = join(opts.root, key);
  const indexPath = join(dir, 'index.json');
  const fresh: CacheIndex = {
    version: INDEX_VERSION,
    key,
    modelId: spec.modelId,
    tokenizerId: spec.tokenizerId,
    hooks: [...spec.hooks],
    saes: Object.fromEntries(Object.entries(saes).map(([h, s]) => [h, { id: s.id, dSae: s.sae.dSae, dIn: s.sae.dIn }])),
    perToken: spec.perToken === true,
    n: spec.texts.length,
    dims: Object.fromEntries(spec.hooks.map((h) => [h, model.config.dModel])),
    shards: [],
    complete: false,
  };
  const index = existsSync(indexPath) ? resumableIndex(dir, fresh) : fresh;
  if (index.complete) {
    try {
      return ActivationCache.open(dir);
    } catch (err) {
      if (!(err instanceof CacheShardError)) throw err;
      note(`${err.reason}: recomputing from there`);
      index.shards = index.shards.slice(0, err.shard);
      index.complete = false;
    }
  }
  const done = index.shards.reduce((a, s) => a + s.count, 0);
  const bar = progress(opts.label ?? 'caching activations', spec.texts.length, 'ex');
  bar.tick(done);
  const collector = await createCollector(
    model,
    { hooks: spec.hooks, saes: Object.fromEntries(Object.entries(saes).map(([h, s]) => [h, s.sae])), perToken: spec.perToken === true },
    opts.executor,
  );
  try {
    for (let start = done; start < spec.texts.length; start += shardSize) {
      const count = Math.min(shardSize, spec.texts.length - start);
      const buffers = await computeShard(spec, opts, collector, start, count, batchSize, (n) => bar.tick(n));
      const file = `shard-${String(index.shards.length).padStart(5, '0')}.safetensors`;
      writeSafetensors(join(dir, file), shardTensors(spec, buffers, count));
      index.shards.push({ file, start, count, sha256: fileSha256(join(dir, file)) });
      writeJsonAtomic(indexPath, index);
    }
  } finally {
    await collector.dispose();
  }
  index.complete = true;
  writeJsonAtomic(indexPath, index);
  bar.done();
  return ActivationCache.open(dir);
}

/**
 * The index to continue from for an existing cache folder: its own when it is readable and
 * describes this spec, cut at the first missing or damaged shard when unfinished (a complete one
 * is checked when opened); otherwise `fresh`, which rebuilds the cache from scratch.
 *
 * An unreadable index is rebuilt rather than reported: the index is written atomically, so an
 * unreadable one was damaged from outside; without it the shards cannot be trusted, and the key
 * already ties the folder to exactly this spec, so recomputing is always right and needs nobody to
 * delete anything. (`ActivationCache.open`, which has no spec to rebuild from, reports it instead.)
 */
function resumableIndex(dir: string, fresh: CacheIndex): CacheIndex {
  let index: CacheIndex;
  try {
    index = readIndex(dir);
  } catch (err) {
    if (!(err instanceof CacheIndexError)) throw err;
    note(`${err.reason}: rebuilding the cache`);
    return fresh;
  }
  // Everything but the shards, in a fixed order (the key sorts hooks and SAEs too).
  const sorted = (r: Record<string, unknown>): unknown[] => Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const describe = (i: CacheIndex): string =>
    JSON.stringify([i.key, i.modelId, i.tokenizerId, [...i.hooks].sort(), sorted(i.saes), i.perToken, i.n, sorted(i.dims)]);
  if (describe(index) !== describe(fresh)) {
    note(`${join(dir, 'index.json')}: describes another model, SAE or input than this cache's key: rebuilding the cache`);
    return fresh;
  }
  if (index.complete) return index;
  const intact = intactShards(dir, index);
  if (intact.problem !== undefined) {
    note(`${dir}: ${intact.problem}: recomputing from there`);
    index.shards = index.shards.slice(0, intact.count);
  }
  return index;
}

async function computeShard(
  spec: CacheSpec,
  opts: BuildOptions,
  collector: Collector,
  start: number,
  count: number,
  batchSize: number,
  onBatch: (n: number) => void,
): Promise<ShardBuffers> {
  const breather = new Breather();
  const d = opts.model.config.dModel;
  const saes = spec.saes ?? {};
  const buf: ShardBuffers = {
    nTokens: new Int32Array(count),
    pooled: new Map(spec.hooks.map((h) => [h, new Float32Array(count * d)])),
    saeError: new Map(Object.keys(saes).map((h) => [h, new Float32Array(count * d)])),
    saeCodes: new Map(Object.keys(saes).map((h) => [h, new Array<Float32Array>(count)])),
    tokenCodes: new Map(Object.keys(saes).map((h) => [h, new Array<CsrRows>(count)])),
    tokenErrors: new Map(Object.keys(saes).map((h) => [h, new Array<Float32Array>(count)])),
  };
  // Batch by text length (a cheap proxy for token count) so little work goes to padding.
  const order = lengthOrder(spec.texts.slice(start, start + count));
  for (let b = 0; b < order.length; b += batchSize) {
    const rows = order.slice(b, b + batchSize);
    const batch = opts.tokenize(rows.map((r) => spec.texts[start + r]!));
    try {
      storeBatch(spec, buf, rows, await collector.values(batch), d);
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    onBatch(rows.length);
    await breather.maybe();
  }
  return buf;
}

function storeBatch(spec: CacheSpec, buf: ShardBuffers, rows: number[], values: BatchValues, d: number): void {
  const { lengths, seq } = values;
  rows.forEach((r, i) => (buf.nTokens[r] = lengths[i]!));
  for (const hook of spec.hooks) {
    const pooled = values.pooled.get(hook)!;
    checkFinite(pooled, hook);
    const target = buf.pooled.get(hook)!;
    scatterRows(target, pooled, rows, d);
    const saeEntry = spec.saes?.[hook];
    if (saeEntry === undefined) continue;
    const { dSae } = saeEntry.sae;
    const fp = values.codesPooled.get(hook)!;
    const ep = values.errorPooled.get(hook)!;
    rows.forEach((r, i) => {
      buf.saeCodes.get(hook)![r] = fp.slice(i * dSae, (i + 1) * dSae);
      buf.saeError.get(hook)!.set(ep.subarray(i * d, (i + 1) * d), r * d);
    });
    if (spec.perToken === true) {
      const ft = values.tokenCodes.get(hook)!;
      const et = values.tokenErrors.get(hook)!;
      rows.forEach((r, i) => {
        const len = lengths[i]!;
        // Right padding: the first `len` positions are the real tokens.
        buf.tokenCodes.get(hook)![r] = denseToCsr(ft.subarray(i * seq * dSae, (i * seq + len) * dSae), len, dSae);
        buf.tokenErrors.get(hook)![r] = et.slice(i * seq * d, (i * seq + len) * d);
      });
    }
  }
}

function checkFinite(values: Float32Array, hook: HookName): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) throw new Error(`activation cache: non-finite activation at hook "${hook}" (NaN or Inf in the model's output)`);
  }
}

function shardTensors(spec: CacheSpec, buf: ShardBuffers, count: number): Record<string, RawTensor> {
  const out: Record<string, RawTensor> = { n_tokens: { dtype: 'I32', shape: [count], data: buf.nTokens } };
  for (const [hook, data] of buf.pooled) out[`${hook}.pooled`] = { dtype: 'F32', shape: [count, data.length / count], data };
  for (const [hook, data] of buf.saeError) out[`${hook}.sae_error_pooled`] = { dtype: 'F32', shape: [count, data.length / count], data };
  for (const [hook, rows] of buf.saeCodes) {
    const dSae = spec.saes![hook]!.sae.dSae;
    const csr = concatCsr(
      rows.map((r) => denseToCsr(r, 1, dSae)),
      dSae,
    );
    out[`${hook}.sae_pooled.offsets`] = { dtype: 'I32', shape: [csr.offsets.length], data: csr.offsets };
    out[`${hook}.sae_pooled.indices`] = { dtype: 'I32', shape: [csr.indices.length], data: csr.indices };
    out[`${hook}.sae_pooled.values`] = { dtype: 'F32', shape: [csr.values.length], data: csr.values };
  }
  if (spec.perToken === true) {
    for (const [hook, rows] of buf.tokenCodes) {
      const dSae = spec.saes![hook]!.sae.dSae;
      const csr = concatCsr(rows, dSae);
      out[`${hook}.sae_tokens.offsets`] = { dtype: 'I32', shape: [csr.offsets.length], data: csr.offsets };
      out[`${hook}.sae_tokens.indices`] = { dtype: 'I32', shape: [csr.indices.length], data: csr.indices };
      out[`${hook}.sae_tokens.values`] = { dtype: 'F32', shape: [csr.values.length], data: csr.values };
      const errs = concatTyped(buf.tokenErrors.get(hook)!, Float32Array);
      out[`${hook}.sae_error_tokens`] = { dtype: 'F32', shape: [errs.length / spec.saes![hook]!.sae.dIn, spec.saes![hook]!.sae.dIn], data: errs };
    }
  }
  return out;
}
