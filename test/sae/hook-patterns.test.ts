/** Hook patterns (src/sae/hook-patterns.ts): expansion in forward order, explicit names over patterns, and the errors. */
import { describe, expect, it } from 'vitest';
import { checkHookPattern, expandHookPatterns, isHookPattern, matchHookPattern } from '../../src/sae/hook-patterns.js';
import { standardHookNames } from '../../src/models/model.js';

const hooks = standardHookNames(3);

describe('hook patterns', () => {
  it('match in the model order, * standing for any characters', () => {
    expect(matchHookPattern('layers.*.resid_out', hooks)).toEqual(['layers.0.resid_out', 'layers.1.resid_out', 'layers.2.resid_out']);
    expect(matchHookPattern('layers.1.*', hooks)).toEqual(['layers.1.attn_out', 'layers.1.mlp_out', 'layers.1.resid_out']);
    expect(matchHookPattern('*', hooks)).toEqual(hooks);
    expect(matchHookPattern('*mlp*', hooks)).toEqual(['layers.0.mlp_out', 'layers.1.mlp_out', 'layers.2.mlp_out']);
    // "." is literal: it does not match another character.
    expect(matchHookPattern('layers.*.resid.out', hooks)).toEqual([]);
    // Like a shell glob: layers.1* is layer 1 and layers 10 and 11.
    expect(new Set(matchHookPattern('layers.1*', standardHookNames(12)).map((h) => h.split('.')[1]))).toEqual(new Set(['1', '10', '11']));
    expect([isHookPattern('layers.*.mlp_out'), isHookPattern('embed')]).toEqual([true, false]);
  });

  it('expands a list to each hook once, in forward order, with the entry that named it; an explicit name overrides a pattern', () => {
    expect(expandHookPatterns(['layers.*.resid_out', 'embed'], hooks, 'w')).toEqual([
      { hook: 'embed', from: 'embed' },
      { hook: 'layers.0.resid_out', from: 'layers.*.resid_out' },
      { hook: 'layers.1.resid_out', from: 'layers.*.resid_out' },
      { hook: 'layers.2.resid_out', from: 'layers.*.resid_out' },
    ]);
    expect(expandHookPatterns(['layers.1.*', 'layers.1.mlp_out'], hooks, 'w')).toEqual([
      { hook: 'layers.1.attn_out', from: 'layers.1.*' },
      { hook: 'layers.1.mlp_out', from: 'layers.1.mlp_out' },
      { hook: 'layers.1.resid_out', from: 'layers.1.*' },
    ]);
    // A pattern listed twice is one pattern.
    expect(expandHookPatterns(['layers.2.*', 'layers.2.*'], hooks, 'w').map((e) => e.hook)).toEqual([
      'layers.2.attn_out',
      'layers.2.mlp_out',
      'layers.2.resid_out',
    ]);
  });

  it('refuses an unknown hook, a pattern that matches nothing, two patterns over one hook, and characters no hook has', () => {
    const known = `known hooks: ${hooks.join(', ')}`;
    expect(() => expandHookPatterns(['layers.7.resid_out'], hooks, 'c.json', 'SAE hook')).toThrow(
      `c.json: SAE hook "layers.7.resid_out" does not exist in this model (${known})`,
    );
    expect(() => expandHookPatterns(['blocks.*.hook_resid_post'], hooks, '--hook')).toThrow(
      `--hook: hook pattern "blocks.*.hook_resid_post" matches no hook of this model (${known})`,
    );
    expect(() => expandHookPatterns(['layers.1.*', '*.resid_out'], hooks, 'w')).toThrow(
      'w: hook patterns "layers.1.*" and "*.resid_out" both match hook "layers.1.resid_out"; name the hook explicitly to choose',
    );
    // Naming the shared hook resolves it.
    expect(expandHookPatterns(['layers.1.*', '*.resid_out', 'layers.1.resid_out'], hooks, 'w')).toHaveLength(5);
    expect(() => checkHookPattern('layers.{i}.resid_out', 'w')).toThrow(/w: "layers\.\{i\}\.resid_out" is not a hook name or pattern/);
    expect(() => expandHookPatterns(['layers.?.mlp_out'], hooks, 'w')).toThrow(/not a hook name or pattern/);
  });
});
