/**
 * The original project's command line (MaheepChaudhary/SAE_vs_DAS, `main.py`: argparse with
 * single-dash long flags such as `-lr`, `-btr`, `-nds`) translated into `sae-eraser mask`'s own
 * `--long` flags, before node's parseArgs (which reads `-lr` as `-l -r`) sees them.
 *
 * `translateOriginalFlags` maps each original spelling (single-dash short form, the original's
 * underscore long form, and a hyphenated long form) to one canonical long flag, checks that every
 * flag is known, given once and has its value, and normalises the two values whose spelling the
 * original allowed to vary: the method (`-nds "sae masking"` -> `sae_mask`) and the layers
 * (`-layer [3,15]` -> hook names, see `parseLayerSpec`). Our own flags (`--config`, `--out`, ...)
 * pass through unchanged.
 */
import type { HookName } from '../models/model.js';
import { UsageError } from './args.js';

/** One flag of `sae-eraser mask`: its canonical long name, the spellings that mean it, and whether it takes a value. */
export interface FlagSpec {
  /** The canonical long name (without dashes) that parseArgs reads. */
  name: string;
  /** Every accepted spelling, dashes included; the first is the original's short form when it had one. */
  spellings: readonly string[];
  /** Whether a value follows the flag (false: a switch). */
  value: boolean;
  /** May be given more than once (each occurrence adds a value). */
  repeatable?: boolean;
}

/**
 * The original's flags (main.py's argparse, with the long forms it spelt with underscores) and the
 * hyphenated long forms, then our own flags. `-task` and `-svd` are recognised only to refuse them
 * with a reason (see `REFUSED`).
 */
export const MASK_FLAGS: readonly FlagSpec[] = [
  { name: 'epochs', spellings: ['-e', '--epochs'], value: true },
  { name: 'lr', spellings: ['-lr', '--learning_rate', '--learning-rate', '--lr'], value: true },
  { name: 'batch-size-train', spellings: ['-btr', '--batch_size_train', '--batch-size-train'], value: true },
  { name: 'batch-size-test', spellings: ['-bts', '--batch_size_test', '--batch-size-test'], value: true },
  { name: 'device', spellings: ['-d', '--device'], value: true },
  { name: 'layer', spellings: ['-layer', '--residual_layer', '--residual-layer', '--layer'], value: true },
  { name: 'activation-dim', spellings: ['-ad', '--activation_dim', '--activation-dim'], value: true },
  { name: 'expansion-factor', spellings: ['-ef', '--expansion_factor', '--expansion-factor'], value: true },
  { name: 'resid-path', spellings: ['-rpath', '--resid_dict_path', '--resid-dict-path', '--resid-path'], value: true },
  { name: 'mlp-path', spellings: ['-mpath', '--mlp_dict_path', '--mlp-dict-path', '--mlp-path'], value: true },
  { name: 'attn-path', spellings: ['-atpath', '--attn_dict_path', '--attn-dict-path', '--attn-path'], value: true },
  { name: 'embed-path', spellings: ['-dpath', '--dict_embed_path', '--dict-embed-path', '--embed-path'], value: true },
  { name: 'method', spellings: ['-nds', '--method'], value: true },
  { name: 'eval', spellings: ['-eval', '--evaluation', '--eval'], value: true },
  { name: 'probe-path', spellings: ['-pp', '--probe_path', '--probe-path'], value: true },
  { name: 'mini-batch', spellings: ['-mb', '--mini_batch', '--mini-batch'], value: false },
  { name: 'task', spellings: ['-task', '--task'], value: true },
  { name: 'saved-model-path', spellings: ['-svd', '--saved_model_path', '--saved-model-path'], value: true },
  // Ours.
  { name: 'config', spellings: ['--config'], value: true },
  { name: 'out', spellings: ['--out'], value: true },
  { name: 'seed', spellings: ['--seed'], value: true },
  { name: 'original-recipe', spellings: ['--original-recipe'], value: false },
  { name: 'set', spellings: ['--set'], value: true, repeatable: true },
  { name: 'force', spellings: ['--force'], value: false },
  { name: 'quiet', spellings: ['--quiet'], value: false },
  { name: 'json', spellings: ['--json'], value: false },
  { name: 'help', spellings: ['--help', '-h'], value: false },
];

const BY_SPELLING = new Map(MASK_FLAGS.flatMap((f) => f.spellings.map((s) => [s, f] as const)));

/** The original's values of -nds (its help: "neuron masking, sae masking or das masking") and ours. */
const METHOD_SPELLINGS: Readonly<Record<string, 'sae_mask' | 'neuron_mask' | 'das_mask'>> = {
  sae_mask: 'sae_mask',
  neuron_mask: 'neuron_mask',
  das_mask: 'das_mask',
  'sae masking': 'sae_mask',
  'neuron masking': 'neuron_mask',
  'das masking': 'das_mask',
};

/** The mask method a -nds value names; a UsageError listing the accepted values otherwise. */
export function maskMethodFrom(value: string): 'sae_mask' | 'neuron_mask' | 'das_mask' {
  const method = METHOD_SPELLINGS[value.trim().toLowerCase()];
  if (method === undefined) {
    throw new UsageError(`-nds/--method: unknown method "${value}" (sae_mask, neuron_mask or das_mask; the original's "sae masking" etc. also work)`);
  }
  return method;
}

/**
 * The hook of one of the original's submodule indexes. The original listed its submodules as
 * [embed, then per layer i: attention, mlp, the layer itself], so index 0 is `embed`, 3i + 1 is
 * `layers.{i}.attn_out`, 3i + 2 `layers.{i}.mlp_out` and 3i + 3 `layers.{i}.resid_out` (its
 * `resid_arr` [3, 6, 9, 12, 15] are the residual outputs of layers 0-4).
 */
export function submoduleHook(index: number): HookName {
  if (!Number.isInteger(index) || index < 0) throw new Error(`submodule index must be a non-negative integer, got ${index}`);
  if (index === 0) return 'embed';
  const layer = Math.floor((index - 1) / 3);
  return `layers.${layer}.${(['attn_out', 'mlp_out', 'resid_out'] as const)[(index - 1) % 3]}`;
}

const HOOK_NAME = /^(embed|layers\.(0|[1-9]\d*)\.(attn_out|mlp_out|resid_out))$/;
const INTEGER = /^(0|[1-9]\d*)$/;

/**
 * The hooks a -layer value names, in the order given:
 *  - layer numbers, `4` or `2,4`: the residual output of each layer (`layers.{i}.resid_out`), as the
 *    original's `-layer 4` ("residual layer ... w/ range 0->4");
 *  - a bracketed list, `[3,15]`: the original's submodule indexes (`submoduleHook`), so `[3,15]` is
 *    `layers.0.resid_out,layers.4.resid_out`;
 *  - hook names, bare or in either list: `layers.3.resid_out`, `[embed,12]`.
 * Anything else (`[3,x]`, `[3,15`, `[]`, `-1`), and a hook named twice, is a UsageError.
 */
export function parseLayerSpec(text: string): HookName[] {
  const where = `-layer "${text}"`;
  const trimmed = text.trim();
  const bracketed = trimmed.startsWith('[') || trimmed.endsWith(']');
  if (bracketed && !(trimmed.startsWith('[') && trimmed.endsWith(']'))) throw new UsageError(`${where}: unbalanced brackets (e.g. -layer [3,15])`);
  const inner = bracketed ? trimmed.slice(1, -1) : trimmed;
  if (inner.includes('[') || inner.includes(']')) throw new UsageError(`${where}: nested brackets (e.g. -layer [3,15])`);
  const items = inner.split(',').map((s) => s.trim());
  if (items.length === 1 && items[0] === '') throw new UsageError(`${where}: names no layer`);
  const hooks = items.map((item): HookName => {
    if (item === '') throw new UsageError(`${where}: an empty item between commas`);
    if (HOOK_NAME.test(item)) return item;
    if (INTEGER.test(item)) return bracketed ? submoduleHook(Number(item)) : `layers.${Number(item)}.resid_out`;
    const kind = bracketed ? 'a submodule index (0, 1, 2, ...)' : 'a layer number (0, 1, 2, ...)';
    throw new UsageError(`${where}: "${item}" is neither ${kind} nor a hook name (embed, layers.{i}.attn_out, layers.{i}.mlp_out, layers.{i}.resid_out)`);
  });
  const seen = new Set<HookName>();
  for (const hook of hooks) {
    if (seen.has(hook)) throw new UsageError(`${where}: names ${hook} twice`);
    seen.add(hook);
  }
  return hooks;
}

/** What the user typed for a canonical flag (for messages): the spelling used, e.g. `-lr`. */
export type Spelled = Record<string, string>;

/**
 * Rewrites an argument list written with the original's flags into canonical `--name value` pairs
 * for parseArgs, and returns the spelling the user typed for each flag (for messages). Accepts
 * `-flag value`, `--flag value` and `--flag=value`. Unknown flags, positional arguments, a missing
 * value, a value given to a switch (`-mb 1`), a flag given twice, and -task/-svd are UsageErrors
 * naming the flag as typed. `--method` and `--layer` come out normalised (`sae_mask`; hook names
 * joined by commas).
 */
export function translateOriginalFlags(argv: readonly string[]): { args: string[]; spelled: Spelled } {
  const args: string[] = [];
  const spelled: Spelled = {};
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const eq = token.startsWith('-') ? token.indexOf('=') : -1;
    const flagText = eq > 0 ? token.slice(0, eq) : token;
    const flag = BY_SPELLING.get(flagText);
    if (flag === undefined) {
      if (!token.startsWith('-')) throw new UsageError(`unexpected argument "${token}" (every value follows its flag, e.g. -e 10)`);
      throw new UsageError(`unknown option ${flagText}`);
    }
    if (spelled[flag.name] !== undefined && flag.repeatable !== true) {
      throw new UsageError(`${flagText} is given twice (as ${spelled[flag.name]} and ${flagText})`);
    }
    spelled[flag.name] = flagText;
    if (!flag.value) {
      if (eq > 0) throw new UsageError(`${flagText} is a switch and takes no value (got "${token.slice(eq + 1)}")`);
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith('-')) {
        throw new UsageError(
          `${flagText} is a switch and takes no value (got "${next}")${flag.name === 'mini-batch' ? ': -mb alone trains on 1000 examples' : ''}`,
        );
      }
      args.push(`--${flag.name}`);
      continue;
    }
    let value: string;
    if (eq > 0) {
      value = token.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || BY_SPELLING.has(next.split('=')[0]!)) throw new UsageError(`${flagText} needs a value`);
      value = next;
      i++;
    }
    if (flag.name === 'task') {
      if (value !== 'train') {
        throw new UsageError(
          `${flagText} ${value}: not supported; every sae-eraser mask run trains and then evaluates on the full test data and its subgroups (metrics.json), so -task train is the only task`,
        );
      }
      continue;
    }
    if (flag.name === 'saved-model-path') {
      throw new UsageError(`${flagText}: not supported; the fitted eraser is saved in the run folder (--out DIR, under DIR/erasers/)`);
    }
    if (flag.name === 'method') value = maskMethodFrom(value);
    if (flag.name === 'layer') value = parseLayerSpec(value).join(',');
    args.push(`--${flag.name}`, value);
  }
  return { args, spelled };
}
