/**
 * Hook patterns: where SAEs are wanted at many hooks (`sae-eraser train-sae --hook`, the keys of an
 * experiment config's `saes`), a name with `*` stands for every hook of the model it matches, `*`
 * matching any run of characters (none included): `layers.*.resid_out` is every layer's residual
 * stream, `layers.*` every layer hook, `*` every hook. A pattern is expanded against the model's
 * hook names, so it can only be resolved once the model is open; its syntax is checked before.
 */
import type { HookName } from '../models/model.js';

/** What a hook name or pattern may contain: the characters of hook names, and `*`. */
const PATTERN = /^[A-Za-z0-9_.*]+$/;

/** Whether `name` is a pattern (it holds a `*`) rather than one hook name. */
export function isHookPattern(name: string): boolean {
  return name.includes('*');
}

/** Throws, naming `where`, when `pattern` holds characters no hook name has. */
export function checkHookPattern(pattern: string, where: string): void {
  if (!PATTERN.test(pattern)) {
    throw new Error(`${where}: "${pattern}" is not a hook name or pattern (letters, digits, "_", "." and "*" for any characters)`);
  }
}

/** The hooks of `hookNames` that `pattern` matches, in their order. */
export function matchHookPattern(pattern: string, hookNames: readonly HookName[]): HookName[] {
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((part) => part.replace(/[.]/g, '\\.'))
      .join('.*')}$`,
  );
  return hookNames.filter((h) => re.test(h));
}

/**
 * Resolves names and patterns to hooks of a model, each hook once, in the model's forward order,
 * with the entry that named it: an explicit name wins over a pattern that also matches its hook,
 * two patterns matching one hook are an error, and so are an unknown name and a pattern that matches
 * no hook (both naming the known hooks). `where` names the list in errors, and `what` its entries
 * (e.g. "SAE hook").
 */
export function expandHookPatterns(names: readonly string[], hookNames: readonly HookName[], where: string, what = 'hook'): { hook: HookName; from: string }[] {
  const known = `known hooks: ${hookNames.join(', ')}`;
  const from = new Map<HookName, string>();
  for (const name of names) {
    checkHookPattern(name, where);
    if (isHookPattern(name)) continue;
    if (!hookNames.includes(name)) throw new Error(`${where}: ${what} "${name}" does not exist in this model (${known})`);
    from.set(name, name);
  }
  const byPattern = new Map<HookName, string>();
  for (const pattern of names.filter(isHookPattern)) {
    const matched = matchHookPattern(pattern, hookNames);
    if (matched.length === 0) throw new Error(`${where}: ${what} pattern "${pattern}" matches no hook of this model (${known})`);
    for (const hook of matched) {
      if (from.has(hook)) continue; // named explicitly: that entry overrides the pattern
      const other = byPattern.get(hook);
      if (other !== undefined && other !== pattern) {
        throw new Error(`${where}: ${what} patterns "${other}" and "${pattern}" both match hook "${hook}"; name the hook explicitly to choose`);
      }
      byPattern.set(hook, pattern);
    }
  }
  return hookNames.filter((h) => from.has(h) || byPattern.has(h)).map((hook) => ({ hook, from: from.get(hook) ?? byPattern.get(hook)! }));
}
