/**
 * `MaskFitter`: fits a learned mask of one method (its `MaskKind`) with validated options. It
 * checks the fit context, builds the units of each masked hook and a `MaskTrainer`, trains it,
 * freezes the result into a `MaskEraser` and, with `retrainHead`, attaches a probe head trained
 * on the erased training split (src/erasure/head.ts).
 *
 * Training runs on cached pooled values when the only masked hook is the probe hook, and reruns
 * the model every step otherwise (sources.ts). Every masked hook must be the probe hook or
 * upstream of it: an edit after the probe's hook could not change what the probe reads.
 */
import { checkLabels } from '../../probe/probe.js';
import { progress } from '../../util/progress.js';
import { checkHooksUpToProbe, type Eraser, type EraserFitter, type FitContext, type LabelledSplit } from '../eraser.js';
import { retrainHead, withHead } from '../head.js';
import { freezeMask, MaskEraser, type FrozenMask } from './eraser.js';
import { affineOfProbe } from './affine-heads.js';
import { resolveMaskConfig, type MaskConfig, type MaskMethod, type MaskOptions } from './options.js';
import { ModelSource, PooledSource, type RowSource } from './sources.js';
import { MaskTrainer, type MaskTrainingCallbacks } from './trainer.js';
import type { MaskKind, UnitSpace } from './units.js';
import { minOf } from '../../util/arrays.js';
import type { HistoryLog } from '../../util/history.js';

export class MaskFitter implements EraserFitter {
  constructor(
    private readonly kind: MaskKind,
    /** Parsed options (the method's schema). */
    private readonly options: MaskOptions,
    private readonly callbacks: MaskTrainingCallbacks = {},
  ) {}

  get method(): MaskMethod {
    return this.kind.method;
  }

  async fit(ctx: FitContext): Promise<Eraser> {
    const method = this.kind.method;
    const config = resolveMaskConfig(this.options, ctx);
    checkHooksUpToProbe(ctx.model, ctx.probeHook, config.hooks, method);
    const probeHead = affineOfProbe(ctx.probe, ctx.probe.dIn, config.seed);
    const taskSplit = pickTaskSplit(method, config, ctx);
    const taskLabels = checkLabels(taskSplit.y, taskSplit.rows.length, ctx.probe.nClasses, `${method} task labels`);
    const conceptLabels = config.objective === 'concept' ? checkConceptSet(method, config, ctx.concept) : undefined;
    const spaces: UnitSpace[] = [];
    let trainer: MaskTrainer | undefined;
    let eraser: MaskEraser;
    try {
      for (const hook of config.hooks) spaces.push(this.kind.create(hook, ctx, config));
      const pooled = config.hooks.length === 1 && config.hooks[0] === ctx.probeHook;
      const source = (split: LabelledSplit): RowSource =>
        pooled ? new PooledSource(ctx.cache, spaces[0]!, split.rows) : new ModelSource(ctx, split.texts, spaces);
      if (!pooled) for (const split of [taskSplit, ctx.concept]) checkTexts(method, split);
      const label = `${method} (${config.objective} objective${pooled ? ', pooled cache' : ', model in the loop'})`;
      trainer = new MaskTrainer({
        spaces,
        task: { source: source(taskSplit), labels: taskLabels },
        concept:
          conceptLabels === undefined
            ? undefined
            : {
                source: source(ctx.concept),
                labels: conceptLabels,
                taskLabels: config.balanceConcept
                  ? checkLabels(ctx.concept.y, ctx.concept.rows.length, ctx.probe.nClasses, `${method} concept-set task labels`)
                  : undefined,
              },
        probeHead,
        config,
        label,
        refitChunk: pooled ? 256 : 32,
        callbacks: this.callbacks,
      });
      train(trainer, label, ctx.log);
      const logits = trainer.maskLogits();
      const masks: FrozenMask[] = [];
      try {
        spaces.forEach((space, i) => masks.push(freezeMask(space, logits[i]!, config)));
      } catch (err) {
        for (const f of masks) f.gate.dispose();
        throw err;
      }
      spaces.length = 0;
      eraser = new MaskEraser(method, ctx.probeHook, masks, trainer.config);
    } finally {
      trainer?.dispose();
      for (const s of spaces) s.dispose();
    }
    if (!config.retrainHead) return eraser;
    try {
      return withHead(eraser, await retrainHead(eraser, ctx));
    } catch (err) {
      eraser.dispose();
      throw err;
    }
  }
}

/** Runs `trainer` to the end, reporting progress and logging every step's losses and temperature. */
function train(trainer: MaskTrainer, label: string, log: HistoryLog | undefined): void {
  const bar = progress(label, trainer.totalSteps, 'step');
  try {
    while (!trainer.done) {
      const info = trainer.step();
      log?.({
        stage: 'mask',
        step: info.step,
        values: { loss: info.loss, task_loss: info.taskLoss, adversary_loss: info.adversaryLoss, temperature: info.temperature },
      });
      bar.tick(1, `loss ${info.loss.toFixed(4)}`);
    }
  } finally {
    bar.done();
  }
}

/** Every masked hook must exist and sit at or before the probe hook. */
function pickTaskSplit(method: MaskMethod, config: MaskConfig, ctx: FitContext): LabelledSplit {
  if (config.objective === 'task' && config.taskSplit === 'balanced') {
    if (ctx.balanced === undefined) throw new Error(`${method}: taskSplit "balanced" needs balanced training data (FitContext.balanced is not given)`);
    return ctx.balanced;
  }
  if (ctx.train.rows.length === 0) throw new Error(`${method}: the training split is empty`);
  return ctx.train;
}

/** The concept labels, with enough of each class for the adversaries (two per class when cross-fitting). */
function checkConceptSet(method: MaskMethod, config: MaskConfig, concept: LabelledSplit): Int32Array {
  if (concept.rows.length === 0) throw new Error(`${method}: the concept objective needs a concept-labelled set (FitContext.concept is empty)`);
  const labels = checkLabels(concept.z, concept.rows.length, 2, `${method} concept labels`);
  const least = minOf([0, 1].map((c) => labels.filter((v) => v === c).length));
  const need = config.adversaryCrossFit ? 2 : 1;
  if (least < need) {
    throw new Error(
      `${method}: the concept set needs at least ${need} example(s) of each concept class (the smaller class has ${least})${need === 2 ? ', one per cross-fitting half' : ''}`,
    );
  }
  return labels;
}

function checkTexts(method: MaskMethod, split: LabelledSplit): void {
  if (split.texts.length !== split.rows.length) {
    throw new Error(
      `${method}: a mask upstream of the probe hook reruns the model, which needs the split's texts (${split.texts.length} texts for ${split.rows.length} rows)`,
    );
  }
}
