/**
 * Histograms of the learned mask logits m of each mask eraser (sae_mask, neuron_mask, das_mask),
 * one per method, seed and hook. A unit is removed when m <= 0 (the hard gate [m > 0]; for a soft
 * mask the gate sigmoid(m / T) is then <= 0.5), so the bins have an edge at 0 and the removed side
 * is coloured apart.
 */
import type { MaskLogits } from './run-dir.js';
import { minOf, maxOf } from '../util/arrays.js';
import { escapeHtml } from './escape.js';
import { histogram, legend, type Bin } from './svg.js';

const REMOVED = '#e15759';
const KEPT = '#4e79a7';

/** `count` equal bins over the values' range with an edge at 0, each bin (lo, hi]; non-finite values are not counted. */
export function maskBins(values: ArrayLike<number>, count = 30): Bin[] {
  const finite = Array.from(values).filter(Number.isFinite);
  if (finite.length === 0) return [];
  const min = minOf(finite);
  const max = maxOf(finite);
  const width = max > min ? (max - min) / count : 1;
  const lo = Math.floor(min / width) * width;
  const n = Math.max(1, Math.ceil((max - lo) / width));
  const counts = new Array<number>(n).fill(0);
  for (const v of finite) counts[Math.min(n - 1, Math.max(0, Math.ceil((v - lo) / width) - 1))]!++;
  return counts.map((c, i) => {
    const hi = lo + (i + 1) * width;
    return { lo: lo + i * width, hi, count: c, colour: hi <= 1e-12 * width ? REMOVED : KEPT };
  });
}

/** The mask section's HTML. */
export function maskHistograms(masks: readonly MaskLogits[]): string {
  if (masks.length === 0) return '<p class="note">No mask eraser (sae_mask, neuron_mask, das_mask) was saved in erasers/.</p>';
  const figures = masks.map((m) => {
    let removed = 0;
    for (const v of m.logits) if (v <= 0) removed++;
    const bins = maskBins(m.logits);
    const what = `${m.method}, seed ${m.seed}`;
    const chart = bins.length === 0 ? '<p class="note">no finite logits</p>' : histogram(`mask logits of ${what} at ${m.hook}`, bins, 'mask logit m', 0);
    return (
      `<figure class="small"><figcaption>${escapeHtml(what)}<br><small>${escapeHtml(m.hook)}: ${removed} of ${m.logits.length} removed (m ≤ 0)${m.hardMask ? '' : ', soft gate sigmoid(m / T)'}</small></figcaption>` +
      `${chart}</figure>`
    );
  });
  return `<div class="charts">${figures.join('')}</div>${legend([
    { label: 'removed (m ≤ 0)', colour: REMOVED },
    { label: 'kept', colour: KEPT },
  ])}<p class="note">Counts on a log scale: a mask keeps most units and removes few.</p>`;
}
