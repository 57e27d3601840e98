import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/args.js';
import { MASK_FLAGS, maskMethodFrom, parseLayerSpec, submoduleHook, translateOriginalFlags } from '../../src/cli/original-flags.js';

const translate = (argv: string[]): string[] => translateOriginalFlags(argv).args;

function usageError(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('the original flags, translated', () => {
  // Each original flag (short form, the original's underscore long form, a hyphenated long form) -> ours.
  const valued: [string[], string, string][] = [
    [['-e', '--epochs'], 'epochs', '7'],
    [['-lr', '--learning_rate', '--learning-rate'], 'lr', '0.01'],
    [['-btr', '--batch_size_train', '--batch-size-train'], 'batch-size-train', '32'],
    [['-bts', '--batch_size_test', '--batch-size-test'], 'batch-size-test', '64'],
    [['-d', '--device'], 'device', 'cuda:1'],
    [['-ad', '--activation_dim', '--activation-dim'], 'activation-dim', '512'],
    [['-ef', '--expansion_factor', '--expansion-factor'], 'expansion-factor', '64'],
    [['-rpath', '--resid_dict_path', '--resid-dict-path'], 'resid-path', 'dicts/resid_out_layer'],
    [['-mpath', '--mlp_dict_path', '--mlp-dict-path'], 'mlp-path', 'dicts/mlp_out_layer'],
    [['-atpath', '--attn_dict_path', '--attn-dict-path'], 'attn-path', 'dicts/attn_out_layer'],
    [['-dpath', '--dict_embed_path', '--dict-embed-path'], 'embed-path', 'dicts/embed'],
    [['-eval', '--evaluation'], 'eval', 'gender'],
    [['-pp', '--probe_path', '--probe-path'], 'probe-path', 'probe_shift.pth'],
    [['--config'], 'config', 'c.json'],
    [['--out'], 'out', 'runs/x'],
    [['--seed'], 'seed', '-3'],
  ];

  it.each(valued)('%j take a value and become --%s', (spellings, name, value) => {
    for (const s of spellings) {
      expect(translate([s, value]), s).toEqual([`--${name}`, value]);
      expect(translate([`${s}=${value}`]), `${s}=`).toEqual([`--${name}`, value]);
    }
  });

  it('normalises the method, in our spelling and the original\'s ("sae masking")', () => {
    for (const [given, want] of [
      ['sae_mask', 'sae_mask'],
      ['neuron masking', 'neuron_mask'],
      ['DAS masking', 'das_mask'],
      ['sae masking', 'sae_mask'],
    ]) {
      expect(translate(['-nds', given!])).toEqual(['--method', want]);
      expect(translate(['--method', given!])).toEqual(['--method', want]);
    }
    expect(usageError(() => maskMethodFrom('das sae masking'))).toMatch(/unknown method "das sae masking" \(sae_mask, neuron_mask or das_mask/);
  });

  it('turns -layer into hook names and -mb, --force, --quiet, --json into switches', () => {
    expect(translate(['-layer', '[3,15]', '-mb', '--force', '--quiet', '--json'])).toEqual([
      '--layer',
      'layers.0.resid_out,layers.4.resid_out',
      '--mini-batch',
      '--force',
      '--quiet',
      '--json',
    ]);
    expect(translate(['--residual_layer', '4'])).toEqual(['--layer', 'layers.4.resid_out']);
    expect(translate(['--mini_batch'])).toEqual(['--mini-batch']);
  });

  it('translates a whole original command line and records what was typed', () => {
    const { args, spelled } = translateOriginalFlags([
      '-e', '2', '-lr', '0.01', '-btr', '32', '-bts', '64', '-layer', '[9]', '-mb', '-d', 'cuda', '-eval', 'profession', '-nds', 'sae_mask', '-task', 'train',
    ]); // prettier-ignore
    expect(args).toEqual([
      '--epochs', '2', '--lr', '0.01', '--batch-size-train', '32', '--batch-size-test', '64', '--layer', 'layers.2.resid_out',
      '--mini-batch', '--device', 'cuda', '--eval', 'profession', '--method', 'sae_mask',
    ]); // prettier-ignore
    expect(spelled).toMatchObject({ epochs: '-e', lr: '-lr', layer: '-layer', 'mini-batch': '-mb', task: '-task' });
  });

  it('lets --set repeat and keeps every value', () => {
    expect(translate(['--set', 'a=1', '--set', 'b=2'])).toEqual(['--set', 'a=1', '--set', 'b=2']);
  });

  it('refuses unknown flags, positional values, missing values, values after a switch and repeats, naming the flag as typed', () => {
    expect(usageError(() => translate(['-foo', '1']))).toBe('unknown option -foo');
    expect(usageError(() => translate(['-l', '0.1']))).toBe('unknown option -l');
    expect(usageError(() => translate(['train']))).toMatch(/unexpected argument "train"/);
    expect(usageError(() => translate(['-e']))).toBe('-e needs a value');
    expect(usageError(() => translate(['-lr', '-btr', '3']))).toBe('-lr needs a value');
    expect(usageError(() => translate(['-mb', '1']))).toMatch(/^-mb is a switch and takes no value \(got "1"\)/);
    expect(usageError(() => translate(['--mini-batch=0']))).toMatch(/^--mini-batch is a switch/);
    expect(usageError(() => translate(['-e', '1', '--epochs', '2']))).toBe('--epochs is given twice (as -e and --epochs)');
  });

  it('refuses -task other than train and -svd, saying what to do instead', () => {
    expect(translate(['-task', 'train'])).toEqual([]);
    expect(usageError(() => translate(['-task', 'eval_on_subgroups']))).toMatch(
      /-task eval_on_subgroups: not supported; every sae-eraser mask run trains and then evaluates/,
    );
    expect(usageError(() => translate(['-svd', 'new_model.pth']))).toMatch(/-svd: not supported; the fitted eraser is saved in the run folder/);
  });

  it('has one canonical name per flag and no spelling twice', () => {
    const spellings = MASK_FLAGS.flatMap((f) => f.spellings);
    expect(new Set(spellings).size).toBe(spellings.length);
    expect(new Set(MASK_FLAGS.map((f) => f.name)).size).toBe(MASK_FLAGS.length);
  });
});

describe('-layer', () => {
  it("maps the original's submodule indexes: 0 embed, then attn, mlp, resid per layer", () => {
    expect([0, 1, 2, 3, 4, 5, 6].map(submoduleHook)).toEqual([
      'embed',
      'layers.0.attn_out',
      'layers.0.mlp_out',
      'layers.0.resid_out',
      'layers.1.attn_out',
      'layers.1.mlp_out',
      'layers.1.resid_out',
    ]);
    // resid_arr of the original: the residual outputs of layers 0-4.
    expect([3, 6, 9, 12, 15].map(submoduleHook)).toEqual([0, 1, 2, 3, 4].map((i) => `layers.${i}.resid_out`));
  });

  it('reads layer numbers, bracketed submodule indexes and hook names', () => {
    expect(parseLayerSpec('4')).toEqual(['layers.4.resid_out']);
    expect(parseLayerSpec('2,4')).toEqual(['layers.2.resid_out', 'layers.4.resid_out']);
    expect(parseLayerSpec('[3,15]')).toEqual(['layers.0.resid_out', 'layers.4.resid_out']);
    expect(parseLayerSpec(' [ 9 ] ')).toEqual(['layers.2.resid_out']);
    expect(parseLayerSpec('[0,14]')).toEqual(['embed', 'layers.4.mlp_out']);
    expect(parseLayerSpec('layers.3.resid_out')).toEqual(['layers.3.resid_out']);
    expect(parseLayerSpec('[embed,12]')).toEqual(['embed', 'layers.3.resid_out']);
    expect(parseLayerSpec('embed,layers.1.attn_out,2')).toEqual(['embed', 'layers.1.attn_out', 'layers.2.resid_out']);
  });

  it('refuses malformed values with the value and the offending item', () => {
    expect(usageError(() => parseLayerSpec('[3,x]'))).toMatch(/^-layer "\[3,x\]": "x" is neither a submodule index \(0, 1, 2, \.\.\.\) nor a hook name/);
    expect(usageError(() => parseLayerSpec('x'))).toMatch(/"x" is neither a layer number/);
    expect(usageError(() => parseLayerSpec('[3,15'))).toMatch(/unbalanced brackets/);
    expect(usageError(() => parseLayerSpec('3]'))).toMatch(/unbalanced brackets/);
    expect(usageError(() => parseLayerSpec('[[3]]'))).toMatch(/nested brackets/);
    expect(usageError(() => parseLayerSpec('[]'))).toMatch(/names no layer/);
    expect(usageError(() => parseLayerSpec('3,,4'))).toMatch(/an empty item/);
    expect(usageError(() => parseLayerSpec('-1'))).toMatch(/"-1" is neither/);
    expect(usageError(() => parseLayerSpec('1.5'))).toMatch(/"1.5" is neither/);
    expect(usageError(() => parseLayerSpec('07'))).toMatch(/"07" is neither/);
    expect(usageError(() => parseLayerSpec('layers.3.resid'))).toMatch(/"layers.3.resid" is neither/);
    expect(usageError(() => parseLayerSpec('[12],layers.3.resid_out'))).toMatch(/unbalanced brackets/);
    expect(usageError(() => parseLayerSpec('[12,layers.3.resid_out]'))).toBe('-layer "[12,layers.3.resid_out]": names layers.3.resid_out twice');
    expect(usageError(() => translate(['-layer', '[3,x]']))).toMatch(/"x" is neither/);
  });
});
