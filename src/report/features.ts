/**
 * Feature cards: one card per SAE feature a method removed, saying which methods (and seeds)
 * removed it and, for features at the probe hook listed in the explorer data, what it responds to
 * on the test set: its activation density (fraction of rows whose pooled code is > 0), the Pearson
 * correlation of its pooled code with gender (z, 1 = female) and with profession (y) over the
 * balanced test rows, and the test texts where its pooled code is largest.
 */
import type { ResultLine } from './run-dir.js';
import type { ExplorerData } from './explorer.js';
import { escapeHtml } from './escape.js';

/** What a card shows about one listed feature. */
export interface FeatureStats {
  /** Fraction of the test rows with a pooled code > 0. */
  density: number;
  /** Pearson correlation of the pooled code with z (resp. y) over the balanced rows; undefined when the code or the labels are constant there. */
  corrGender: number | undefined;
  corrProfession: number | undefined;
  /** The rows with the largest positive pooled codes, largest first (ties: lower row first). */
  top: { row: number; code: number }[];
}

/** Pearson correlation of two equal-length series, undefined when either is constant. */
export function pearson(a: readonly number[], b: readonly number[]): number | undefined {
  const n = a.length;
  if (n === 0 || b.length !== n) return undefined;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i]! - ma;
    const db = b[i]! - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  if (saa === 0 || sbb === 0) return undefined;
  return sab / Math.sqrt(saa * sbb);
}

/** Statistics of the feature at position `position` of `data.features`; `topK` texts. */
export function featureStats(data: ExplorerData, position: number, topK = 5): FeatureStats {
  const f = data.features[position];
  if (f === undefined) throw new Error(`featureStats: no listed feature at position ${position}`);
  let active = 0;
  for (const c of f.codes) if (c > 0) active++;
  const balanced = data.splits.balanced!;
  const codes = balanced.rows.map((r) => f.codes[r]!);
  const top = f.codes
    .map((code, row) => ({ row, code }))
    .filter((e) => e.code > 0)
    .sort((a, b) => b.code - a.code || a.row - b.row)
    .slice(0, topK);
  return { density: active / f.codes.length, corrGender: pearson(codes, balanced.z), corrProfession: pearson(codes, balanced.y), top };
}

/** A removed feature: where it lives and who removed it, at which seeds. */
interface Removed {
  hook: string;
  index: number;
  by: Map<string, number[]>;
}

/**
 * Every SAE feature removed by a method: from results' `removed` (any hook) and the explorers'
 * method lists (probe hook); the probe hook's first, then by hook, the most often removed first,
 * then by the explorer's gender score.
 */
export function removedFeatures(results: readonly ResultLine[], explorers: readonly ExplorerData[]): Removed[] {
  const byKey = new Map<string, Removed>();
  const add = (hook: string, index: number, method: string, seed: number): void => {
    const key = `${hook}\u0000${index}`;
    let entry = byKey.get(key);
    if (entry === undefined) byKey.set(key, (entry = { hook, index, by: new Map() }));
    const seeds = entry.by.get(method) ?? [];
    if (!seeds.includes(seed)) seeds.push(seed);
    entry.by.set(method, seeds);
  };
  for (const line of results) {
    for (const [hook, r] of Object.entries(line.result.removed ?? {})) {
      if (r.kind === 'sae_features') for (const i of r.indices ?? []) add(hook, i, line.method, line.seed);
    }
  }
  for (const e of explorers) for (const [method, m] of Object.entries(e.methods)) for (const i of m.features) add(e.hook, i, method, e.seed);
  const probeHook = explorers[0]?.hook;
  const times = (f: Removed): number => [...f.by.values()].reduce((s, seeds) => s + seeds.length, 0);
  const score = new Map<number, number>();
  for (const e of explorers) for (const f of e.features) if (!score.has(f.index)) score.set(f.index, f.genderScore);
  const scoreOf = (f: Removed): number => (f.hook === probeHook ? (score.get(f.index) ?? 0) : 0);
  // The probe hook's features first (the explorer has their activations), then by hook; the most
  // often removed first, then the highest gender score.
  return [...byKey.values()].sort(
    (a, b) =>
      Number(b.hook === probeHook) - Number(a.hook === probeHook) ||
      (a.hook < b.hook ? -1 : a.hook > b.hook ? 1 : 0) ||
      times(b) - times(a) ||
      scoreOf(b) - scoreOf(a) ||
      a.index - b.index,
  );
}

/** A correlation with two decimals and its sign (none for a value that rounds to 0). */
function signed(v: number | undefined): string {
  if (v === undefined) return '–';
  const text = Math.abs(v).toFixed(2);
  return Number(text) === 0 ? text : `${v > 0 ? '+' : '−'}${text}`;
}

/** Longest excerpt of a bio shown on a card (characters). */
const EXCERPT = 160;

function excerptOf(text: string): string {
  return escapeHtml(text.length > EXCERPT ? `${text.slice(0, EXCERPT)}…` : text);
}

/**
 * A text as its tokens, each shaded by the feature's code on it (darkest = the text's largest),
 * cut to a window of EXCERPT characters around the most active token.
 */
function highlighted(pieces: readonly string[], acts: readonly number[]): string {
  let peak = 0;
  acts.forEach((a, i) => {
    if (a > acts[peak]!) peak = i;
  });
  const max = acts[peak]!;
  let start = peak;
  let end = peak + 1;
  let length = pieces[peak]!.length;
  while (length < EXCERPT && (start > 0 || end < pieces.length)) {
    if (start > 0) length += pieces[--start]!.length;
    if (end < pieces.length) length += pieces[end++]!.length;
  }
  const shown = pieces.slice(start, end).map((piece, k) => {
    const a = acts[start + k]!;
    if (!(a > 0 && max > 0)) return escapeHtml(piece);
    const lead = piece.startsWith(' ') ? ' ' : '';
    const title = `code ${a.toPrecision(3)}`;
    return `${lead}<mark style="background:rgba(225,87,89,${(0.15 + (0.75 * a) / max).toFixed(2)})" title="${title}">${escapeHtml(piece.trimStart())}</mark>`;
  });
  return `${start > 0 ? '…' : ''}${shown.join('').trimStart()}${end < pieces.length ? '…' : ''}`;
}

/** The cards section's HTML: one card per removed feature, with statistics where the explorer lists it. */
export function featureCards(results: readonly ResultLine[], explorers: readonly ExplorerData[]): string {
  const removed = removedFeatures(results, explorers);
  if (removed.length === 0) return '<p class="note">No method of this run recorded removed SAE features.</p>';
  const cards = removed.map((f) => {
    const who = [...f.by.entries()].map(([m, seeds]) => `${m} (seed${seeds.length > 1 ? 's' : ''} ${seeds.sort((a, b) => a - b).join(', ')})`).join('; ');
    const source = explorers.find((e) => e.hook === f.hook && e.features.some((g) => g.index === f.index));
    let body: string;
    if (source === undefined) {
      body = `<p class="note">Not listed in the explorer data (${f.hook === explorers[0]?.hook ? 'no explorer file lists it' : 'not at the probe hook'}): no activations recorded.</p>`;
    } else {
      const stats = featureStats(
        source,
        source.features.findIndex((g) => g.index === f.index),
      );
      const [p0, p1] = source.professions;
      const texts = stats.top
        .map((t) => {
          const tokens = source.tokens?.[String(t.row)];
          const acts = tokens?.acts[String(f.index)];
          return `<li><span class="code">${t.code.toPrecision(3)}</span> ${tokens !== undefined && acts !== undefined ? highlighted(tokens.pieces, acts) : excerptOf(source.texts[t.row]!)}</li>`;
        })
        .join('');
      body =
        `<dl><dt>active in</dt><dd>${(100 * stats.density).toFixed(1)}% of ${source.texts.length} test rows</dd>` +
        `<dt>corr. with gender</dt><dd title="Pearson r of the pooled code with z (1 = female) over the balanced test rows">${signed(stats.corrGender)} <small>(+ = female)</small></dd>` +
        `<dt>corr. with profession</dt><dd title="Pearson r of the pooled code with y (1 = ${escapeHtml(p1)}) over the balanced test rows">${signed(stats.corrProfession)} <small>(+ = ${escapeHtml(p1)}, − = ${escapeHtml(p0)})</small></dd></dl>` +
        (source.promotes?.[String(f.index)] === undefined
          ? ''
          : `<p class="sub" title="The tokens whose logits the feature's decoder direction raises most through the unembedding (no final layer norm)">Promotes: ${source.promotes[String(f.index)]!.map((t) => `<code>${escapeHtml(t)}</code>`).join(' ')}</p>`) +
        (texts === ''
          ? '<p class="note">Never active on the test rows.</p>'
          : `<p class="sub">Top test texts by pooled code (seed ${source.seed})${source.tokens === undefined ? '' : ', tokens shaded by the feature’s code on them'}:</p><ol class="texts">${texts}</ol>`);
    }
    return `<article class="card" data-feature="${f.index}"><h4>feature ${f.index} <small>at ${escapeHtml(f.hook)}</small></h4><p class="who">removed by ${escapeHtml(who)}</p>${body}</article>`;
  });
  return `<div class="cards">${cards.join('')}</div>`;
}
