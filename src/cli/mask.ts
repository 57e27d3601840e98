/**
 * `sae-eraser mask`: one learned-mask method, one seed, with the original project's command line
 * (MaheepChaudhary/SAE_vs_DAS `main.py`: `-e`, `-lr`, `-btr`, `-layer`, `-nds`, `-eval`, `-pp`, ...;
 * translated by original-flags.ts). The flags become one method's options and a few config
 * overrides on top of an experiment config (the model, data, SAE and probe recipe), and the run is
 * the experiment runner's, into a run folder: metrics.json for `original` (the probe before
 * erasure) and the method, table.md, the fitted eraser, and command.json (the command line as typed,
 * its translation, and the device asked for against the backend that ran).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { engineInfo } from '../engine/engine.js';
import { writeJsonAtomic, writeFileAtomic } from '../io/atomic.js';
import { loadTorchStateDict } from '../io/pickle.js';
import { readSafetensors } from '../io/safetensors.js';
import { projectRoot } from '../io/shared.js';
import { readUtf8 } from '../io/text.js';
import { fileSha256 } from '../cache/identity.js';
import type { HookName } from '../models/model.js';
import { LinearProbe, LINEAR_PROBE_KIND } from '../probe/linear.js';
import { loadSae } from '../sae/load.js';
import { featureCircuitsFolder } from '../sae/hook-names.js';
import { applyConfigSettings, parseExperimentConfig } from '../experiment/config.js';
import { runExperiment } from '../experiment/runner.js';
import type { ExperimentResult } from '../experiment/results.js';
import { renderTable } from '../report/table.js';
import { isHubPath } from '../io/hub.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, outputPath, parse, type OptionSpec, type Parsed } from './args.js';
import { MASK_FLAGS, translateOriginalFlags, type Spelled } from './original-flags.js';

/** The config used when no --config is given: the original project's setup (Pythia-70m-deduped, professor/nurse, the Feature Circuits SAEs). */
export const DEFAULT_MASK_CONFIG = 'configs/pythia70m-professor-nurse.json';

/** Training examples per split with -mb (the original: "for just training on 1000 samples of training data"). */
export const MINI_BATCH_EXAMPLES = 1000;

const usage = `usage: sae-eraser mask -nds sae_mask|neuron_mask|das_mask --out DIR [--config FILE.json]
       [-e EPOCHS] [-lr LR] [-btr N] [-bts N] [-layer 4 | [3,15] | HOOK,...] [-eval profession|gender]
       [-pp PROBE.pth|PROBE.safetensors] [-mb] [-d DEVICE] [-ad D] [-ef F]
       [-rpath DIR] [-mpath DIR] [-atpath DIR] [-dpath DIR] [--original-recipe] [--seed N] [--set KEY=VALUE ...]
       [--force] [--quiet]

One learned mask, one seed, with the original project's flags (its long forms, e.g. --learning_rate,
work too). The config (default ${DEFAULT_MASK_CONFIG}, the original setup) gives the model,
data, SAEs and probe recipe; the flags give the method's options:
  -nds/--method      sae_mask, neuron_mask or das_mask (also "sae masking", "neuron masking", "das masking")
  -e/--epochs        mask training epochs            -lr/--learning-rate   mask learning rate (Adam)
  -btr               mask training batch size        -bts                  texts per forward pass (caching, evaluation)
  -layer             hooks to mask: layer numbers (4: layers.4.resid_out), the original's submodule
                     indexes in brackets ([3,15]: 0 embed, 3i+1/3i+2/3i+3 attn/mlp/resid of layer i), or
                     hook names; default the probe's hook
  -eval profession   the original's objective: the frozen probe's cross-entropy against the profession
                     on balanced data (objective "task", taskSplit "balanced"); reports profession accuracy
  -eval gender       the mask is trained with gender labels to remove gender (objective "concept", the
                     default); reports gender agreement and the gender probe
  -pp/--probe-path   the biased probe: a PyTorch state dict (.pth/.pt: nn.Linear weight [1, d] and bias [1],
                     e.g. Sparse Feature Circuits' net.weight/net.bias) or a safetensors probe; default:
                     trained on the ambiguous split with the config's recipe
  -mb/--mini-batch   at most ${MINI_BATCH_EXAMPLES} examples per training split (a seeded sample)
  -d/--device        accepted for compatibility; the run uses the tfjs backend it reports
  -rpath/-mpath/-atpath/-dpath  dictionary folders for resid/mlp/attn/embed hooks (sae_mask): the
                     original's prefix (DIR/resid_out_layer -> DIR/resid_out_layer{i}/<id>_<size>/ae.pt),
                     a Feature Circuits root, a folder of hook-named SAEs, or one SAE
  -ad, -ef           activation dim and expansion factor: the dictionary size ad x ef picks <id>_<size>
                     folders and the SAEs and probe are checked against them (original defaults 512, 64)
  --original-recipe  the original's mask recipe where ours differs: zero-logit start (initKeep 0.5), no cost
                     on removed units (l1 0), soft gate (hardMask false), SAE error dropped (keepError false)
  --seed N           the one seed (default the config's first)
  --set KEY=VALUE    sets a config field after the flags (e.g. methods.sae_mask.l1=0.01, dataset.limits.ambiguous=40)
Without -eval the method's own defaults apply (objective "concept"). The config's methods block is not used.
Writes DIR/metrics.json (original and the method), DIR/table.md, DIR/command.json and the eraser in
DIR/erasers/<method>/seed-<s>/; the same command again resumes an unfinished run, --force starts afresh.`;

/**
 * `--original-recipe`: the original's choices where our defaults differ (docs/masks.md): the zero-logit
 * start (every unit half removed), no cost on removed units, the soft gate once fitted, and for
 * sae_mask the SAE error dropped (`keepError: false`, added where used).
 */
export const ORIGINAL_RECIPE = { initKeep: 0.5, l1: 0, hardMask: false } as const;

/** What a -rpath/-mpath/-atpath/-dpath flag serves, by the kind of hook. */
const PATH_FLAG_OF_KIND: Readonly<Record<string, string>> = { resid_out: 'resid-path', mlp_out: 'mlp-path', attn_out: 'attn-path', embed: 'embed-path' };

function hookKind(hook: HookName): string {
  return hook === 'embed' ? 'embed' : hook.slice(hook.lastIndexOf('.') + 1);
}

/** Whether a folder directly holds an SAE in a format loadSae reads (ae.pt, or cfg.json of SAELens and sparsify). */
function holdsSae(dir: string): boolean {
  return existsSync(join(dir, 'ae.pt')) || existsSync(join(dir, 'cfg.json'));
}

const isDir = (path: string): boolean => existsSync(path) && statSync(path).isDirectory();

/**
 * The SAE folder for `hook` under a dictionary flag's value `base`, in the layouts the original and
 * ours use, tried in order:
 *   `${base}${i}` (the original's prefix: `-rpath .../resid_out_layer` -> `.../resid_out_layer4`),
 *   `base/<Feature Circuits site>` (a Feature Circuits root: `base/resid_out_layer4`),
 *   `base/<hook>` (hook-named SAE folders, as `sae-eraser run` trains them),
 *   `base` itself when it holds one SAE.
 * In the first folder found, an SAE directly inside it is taken, else its `<id>_<size>` dictionary
 * folders (the Feature Circuits `10_32768`): the one of `size` (-ad x -ef) when given, or the only
 * one. `flag` names the flag as typed, for errors.
 */
export function resolveDictionary(flag: string, base: string, hook: HookName, size?: number): string {
  const site = featureCircuitsFolder(hook);
  const layer = /^layers\.(\d+)\./.exec(hook)?.[1];
  const candidates = [...(layer === undefined ? [] : [`${base}${layer}`]), join(base, site), join(base, hook), base];
  const dir = candidates.find((c) => isDir(c) && (c !== base || holdsSae(c) || hasDictionaries(c)));
  if (dir === undefined) {
    throw new Error(`${flag} ${base}: no dictionary for ${hook} (looked for ${candidates.filter((c) => c !== base).join(', ')}, or an SAE in ${base})`);
  }
  if (holdsSae(dir)) return dir;
  const dicts = dictionaryFolders(dir);
  const wanted = size === undefined ? dicts : dicts.filter((d) => d.endsWith(`_${size}`));
  if (wanted.length === 1) return join(dir, wanted[0]!);
  if (dicts.length === 0) throw new Error(`${flag} ${base}: ${dir} holds no SAE (no ae.pt, cfg.json or <id>_<size>/ae.pt)`);
  if (wanted.length === 0) throw new Error(`${flag} ${base}: ${dir} has no dictionary of size ${size} (-ad x -ef); found ${dicts.join(', ')}`);
  throw new Error(`${flag} ${base}: ${dir} holds several dictionaries (${dicts.join(', ')}); choose one with -ad and -ef (size = ad x ef)`);
}

/** The `<id>_<size>` subfolders of `dir` that hold an ae.pt, sorted. */
function dictionaryFolders(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => /^\d+_\d+$/.test(name) && existsSync(join(dir, name, 'ae.pt')))
    .sort();
}

function hasDictionaries(dir: string): boolean {
  return dictionaryFolders(dir).length > 0;
}

/** A binary linear probe's parameters in torch's layout: weight [1, dIn], bias [1]. */
export interface ProbeWeights {
  weight: Float32Array;
  bias: Float32Array;
  dIn: number;
}

/**
 * Reads the parameters of a binary linear probe (z > 0: the second profession) from
 *  - a PyTorch state dict (torch.save zip, read through the allow-list unpickler) holding one
 *    nn.Linear: `weight` [1, d] and `bias` [1], under any one prefix (Sparse Feature Circuits' probe
 *    module saves `net.weight` and `net.bias`);
 *  - a safetensors file: a probe written by `sae-eraser probe` (LinearProbe.save), or plain
 *    `weight` and `bias` tensors (same shapes, same prefix rule).
 */
export function readProbeWeights(path: string): ProbeWeights {
  if (!existsSync(path)) throw new Error(`${path}: probe file not found`);
  let tensors: Map<string, { shape: readonly number[]; values: () => Float32Array }>;
  if (path.endsWith('.safetensors')) {
    const file = readSafetensors(path);
    if (file.metadata.probe_kind !== undefined) {
      if (file.metadata.probe_kind !== LINEAR_PROBE_KIND) {
        throw new Error(`${path}: metadata probe_kind is ${JSON.stringify(file.metadata.probe_kind)}; only linear probes can be masked against`);
      }
      const probe = LinearProbe.load(path);
      try {
        if (probe.nOut !== 1) throw new Error(`${path}: a probe over ${probe.nClasses} classes; the mask needs a binary probe (weight [1, d])`);
        return { ...probe.parameters(), dIn: probe.dIn };
      } finally {
        probe.dispose();
      }
    }
    tensors = new Map(file.names().map((name) => [name, { shape: file.info(name).shape, values: () => file.float32(name) }]));
  } else {
    let state: ReturnType<typeof loadTorchStateDict>;
    try {
      state = loadTorchStateDict(path);
    } catch (err) {
      // The original loaded a whole pickled probe module (probe_shift.pkl); only a state dict is safe to read.
      throw new Error(`${(err as Error).message}. A probe must be a state dict: torch.save(probe.state_dict(), "probe.pth")`, { cause: err });
    }
    tensors = new Map([...state].map(([name, t]) => [name, { shape: t.shape, values: () => t.float32() }]));
  }
  const weights = [...tensors.keys()].filter((k) => k === 'weight' || k.endsWith('.weight'));
  if (weights.length !== 1) {
    throw new Error(
      `${path}: expected the state dict of one linear layer (weight and bias, e.g. net.weight and net.bias), found ${[...tensors.keys()].join(', ') || 'no tensors'}` +
        (path.endsWith('.safetensors') ? '' : `; save it with torch.save(probe.state_dict(), "${path}")`),
    );
  }
  const prefix = weights[0]!.slice(0, -'weight'.length);
  const extra = [...tensors.keys()].filter((k) => k !== `${prefix}weight` && k !== `${prefix}bias`);
  if (extra.length > 0) throw new Error(`${path}: unexpected tensors ${extra.join(', ')} beside ${prefix}weight and ${prefix}bias (one linear layer expected)`);
  const w = tensors.get(`${prefix}weight`)!;
  const b = tensors.get(`${prefix}bias`);
  if (b === undefined) throw new Error(`${path}: ${prefix}weight has no ${prefix}bias beside it`);
  if (w.shape.length !== 2 || w.shape[0] !== 1 || w.shape[1]! < 1) {
    throw new Error(`${path}: tensor "${prefix}weight" has shape [${w.shape.join(', ')}], expected [1, d] (a binary probe, nn.Linear(d, 1))`);
  }
  if (b.shape.length !== 1 || b.shape[0] !== 1) throw new Error(`${path}: tensor "${prefix}bias" has shape [${b.shape.join(', ')}], expected [1]`);
  const weight = w.values();
  const bias = b.values();
  if (!weight.every(Number.isFinite) || !bias.every(Number.isFinite)) throw new Error(`${path}: the probe's weights hold NaN or infinite values`);
  return { weight, bias, dIn: w.shape[1]! };
}

/** The flag as the user typed it (`-lr`), or its canonical long form when not given. */
function named(spelled: Spelled, name: string): string {
  return spelled[name] ?? `--${name}`;
}

function stringValue(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

function intValue(p: Parsed, spelled: Spelled, name: string, min: number): number | undefined {
  const v = stringValue(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new UsageError(`${named(spelled, name)} must be an integer >= ${min}, got "${v}"`);
  return n;
}

function positiveNumber(p: Parsed, spelled: Spelled, name: string): number | undefined {
  const v = stringValue(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${named(spelled, name)} must be a positive number, got "${v}"`);
  return n;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function readConfigObject(path: string): Record<string, unknown> {
  if (!existsSync(path)) {
    throw new Error(
      path.endsWith(DEFAULT_MASK_CONFIG)
        ? `${path}: the default config (the original setup) is missing; give --config FILE.json`
        : `${path}: config file not found`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readUtf8(path));
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (!isObject(raw)) throw new Error(`${path}: the config must be a JSON object`);
  return raw;
}

/** The parseArgs options of every canonical flag (parse adds the global ones: quiet, force, json, help). */
const OPTIONS: OptionSpec = Object.fromEntries(
  MASK_FLAGS.filter((f) => !['quiet', 'force', 'json', 'help'].includes(f.name)).map((f) => [
    f.name,
    f.value ? { type: 'string' as const, ...(f.repeatable === true ? { multiple: true } : {}) } : { type: 'boolean' as const },
  ]),
);

/** The headline a -eval choice reports, from the run's metrics. */
function headline(result: ExperimentResult, method: string, evaluation: 'profession' | 'gender' | undefined): string {
  const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
  const m = result.methods[method]!;
  const o = result.methods.original!;
  const prof = `profession accuracy ${pct(m.profession_acc.mean)} (before: ${pct(o.profession_acc.mean)})`;
  const gender = `gender agreement ${pct(m.gender_agreement.mean)} (before: ${pct(o.gender_agreement.mean)}), gender probe ${pct(m.gender_probe_acc.mean)} (before: ${pct(o.gender_probe_acc.mean)})`;
  const lines = evaluation === 'gender' ? [gender, prof] : [prof, gender];
  return `${method}: ${m.units_removed} units removed; ${lines.join('; ')}; worst group ${pct(m.worst_group_acc.mean)} (before: ${pct(o.worst_group_acc.mean)})`;
}

async function main(argv: string[]): Promise<CommandResult> {
  const { args, spelled } = translateOriginalFlags(argv);
  const p = parse(args, OPTIONS);
  const method = stringValue(p, 'method');
  if (method === undefined) throw new UsageError('-nds/--method is required (sae_mask, neuron_mask or das_mask)');
  const evaluation = stringValue(p, 'eval');
  if (evaluation !== undefined && evaluation !== 'profession' && evaluation !== 'gender') {
    throw new UsageError(`${named(spelled, 'eval')} must be profession or gender, got "${evaluation}"`);
  }
  const device = stringValue(p, 'device');
  if (device !== undefined && device.trim() === '') throw new UsageError(`${named(spelled, 'device')} names no device`);
  const epochs = intValue(p, spelled, 'epochs', 1);
  const lr = positiveNumber(p, spelled, 'lr');
  const batchTrain = intValue(p, spelled, 'batch-size-train', 1);
  const batchTest = intValue(p, spelled, 'batch-size-test', 1);
  const seed = intValue(p, spelled, 'seed', 0);
  const ad = intValue(p, spelled, 'activation-dim', 1);
  const ef = intValue(p, spelled, 'expansion-factor', 1);
  // The original's defaults (512, 64) stand in for the one not given.
  const dictSize = ad === undefined && ef === undefined ? undefined : (ad ?? 512) * (ef ?? 64);
  const hooks = stringValue(p, 'layer')?.split(',');
  const sets = (p.values.set as string[] | undefined) ?? [];

  const configPath = stringValue(p, 'config') ?? join(projectRoot(), DEFAULT_MASK_CONFIG);
  const raw = readConfigObject(configPath);

  // The method's options: the flags, then --set methods.<method>.* (the config's own methods block is not used).
  const options: Record<string, unknown> = {};
  if (epochs !== undefined) options.epochs = epochs;
  if (lr !== undefined) options.lr = lr;
  if (batchTrain !== undefined) options.batchSize = batchTrain;
  if (hooks !== undefined) options.hooks = hooks;
  if (evaluation === 'profession') Object.assign(options, { objective: 'task', taskSplit: 'balanced' });
  if (evaluation === 'gender') options.objective = 'concept';
  if (p.values['original-recipe'] === true) Object.assign(options, ORIGINAL_RECIPE, method === 'sae_mask' ? { keepError: false } : {});
  raw.methods = { original: {}, [method]: options };
  if (batchTest !== undefined) raw.batchSize = batchTest;
  const configSeeds = Array.isArray(raw.seeds) && typeof raw.seeds[0] === 'number' ? raw.seeds[0] : 42;
  raw.seeds = [seed ?? configSeeds];
  if (p.values['mini-batch'] === true) {
    const dataset = isObject(raw.dataset) ? raw.dataset : {};
    const limits = isObject(dataset.limits) ? dataset.limits : {};
    for (const split of ['ambiguous', 'balanced', 'concept']) {
      const given = limits[split];
      limits[split] = typeof given === 'number' ? Math.min(given, MINI_BATCH_EXAMPLES) : MINI_BATCH_EXAMPLES;
    }
    raw.dataset = { ...dataset, limits };
  }

  // SAEs: only the masked hooks' (sae_mask), from the dictionary flags or else the config.
  const configSaes = isObject(raw.saes) ? raw.saes : {};
  const maskedHooks = hooks ?? (typeof raw.probeHook === 'string' ? [raw.probeHook] : []);
  const saes: Record<string, unknown> = {};
  const usedPathFlags = new Set<string>();
  const notes: string[] = [];
  if (method === 'sae_mask') {
    const resolved = new Map<string, HookName>();
    for (const hook of maskedHooks) {
      const flag = PATH_FLAG_OF_KIND[hookKind(hook)];
      const base = flag === undefined ? undefined : stringValue(p, flag);
      if (base !== undefined) {
        usedPathFlags.add(flag!);
        const path = resolveDictionary(named(spelled, flag!), base, hook, dictSize);
        const other = resolved.get(path);
        if (other !== undefined) throw new UsageError(`${named(spelled, flag!)} ${base}: ${hook} and ${other} resolve to the same SAE, ${path}`);
        resolved.set(path, hook);
        saes[hook] = { path };
      } else if (configSaes[hook] !== undefined) {
        saes[hook] = configSaes[hook];
      } else {
        throw new UsageError(
          `sae_mask at ${hook} needs an SAE: give ${flag === undefined ? 'a dictionary folder' : `--${flag} (${MASK_FLAGS.find((f) => f.name === flag)!.spellings[0]}) DIR`} or add saes["${hook}"] to ${configPath}`,
        );
      }
    }
  }
  for (const flag of Object.values(PATH_FLAG_OF_KIND)) {
    if (stringValue(p, flag) !== undefined && !usedPathFlags.has(flag)) {
      notes.push(
        `${named(spelled, flag)} is not used: ${method === 'sae_mask' ? `no masked hook (${maskedHooks.join(', ')}) is of its kind` : `${method} masks no SAE features`}`,
      );
    }
  }
  raw.saes = saes;

  const source = `${configPath} (with sae-eraser mask flags)`;
  const config = parseExperimentConfig(sets.length === 0 ? raw : applyConfigSettings(raw, sets), source);
  const probePath = stringValue(p, 'probe-path');
  // Hub references are not local files: the hub cache they resolve to cannot be the run folder.
  const outDir = outputPath(p, 'folder', [
    configPath,
    ...[config.dataset.train, config.dataset.test].filter((path) => !isHubPath(path)),
    config.model,
    config.cacheDir,
    probePath,
    ...Object.values(config.saes).map((s) => s.path),
  ]);

  // Checks against -ad/-ef before any model loads: the probe's width and each SAE's dimensions.
  const probe = probePath === undefined ? undefined : readProbeWeights(probePath);
  if (probe !== undefined && ad !== undefined && probe.dIn !== ad) {
    throw new Error(`${probePath}: the probe reads ${probe.dIn} activations, but ${named(spelled, 'activation-dim')} is ${ad}`);
  }
  if (dictSize !== undefined) {
    for (const [hook, spec] of Object.entries(config.saes)) {
      if (!existsSync(spec.path)) continue; // trained or downloaded by the run; checked against the model there
      const sae = loadSae(spec.path, { hook });
      try {
        if ((ad !== undefined && sae.dIn !== ad) || sae.dSae !== dictSize) {
          throw new Error(
            `${spec.path}: the SAE at ${hook} is ${sae.dIn} -> ${sae.dSae}, but -ad/-ef ask for ${ad ?? 512} -> ${dictSize} (${ad ?? 512} x ${ef ?? 64})`,
          );
        }
      } finally {
        sae.dispose();
      }
    }
  }

  const engine = await engineInfo();
  const plural = (n: number): string => `${n} thread${n === 1 ? '' : 's'}`;
  const runs = `tfjs ${engine.backend} backend, ${plural(engine.threads)} (training and edited passes), and ONNX Runtime on the CPU, ${plural(engine.onnxThreads)} (inference-only passes)`;
  process.stderr.write(`${device === undefined ? 'device:' : `${named(spelled, 'device')} ${device}: accepted;`} this run uses the ${runs}\n`);
  for (const note of notes) process.stderr.write(`note: ${note}\n`);

  const biasedProbe =
    probe === undefined
      ? undefined
      : {
          id: `sha256:${fileSha256(probePath!)}`,
          load: (dIn: number): LinearProbe => {
            if (dIn !== probe.dIn)
              throw new Error(`${probePath}: the probe reads ${probe.dIn} activations, but ${config.probeHook} of ${config.model} has ${dIn}`);
            const linear = new LinearProbe(dIn, 2, config.probe);
            linear.setParameters(probe.weight, probe.bias);
            return linear;
          },
        };
  const result = await runExperiment(config, { outDir, force: p.values.force === true, biasedProbe });
  const table = renderTable(result);
  writeFileAtomic(join(outDir, 'table.md'), table);
  const command = {
    argv,
    translated: args,
    method,
    evaluation: evaluation ?? null,
    options: config.methods[method as keyof typeof config.methods]?.options,
    probe: probePath ?? 'trained on the ambiguous split',
    device: { requested: device ?? null, ran: engine },
  };
  writeJsonAtomic(join(outDir, 'command.json'), command);
  return {
    json: { out: outDir, command, ...result },
    text: `${table}\n${headline(result, method, evaluation as 'profession' | 'gender' | undefined)}\nwrote ${outDir}/metrics.json, table.md and command.json\n`,
  };
}

export const maskCommand: Subcommand = {
  summary: "One learned mask (sae_mask, neuron_mask or das_mask), one seed, with the original project's flags.",
  example: 'sae-eraser mask --config configs/ci-minilm-surgeon-nurse.json --out runs/mask -nds sae_mask -e 2 -lr 0.01 -btr 32 -layer [12] -mb -eval profession',
  usage,
  main,
};
