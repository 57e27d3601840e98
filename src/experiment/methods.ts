/**
 * Method name -> Eraser factory. `original` and `oracle` are probes, not erasers: the runner
 * handles them itself. Adding a method is one file in src/erasure/ and one line here.
 */
import type { Eraser, MethodName } from '../erasure/eraser.js';

type Factory = (options: Readonly<Record<string, unknown>>) => Eraser;

const registry: Partial<Record<MethodName, Factory>> = {};

export function createEraser(method: MethodName, options: Readonly<Record<string, unknown>>): Eraser {
  const factory = registry[method];
  if (factory === undefined) throw new Error(`method "${method}" is not an eraser (original and oracle are probes)`);
  return factory(options);
}
