/**
 * The Sparse Feature Circuits dictionaries for Pythia-70m-deduped (Marks et al. 2024): 19
 * dictionary_learning AutoEncoders (512 -> 32768) laid out as
 *   <root>/{embed, attn_out_layer{i}, mlp_out_layer{i}, resid_out_layer{i}}/10_32768/ae.pt
 * and mapped to our hooks `embed`, `layers.{i}.attn_out`, `layers.{i}.mlp_out`, `layers.{i}.resid_out`.
 *
 * When the folder does not hold them, they are fetched from the hub repo
 * `saprmarks/pythia-70m-deduped-saes` (one ~2.3 GB zip, `dictionaries_pythia-70m-deduped_10.zip`) and
 * extracted entry by entry into a temp folder that is renamed into place only when complete.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { hubDownload as realHubDownload } from '../io/hub.js';
import { ZipArchive } from '../io/pickle.js';
import type { HookName } from '../models/model.js';
import { progress } from '../util/progress.js';
import { loadDictionaryLearningSae } from './dictionary-learning.js';
import { featureCircuitsFolder, hookFromFeatureCircuits } from './hook-names.js';
import type { Sae } from './sae.js';

export const FEATURE_CIRCUITS_REPO = 'saprmarks/pythia-70m-deduped-saes';
export const FEATURE_CIRCUITS_ZIP = 'dictionaries_pythia-70m-deduped_10.zip';
export const FEATURE_CIRCUITS_MODEL = 'EleutherAI/pythia-70m-deduped';
/** The dictionary id and size used by the paper. */
export const FEATURE_CIRCUITS_DICT = '10_32768';

/** The signature of `hubDownload` in src/io/hub.ts: downloads one file of a hub repo, returns its local path. */
export type HubDownload = (request: { repo: string; file: string; revision?: string; repoType?: 'model' | 'dataset' }) => Promise<string>;

export interface FeatureCircuitsOptions {
  /** Load only these hooks (default: every hook whose dictionary is present). */
  hooks?: readonly HookName[];
  /** Dictionary folder under each site (default `10_32768`). */
  dict?: string;
  /** Fetch from the hub when the folder lacks the dictionaries (default true). */
  download?: boolean;
  /** Hub revision (default `main`). */
  revision?: string;
  /** The downloader (default: `hubDownload` from src/io/hub.ts, which caches like huggingface_hub). */
  hubDownload?: HubDownload;
}

/** The folder holding the site folders: `dir`, `dir/pythia-70m-deduped` or `dir/dictionaries/pythia-70m-deduped`. */
export function findFeatureCircuitsRoot(dir: string, dict = FEATURE_CIRCUITS_DICT): string | undefined {
  for (const root of [dir, join(dir, 'pythia-70m-deduped'), join(dir, 'dictionaries', 'pythia-70m-deduped')]) {
    if (!existsSync(root) || !statSync(root).isDirectory()) continue;
    const sites = readdirSync(root).filter((s) => hookFromFeatureCircuits(s) !== undefined && existsSync(join(root, s, dict, 'ae.pt')));
    if (sites.length > 0) return root;
  }
  return undefined;
}

/**
 * Extracts the dictionaries of a Sparse Feature Circuits zip into `dest` (`dest/<site>/<dict>/ae.pt`
 * and any config.json beside it). Entries are matched by their last three path parts, so the zip
 * may or may not carry a `dictionaries/pythia-70m-deduped/` prefix; output paths are built from the
 * matched names only (no zip-slip). Atomic: `dest` appears only when every entry is written.
 */
export function extractFeatureCircuitsZip(zipPath: string, dest: string): void {
  if (existsSync(dest)) throw new Error(`${dest}: already exists; refusing to overwrite it with the contents of ${zipPath}`);
  const zip = ZipArchive.open(zipPath);
  const tmp = `${dest}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    const wanted = zip.names().flatMap((name) => {
      const parts = name.split('/');
      if (parts.length < 3) return [];
      const [site, dict, file] = parts.slice(-3) as [string, string, string];
      if (hookFromFeatureCircuits(site) === undefined || !/^\d+_\d+$/.test(dict) || (file !== 'ae.pt' && file !== 'config.json')) return [];
      return [{ name, out: join(tmp, site, dict, file) }];
    });
    if (!wanted.some((w) => w.out.endsWith('ae.pt'))) {
      throw new Error(`${zipPath}: no <site>/<id>_<size>/ae.pt dictionaries in this zip (entries: ${zip.names().slice(0, 8).join(', ')}...)`);
    }
    const bar = progress('extracting SAEs', wanted.length, 'files');
    for (const w of wanted) {
      writeFileAtomic(w.out, zip.read(w.name));
      bar.tick(1);
    }
    bar.done();
    mkdirSync(join(dest, '..'), { recursive: true });
    renameSync(tmp, dest);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    zip.close();
  }
}

/** Makes sure `dir` holds the dictionaries, downloading and extracting them when absent. Returns the root. */
export async function ensureFeatureCircuitsSaes(dir: string, options: FeatureCircuitsOptions = {}): Promise<string> {
  const dict = options.dict ?? FEATURE_CIRCUITS_DICT;
  const found = findFeatureCircuitsRoot(dir, dict);
  if (found !== undefined) return found;
  if (options.download === false) {
    throw new Error(
      `${dir}: no Sparse Feature Circuits dictionaries here (expected <site>/${dict}/ae.pt for sites embed, attn_out_layer{i}, mlp_out_layer{i}, resid_out_layer{i}) and downloading is off`,
    );
  }
  const download = options.hubDownload ?? realHubDownload;
  const zipPath = await download({ repo: FEATURE_CIRCUITS_REPO, file: FEATURE_CIRCUITS_ZIP, revision: options.revision ?? 'main', repoType: 'model' });
  const dest = join(dir, 'pythia-70m-deduped');
  extractFeatureCircuitsZip(zipPath, dest);
  const root = findFeatureCircuitsRoot(dir, dict);
  if (root === undefined) throw new Error(`${zipPath}: extracted, but no ${dict} dictionaries were in it`);
  return root;
}

/**
 * Loads the Sparse Feature Circuits dictionaries in `dir` (downloading them when absent) as a
 * hook -> Sae map. Each is 2 x 64 MB of float32 weights: pass `hooks` to load only those needed.
 */
export async function loadFeatureCircuitsSaes(dir: string, options: FeatureCircuitsOptions = {}): Promise<Map<HookName, Sae>> {
  const dict = options.dict ?? FEATURE_CIRCUITS_DICT;
  const root = await ensureFeatureCircuitsSaes(dir, options);
  const sites =
    options.hooks !== undefined
      ? options.hooks.map(featureCircuitsFolder)
      : readdirSync(root).filter((s) => hookFromFeatureCircuits(s) !== undefined && existsSync(join(root, s, dict, 'ae.pt')));
  const out = new Map<HookName, Sae>();
  try {
    for (const site of sites) {
      const path = join(root, site, dict, 'ae.pt');
      if (!existsSync(path)) throw new Error(`${root}: no dictionary for ${site} (${path} is missing)`);
      const hook = hookFromFeatureCircuits(site)!;
      out.set(hook, loadDictionaryLearningSae(path, { hook, model: FEATURE_CIRCUITS_MODEL }));
    }
  } catch (err) {
    for (const sae of out.values()) sae.dispose();
    throw err;
  }
  return out;
}
