/**
 * sae-eraser's public API. Call `initEngine()` once before any tensor work.
 */
export { initEngine, matMulT, tf } from './engine/engine.js';
export type { Batch, Edit, GraphEdit, HookName, Model, ForwardOptions, ForwardResult } from './models/model.js';
export { parseHook, residOut, standardHookNames } from './models/model.js';
export { loadModel, loadModelConfig, SUPPORTED_MODEL_TYPES } from './models/load.js';
export { openModel, type OpenedModel } from './models/open.js';
export { meanPool, pooledWithEdits, pooledWithEditsOnExecutor } from './models/pool.js';
export { loadTokenizer, type Tokenizer } from './data/tokenize.js';
export { buildSplits, loadBiasInBios, splitForTuning, type BiosSplits } from './data/bias-in-bios.js';
export { loadMnistTestSet, normaliseMnist, splitMnist } from './data/mnist.js';
export { readSafetensors, writeSafetensors, loadSafetensorsTensors } from './io/safetensors.js';
export { hubDownload, resolveModelDir, resolveDatasetFile, snapshotDownload } from './io/hub.js';
export type { Sae } from './sae/sae.js';
export { loadSae } from './sae/load.js';
export { trainSae, trainSaes, type TrainedSae, type OnTrainedSae } from './sae/train.js';
export { ActivationCache, buildActivationCache } from './cache/cache.js';
export type { Probe } from './probe/probe.js';
export { LinearProbe, loadProbe } from './probe/linear.js';
export * from './eval/metrics.js';
export { saeDownstreamCost, type SaeDownstreamCost } from './eval/sae-cost.js';
export type { Eraser, EraserFitter, EraserDescription, FitContext, LabelledSplit, MethodName, SelectionDescription, Supervision } from './erasure/eraser.js';
export { METHOD_NAMES } from './erasure/eraser.js';
export { METHODS, createFitter, isConceptFree, methodSupervision, parseMethodOptions, type MethodOptions } from './erasure/methods.js';
export { saveEraser, type LoadTarget } from './erasure/checkpoint.js';
export { loadEraser } from './erasure/load.js';
export { retrainHead, withHead } from './erasure/head.js';
export { erasedPooled } from './erasure/erased.js';
export { saeConceptWords, type SaeWordOptions, type SaeWords } from './erasure/word-selection.js';
export { parseStrict } from './util/schema.js';
export { readExperimentConfig, parseExperimentConfig, experimentConfigSchema, type ExperimentConfig } from './experiment/config.js';
export { experimentConfigJsonSchema } from './experiment/config-schema.js';
export { runExperiment } from './experiment/runner.js';
export { runBudget, type BudgetResult } from './experiment/budget.js';
export type { ExperimentResult, MethodSeedResult, Summary } from './experiment/results.js';
