/**
 * `hf://` data paths (src/io/hub.ts parseHubPath / resolveHubPath): the HF URI syntax, and files
 * fetched through the hub cache like models, then served from it offline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isHubPath, parseHubPath, resolveHubPath } from '../../src/io/hub.js';
import { setQuiet } from '../../src/util/progress.js';
import { FakeHub, fakeCommit, pseudoRandomBytes, useHubEnv } from './hub-server.js';

describe('parseHubPath', () => {
  it('reads dataset and model URIs, with and without a revision', () => {
    expect(parseHubPath('hf://datasets/LabHC/bias_in_bios/data/train-00000-of-00001-0ab65b32c47407e8.parquet')).toEqual({
      repo: 'LabHC/bias_in_bios',
      repoType: 'dataset',
      revision: 'main',
      file: 'data/train-00000-of-00001-0ab65b32c47407e8.parquet',
    });
    expect(parseHubPath('hf://datasets/acme/bios@v1.0/test.jsonl')).toEqual({ repo: 'acme/bios', repoType: 'dataset', revision: 'v1.0', file: 'test.jsonl' });
    expect(parseHubPath('hf://acme/tiny/sub/notes.txt')).toEqual({ repo: 'acme/tiny', repoType: 'model', revision: 'main', file: 'sub/notes.txt' });
    expect(parseHubPath('hf://models/acme/tiny@0123456789abcdef0123456789abcdef01234567/config.json')).toEqual({
      repo: 'acme/tiny',
      repoType: 'model',
      revision: '0123456789abcdef0123456789abcdef01234567',
      file: 'config.json',
    });
  });

  it('takes a revision with "/" percent-encoded, or written out when it is refs/convert/* or refs/pr/*', () => {
    const parquet = { repo: 'acme/bios', repoType: 'dataset', revision: 'refs/convert/parquet', file: 'default/train/0000.parquet' };
    expect(parseHubPath('hf://datasets/acme/bios@refs%2Fconvert%2Fparquet/default/train/0000.parquet')).toEqual(parquet);
    expect(parseHubPath('hf://datasets/acme/bios@refs/convert/parquet/default/train/0000.parquet')).toEqual(parquet);
    expect(parseHubPath('hf://acme/tiny@refs/pr/12/config.json')?.revision).toBe('refs/pr/12');
  });

  it('leaves local paths alone', () => {
    for (const local of ['data/train.parquet', '/abs/hf://x', 'hf:/datasets/a/b/c', 'HF://datasets/a/b/c']) {
      expect(isHubPath(local)).toBe(false);
      expect(parseHubPath(local)).toBeUndefined();
    }
  });

  it('refuses malformed URIs, quoting them and saying what is wrong', () => {
    const cases: [string, RegExp][] = [
      ['hf://datasets/LabHC/bias_in_bios', /no file path inside the repo/],
      ['hf://datasets/LabHC/bias_in_bios/', /no file path inside the repo/],
      ['hf://datasets/LabHC', /no <owner>\/<name> repo id/],
      ['hf://spaces/acme/demo/app.py', /spaces are not supported/],
      ['hf://datasets/acme/bios@/x.jsonl', /empty revision/],
      ['hf://datasets/acme/bios@%E0%A4%A/x.jsonl', /not valid percent-encoding/],
      ['hf://datasets/acme/bios/a/../../etc/passwd', /invalid file name/],
      ['hf://datasets/acme/bios//x.jsonl', /invalid file name/],
      ['hf://datasets/a--b/bios/x.jsonl', /invalid hub repo id/],
    ];
    for (const [uri, why] of cases) {
      expect(() => parseHubPath(uri), uri).toThrow(why);
      expect(() => parseHubPath(uri), uri).toThrow(`"${uri}" is not a usable hub file URI`);
    }
  });
});

describe('resolveHubPath', () => {
  let restoreEnv: () => void = () => undefined;
  const home = mkdtempSync(join(tmpdir(), 'hub-path-'));
  const hub = new FakeHub();
  const parquet = pseudoRandomBytes(20_000, 5);
  const converted = pseudoRandomBytes(3_000, 6);

  beforeAll(async () => {
    setQuiet(true);
    hub.addRepo({
      id: 'acme/bios',
      type: 'dataset',
      refs: {
        main: { commit: fakeCommit('bios-main'), files: { 'data/train-00000-of-00001.parquet': { content: parquet, lfs: true } } },
        'refs/convert/parquet': { commit: fakeCommit('bios-parquet'), files: { 'default/train/0000.parquet': { content: converted, lfs: true } } },
      },
    });
    await hub.start();
    restoreEnv = useHubEnv(hub.url, home);
  });

  afterAll(async () => {
    restoreEnv();
    await hub.stop();
    setQuiet(false);
    rmSync(home, { recursive: true, force: true });
  });

  it('returns a local path unchanged, without asking the hub', async () => {
    const before = hub.log.length;
    expect(await resolveHubPath('data/train.parquet')).toBe('data/train.parquet');
    expect(hub.log.length).toBe(before);
  });

  it('downloads an hf:// file into the hub cache, then serves it offline from there', async () => {
    const uri = 'hf://datasets/acme/bios/data/train-00000-of-00001.parquet';
    const path = await resolveHubPath(uri);
    expect(path).toBe(join(home, 'hub', 'datasets--acme--bios', 'snapshots', fakeCommit('bios-main'), 'data', 'train-00000-of-00001.parquet'));
    expect(readFileSync(path).equals(parquet)).toBe(true);
    expect(hub.requests('hub', '/datasets/acme/bios/resolve/main/data/train-00000-of-00001.parquet').length).toBeGreaterThan(0);

    const before = hub.log.length;
    process.env.HF_HUB_OFFLINE = '1';
    try {
      expect(await resolveHubPath(uri)).toBe(path);
      // Offline, a file never fetched is an error naming it, not a request.
      await expect(resolveHubPath('hf://datasets/acme/bios/data/test-00000-of-00001.parquet')).rejects.toThrow(
        /file "data\/test-00000-of-00001\.parquet" of dataset repo acme\/bios at revision "main" is not in the hub cache .* HF_HUB_OFFLINE is set/,
      );
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    expect(hub.log.length).toBe(before);
  });

  it('fetches at a revision with "/" in it', async () => {
    const path = await resolveHubPath('hf://datasets/acme/bios@refs/convert/parquet/default/train/0000.parquet');
    expect(readFileSync(path).equals(converted)).toBe(true);
    expect(path).toContain(join('snapshots', fakeCommit('bios-parquet')));
  });

  it('names the repo and file when the hub has no such file', async () => {
    await expect(resolveHubPath('hf://datasets/acme/bios/data/missing.parquet')).rejects.toThrow(/data\/missing\.parquet.*acme\/bios/);
  });
});
