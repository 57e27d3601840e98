/**
 * Hook-name mappings between SAE releases and our hook points, and the check that an SAE fits a
 * model's hook.
 *
 * Our hooks: `embed` (what enters layer 0), `layers.{i}.attn_out`, `layers.{i}.mlp_out`,
 * `layers.{i}.resid_out` (the residual stream after layer i).
 *
 * TransformerLens / SAELens names (e.g. the Pythia-70m-deduped "sm" releases
 * `pythia-70m-deduped-{res,mlp,att}-sm`):
 *   blocks.{i}.hook_resid_post -> layers.{i}.resid_out
 *   blocks.0.hook_resid_pre    -> embed                  (Pythia has no positional embedding)
 *   blocks.{i}.hook_resid_pre  -> layers.{i-1}.resid_out (i > 0: the same tensor as resid_post of i-1)
 *   blocks.{i}.hook_mlp_out    -> layers.{i}.mlp_out
 *   blocks.{i}.hook_attn_out   -> layers.{i}.attn_out
 * Names with no counterpart (hook_embed, hook_resid_mid, hook_z, ...) map to nothing.
 *
 * Sparse Feature Circuits dictionary folders (`saprmarks/pythia-70m-deduped-saes`):
 *   embed -> embed; attn_out_layer{i} -> layers.{i}.attn_out; mlp_out_layer{i} -> layers.{i}.mlp_out;
 *   resid_out_layer{i} -> layers.{i}.resid_out.
 *
 * EleutherAI sparsify hookpoints (Hugging Face module paths, the folder names of a release):
 *   layers.{i} (or gpt_neox.layers.{i}, encoder.layer.{i}, ...) -> layers.{i}.resid_out;
 *   layers.{i}.mlp -> layers.{i}.mlp_out; layers.{i}.attention / .self_attn / .attn -> layers.{i}.attn_out;
 *   embed_in / embed_tokens / embeddings -> embed.
 */
import { parseHook, type HookName, type Model } from '../models/model.js';
import type { Sae } from './sae.js';

const OUR_HOOK = /^(embed|layers\.\d+\.(attn_out|mlp_out|resid_out))$/;

/** Whether `name` already is one of our hook names. */
export function isOurHook(name: string): boolean {
  return OUR_HOOK.test(name);
}

/** Our hook for a TransformerLens hook name, or undefined when there is none. */
export function hookFromTransformerLens(name: string): HookName | undefined {
  if (isOurHook(name)) return name;
  const m = /^blocks\.(\d+)\.hook_(resid_post|resid_pre|mlp_out|attn_out)$/.exec(name);
  if (m === null) return undefined;
  const layer = Number(m[1]);
  switch (m[2]) {
    case 'resid_post':
      return `layers.${layer}.resid_out`;
    case 'resid_pre':
      return layer === 0 ? 'embed' : `layers.${layer - 1}.resid_out`;
    case 'mlp_out':
      return `layers.${layer}.mlp_out`;
    default:
      return `layers.${layer}.attn_out`;
  }
}

/** Our hook for a Sparse Feature Circuits dictionary folder name, or undefined. */
export function hookFromFeatureCircuits(folder: string): HookName | undefined {
  if (folder === 'embed') return 'embed';
  const m = /^(attn_out|mlp_out|resid_out)_layer(\d+)$/.exec(folder);
  return m === null ? undefined : `layers.${m[2]}.${m[1]}`;
}

/** The Sparse Feature Circuits folder name of one of our hooks. */
export function featureCircuitsFolder(hook: HookName): string {
  if (hook === 'embed') return 'embed';
  const m = /^layers\.(\d+)\.(attn_out|mlp_out|resid_out)$/.exec(hook);
  if (m === null) throw new Error(`"${hook}" is not a hook name (expected embed or layers.{i}.{attn_out,mlp_out,resid_out})`);
  return `${m[2]}_layer${m[1]}`;
}

/** Our hook for an EleutherAI sparsify hookpoint (a Hugging Face module path), or undefined. */
export function hookFromSparsify(hookpoint: string): HookName | undefined {
  if (isOurHook(hookpoint)) return hookpoint;
  if (/(^|\.)(embed_in|embed_tokens|embeddings)$/.test(hookpoint)) return 'embed';
  const m = /(?:^|\.)(?:layers|layer|h)\.(\d+)(?:\.(mlp|attention|self_attn|attn))?$/.exec(hookpoint);
  if (m === null) return undefined;
  if (m[2] === undefined) return `layers.${m[1]}.resid_out`;
  return m[2] === 'mlp' ? `layers.${m[1]}.mlp_out` : `layers.${m[1]}.attn_out`;
}

/**
 * Checks that `sae` can read hook `hook` of a model (or of a model of width `dModel`): the hook
 * exists, its width equals `sae.dIn`, and the SAE was not trained on another hook.
 */
export function checkSaeFitsModel(sae: Sae, model: Model | number, hook: HookName): void {
  const src = sae.metadata.source;
  let dModel: number;
  if (typeof model === 'number') {
    dModel = model;
    if (!isOurHook(hook)) throw new Error(`${src}: "${hook}" is not a hook name (expected embed or layers.{i}.{attn_out,mlp_out,resid_out})`);
  } else {
    dModel = model.config.dModel;
    parseHook(hook, model.config.nLayers);
  }
  if (sae.dIn !== dModel) {
    throw new Error(
      `${src}: this SAE reads vectors of width ${sae.dIn}, but hook "${hook}" of the model has width ${dModel}: it was trained on another model or hook`,
    );
  }
  if (sae.metadata.hook !== undefined && sae.metadata.hook !== hook) {
    throw new Error(`${src}: this SAE was trained on hook "${sae.metadata.hook}", not "${hook}"`);
  }
}
