import { describe, expect, it } from 'vitest';
import { LABEL_SOURCES, supervision, supervisionSchema, supervisionText, withLabels } from '../../src/erasure/eraser.js';
import { parseStrict } from '../../src/util/schema.js';

describe('supervision', () => {
  it('lists labels once each, in LABEL_SOURCES order, whatever order and repeats they come in', () => {
    expect(supervision(['concept_task', 'ambiguous_task', false, undefined, 'concept_task', 'concept_gender'])).toEqual({
      labels: ['ambiguous_task', 'concept_gender', 'concept_task'],
      handPicked: false,
    });
    expect(supervision([...LABEL_SOURCES].reverse(), true)).toEqual({ labels: [...LABEL_SOURCES], handPicked: true });
    expect(withLabels(supervision(['concept_gender'], true), 'ambiguous_task', 'concept_gender')).toEqual({
      labels: ['ambiguous_task', 'concept_gender'],
      handPicked: true,
    });
  });

  it('has a short text for tables', () => {
    expect(supervisionText(supervision(['ambiguous_task', 'concept_gender', 'concept_task']))).toBe('amb. task, concept gender, concept task');
    expect(supervisionText(supervision(['ambiguous_task'], true))).toBe('amb. task + hand-picked');
    expect(supervisionText(supervision(['balanced_task']))).toBe('balanced task');
    expect(supervisionText(supervision([]))).toBe('none');
    // A label from a newer run passes through by name.
    expect(supervisionText({ labels: ['ambiguous_task', 'other_labels'], handPicked: false })).toBe('amb. task, other_labels');
  });

  it('parses strictly in checkpoints: known label names only', () => {
    expect(parseStrict(supervisionSchema, { labels: ['concept_gender'], handPicked: false }, 's')).toEqual({ labels: ['concept_gender'], handPicked: false });
    expect(() => parseStrict(supervisionSchema, { labels: ['concept_age'], handPicked: false }, 's')).toThrow(/s: field "labels\[0\]"/);
    expect(() => parseStrict(supervisionSchema, { labels: [] }, 's')).toThrow(/field "handPicked"/);
  });
});
