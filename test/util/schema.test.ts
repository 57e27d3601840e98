import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseStrict, positiveInt, withDefaults } from '../../src/util/schema.js';

const schema = z.strictObject({
  epochs: positiveInt().default(1),
  lr: z.number().positive().optional(),
  nested: z.strictObject({ on: z.boolean() }).optional(),
});

describe('parseStrict', () => {
  it('returns the typed value with defaults filled in', () => {
    expect(parseStrict(schema, {}, 'x.json')).toEqual({ epochs: 1 });
    expect(parseStrict(schema, { epochs: 3, lr: 0.1 }, 'x.json')).toEqual({ epochs: 3, lr: 0.1 });
  });

  it('names the source, the field and the known fields of a typo', () => {
    expect(() => parseStrict(schema, { epoch: 5 }, 'x.json')).toThrow(/^x\.json: unknown field "epoch" \(known: epochs, lr, nested\)$/);
    expect(() => parseStrict(schema, { nested: { of: true } }, 'x.json')).toThrow(/unknown field "nested\.of" \(known: on\)/);
  });

  it('refuses wrong types instead of coercing them, and lists every problem at once', () => {
    expect(() => parseStrict(schema, { epochs: '20' }, 'x.json')).toThrow(/^x\.json: field "epochs": /);
    expect(() => parseStrict(schema, { epochs: 2.5 }, 'x.json')).toThrow(/field "epochs": .*positive integer/);
    const message = (() => {
      try {
        parseStrict(schema, { epochs: 0, lr: -1, extra: 1 }, 'x.json');
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    })();
    expect(message.split('; ')).toHaveLength(3);
  });
});

describe('withDefaults', () => {
  it('fills only the fields that are undefined, and keeps the rest', () => {
    const given = { a: 2 as number | undefined, b: undefined as string | undefined, c: true };
    expect(withDefaults(given, { a: 1, b: 'x' })).toEqual({ a: 2, b: 'x', c: true });
    expect(given.b).toBeUndefined();
  });
});
