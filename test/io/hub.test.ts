import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { homedir, hostname, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  HubError,
  cachedFile,
  fnmatchRegExp,
  hubCacheDir,
  hubDownload,
  hubEndpoint,
  hubOffline,
  hubToken,
  listRepoFiles,
  normalizeEtag,
  parseRepoSpec,
  repoFolderName,
  resolveDatasetFile,
  resolveModelDir,
  snapshotDownload,
} from '../../src/io/hub.js';
import { projectRoot } from '../../src/io/shared.js';
import { setQuiet } from '../../src/util/progress.js';
import { FakeHub, fakeCommit, gitBlobSha1, pseudoRandomBytes, sha256Hex, useHubEnv, type FakeFile } from './hub-server.js';

let restoreEnv: () => void = () => undefined;
/** Quick retries so fault tests stay fast. */
const FAST = { retries: 3, retryDelayMs: 1 };
/** A port nothing listens on: connection refused at once. */
const DEAD_ENDPOINT = 'http://127.0.0.1:1';

const C_MAIN = fakeCommit('tiny-main');
const C_V1 = fakeCommit('tiny-v1');
const C_SHARDED = fakeCommit('sharded-main');
const C_BIOS = fakeCommit('bios-main');

const text = (s: string): FakeFile => ({ content: Buffer.from(s) });
const weights = pseudoRandomBytes(300_000, 42);
const tinyMain: Record<string, FakeFile> = {
  'config.json': text('{"model_type": "bert", "hidden_size": 8}\n'),
  'tokenizer.json': text('{"version": "1.0", "model": {"type": "WordPiece"}}\n'),
  'vocab.txt': text('[PAD]\n[UNK]\nhello\n'),
  'model.safetensors': { content: weights, lfs: true },
  'sub/notes.txt': text('nested file\n'),
  'README.md': text('# tiny\n'),
};
const shard1 = pseudoRandomBytes(40_000, 7);
const shard2 = pseudoRandomBytes(30_000, 8);
const bigBlob = pseudoRandomBytes(200_000, 9);
/** Above the 1 MiB progress threshold, so the progress path runs too. */
const largeBlob = pseudoRandomBytes(1_300_000, 11);

let hub: FakeHub;
let home: string;

function storage(repoFolder = 'models--acme--tiny', root = home): string {
  return join(root, 'hub', repoFolder);
}

async function expectHubError(promise: Promise<unknown>, kind: string, ...parts: string[]): Promise<HubError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a HubError').toBeInstanceOf(HubError);
  const err = caught as HubError;
  expect(err.kind).toBe(kind);
  for (const part of parts) expect(err.message).toContain(part);
  return err;
}

beforeAll(async () => {
  setQuiet(true);
  hub = await new FakeHub().start();
  hub.addRepo({
    id: 'acme/tiny',
    type: 'model',
    refs: {
      main: { commit: C_MAIN, files: tinyMain },
      v1: {
        commit: C_V1,
        files: { ...tinyMain, 'config.json': text('{"model_type": "bert", "hidden_size": 4}\n') },
      },
    },
  });
  hub.addRepo({
    id: 'acme/sharded',
    type: 'model',
    refs: {
      main: {
        commit: C_SHARDED,
        files: {
          'config.json': text('{"model_type": "gpt_neox"}\n'),
          'tokenizer.json': text('{"version": "1.0"}\n'),
          'special_tokens_map.json': text('{}\n'),
          'model.safetensors.index.json': text(
            JSON.stringify({
              metadata: { total_size: 70_000 },
              weight_map: {
                'a.weight': 'model-00001-of-00002.safetensors',
                'b.weight': 'model-00002-of-00002.safetensors',
                'c.weight': 'model-00001-of-00002.safetensors',
              },
            }),
          ),
          'model-00001-of-00002.safetensors': { content: shard1, lfs: true },
          'model-00002-of-00002.safetensors': { content: shard2, lfs: true },
        },
      },
    },
  });
  hub.addRepo({
    id: 'acme/nosafe',
    type: 'model',
    refs: {
      main: {
        commit: fakeCommit('nosafe'),
        files: { 'config.json': text('{}'), 'tokenizer.json': text('{}'), 'pytorch_model.bin': { content: bigBlob, lfs: true } },
      },
    },
  });
  hub.addRepo({
    id: 'acme/private',
    type: 'model',
    token: 'secret-token',
    refs: { main: { commit: fakeCommit('private'), files: { 'config.json': text('{"private": true}') } } },
  });
  hub.addRepo({
    id: 'acme/big',
    type: 'model',
    refs: { main: { commit: fakeCommit('big'), files: { 'blob.bin': { content: bigBlob, lfs: true } } } },
  });
  hub.addRepo({
    id: 'acme/large',
    type: 'model',
    refs: { main: { commit: fakeCommit('large'), files: { 'weights.bin': { content: largeBlob, lfs: true } } } },
  });
  hub.addRepo({
    id: 'acme/bios',
    type: 'dataset',
    refs: {
      main: {
        commit: C_BIOS,
        files: {
          'data/train.jsonl': text('{"text": "a", "profession": "nurse"}\n'),
          'data/test.parquet': { content: pseudoRandomBytes(5000, 3), lfs: true },
        },
      },
    },
  });
});

afterAll(async () => {
  await hub.stop();
  setQuiet(false);
});

beforeEach(() => {
  hub.reset();
  home = mkdtempSync(join(tmpdir(), 'sae-eraser-hub-'));
  restoreEnv = useHubEnv(hub.url, home);
});

afterEach(() => {
  restoreEnv();
  rmSync(home, { recursive: true, force: true });
});

describe('environment', () => {
  it('locates the cache like huggingface_hub', () => {
    delete process.env.HF_HOME;
    expect(hubCacheDir()).toBe(join(homedir(), '.cache', 'huggingface', 'hub'));
    process.env.XDG_CACHE_HOME = '/tmp/xdg';
    expect(hubCacheDir()).toBe('/tmp/xdg/huggingface/hub');
    process.env.HF_HOME = '/tmp/hf-home';
    expect(hubCacheDir()).toBe('/tmp/hf-home/hub');
    process.env.HF_HUB_CACHE = '/tmp/hf-hub-cache';
    expect(hubCacheDir()).toBe('/tmp/hf-hub-cache');
  });

  it('reads HF_HUB_OFFLINE, HF_ENDPOINT and the token sources', () => {
    for (const v of ['1', 'ON', 'yes', 'True']) {
      process.env.HF_HUB_OFFLINE = v;
      expect(hubOffline()).toBe(true);
    }
    for (const v of ['0', 'false', '']) {
      process.env.HF_HUB_OFFLINE = v;
      expect(hubOffline()).toBe(false);
    }
    process.env.HF_ENDPOINT = 'http://mirror.example/hf/';
    expect(hubEndpoint()).toBe('http://mirror.example/hf');
    delete process.env.HF_ENDPOINT;
    expect(hubEndpoint()).toBe('https://huggingface.co');

    expect(hubToken()).toBeUndefined();
    writeFileSync(join(home, 'token'), 'file-token\n');
    expect(hubToken()).toBe('file-token');
    process.env.HF_TOKEN = 'env-token';
    expect(hubToken()).toBe('env-token');
  });

  it('names repos, etags and patterns like huggingface_hub', () => {
    expect(repoFolderName('EleutherAI/pythia-70m-deduped')).toBe('models--EleutherAI--pythia-70m-deduped');
    expect(repoFolderName('LabHC/bias_in_bios', 'dataset')).toBe('datasets--LabHC--bias_in_bios');
    expect(repoFolderName('gpt2')).toBe('models--gpt2');
    expect(() => repoFolderName('../etc')).toThrow(/invalid hub repo id/);
    expect(normalizeEtag('"abc123"')).toBe('abc123');
    expect(normalizeEtag('W/"abc123"')).toBe('abc123');
    expect(fnmatchRegExp('*.json').test('sub/a.json')).toBe(true);
    expect(fnmatchRegExp('*.json').test('a.jsonl')).toBe(false);
    expect(fnmatchRegExp('model-0000[!2]*').test('model-00001-of-00002.safetensors')).toBe(true);
    expect(fnmatchRegExp('model-0000[!2]*').test('model-00002-of-00002.safetensors')).toBe(false);
    expect(fnmatchRegExp('a+b?.txt').test('a+bc.txt')).toBe(true);
    expect(parseRepoSpec('acme/tiny@refs/pr/1')).toEqual({ repo: 'acme/tiny', revision: 'refs/pr/1' });
    expect(() => parseRepoSpec('not a repo')).toThrow(/neither an existing folder nor a hub repo id/);
  });
});

describe('hubDownload', () => {
  it('stores a plain file in the huggingface_hub layout and reuses it', async () => {
    const content = tinyMain['config.json']!.content;
    const path = await hubDownload({ repo: 'acme/tiny', file: 'config.json' });
    const etag = gitBlobSha1(content);
    expect(path).toBe(join(storage(), 'snapshots', C_MAIN, 'config.json'));
    expect(readFileSync(path).equals(content)).toBe(true);
    expect(lstatSync(path).isSymbolicLink()).toBe(true);
    expect(readlinkSync(path)).toBe(`../../blobs/${etag}`);
    expect(readFileSync(join(storage(), 'refs', 'main'), 'utf8')).toBe(C_MAIN);
    expect(readdirSync(join(storage(), 'blobs'))).toEqual([etag]);
    expect(hub.requests('hub', '/resolve/').map((r) => r.method)).toEqual(['HEAD', 'GET']);
    const head = hub.requests('hub')[0]!;
    expect(head.url).toBe('/acme/tiny/resolve/main/config.json');
    expect(head.headers['accept-encoding']).toBe('identity');
    expect(head.headers.authorization).toBeUndefined();

    hub.reset();
    expect(await hubDownload({ repo: 'acme/tiny', file: 'config.json' })).toBe(path);
    expect(hub.log.map((r) => r.method)).toEqual(['HEAD']);

    hub.reset();
    expect(await hubDownload({ repo: 'acme/tiny', file: 'config.json', revision: C_MAIN })).toBe(path);
    expect(hub.log).toEqual([]);
    expect(cachedFile({ repo: 'acme/tiny', file: 'config.json' })).toBe(path);
    expect(cachedFile({ repo: 'acme/tiny', file: 'vocab.txt' })).toBeUndefined();
  });

  it('links nested files relative to their depth', async () => {
    const path = await hubDownload({ repo: 'acme/tiny', file: 'sub/notes.txt' });
    expect(path).toBe(join(storage(), 'snapshots', C_MAIN, 'sub', 'notes.txt'));
    expect(readlinkSync(path)).toBe(`../../../blobs/${gitBlobSha1(tinyMain['sub/notes.txt']!.content)}`);
    expect(readFileSync(path, 'utf8')).toBe('nested file\n');
  });

  it('stores an LFS file behind an absolute same-origin redirect under its sha256, token kept', async () => {
    hub.faults.redirect = 'absolute';
    const path = await hubDownload({ repo: 'acme/tiny', file: 'model.safetensors', token: 'tok-1' });
    const sha = sha256Hex(weights);
    expect(readFileSync(path).equals(weights)).toBe(true);
    expect(readlinkSync(path)).toBe(`../../blobs/${sha}`);
    expect(readdirSync(join(storage(), 'blobs'))).toEqual([sha]);
    const blobGets = hub.requests('hub', '/lfs-blobs/');
    expect(blobGets.map((r) => r.method)).toEqual(['GET']);
    expect(blobGets[0]!.headers.authorization).toBe('Bearer tok-1');
  });

  it('follows a relative LFS redirect, keeping the hub headers of the redirect', async () => {
    hub.faults.redirect = 'relative';
    const path = await hubDownload({ repo: 'acme/tiny', file: 'model.safetensors' });
    expect(readFileSync(path).equals(weights)).toBe(true);
    expect(readlinkSync(path)).toBe(`../../blobs/${sha256Hex(weights)}`);
    expect(hub.requests('hub', '/lfs-blobs/').map((r) => r.method)).toEqual(['HEAD', 'GET']);
  });

  it('sends HF_TOKEN to the hub but never to a CDN on another origin', async () => {
    hub.faults.redirect = 'cdn';
    process.env.HF_TOKEN = 'env-token';
    const path = await hubDownload({ repo: 'acme/tiny', file: 'model.safetensors' });
    expect(readFileSync(path).equals(weights)).toBe(true);
    const hubRequests = hub.requests('hub');
    const cdnRequests = hub.requests('cdn');
    expect(hubRequests.length).toBeGreaterThan(0);
    expect(cdnRequests.length).toBeGreaterThan(0);
    for (const r of hubRequests) expect(r.headers.authorization).toBe('Bearer env-token');
    for (const r of cdnRequests) expect(r.headers.authorization).toBeUndefined();
  });

  it('reads a private repo with the token and names repo, file and HF_TOKEN without it', async () => {
    await expectHubError(hubDownload({ repo: 'acme/private', file: 'config.json' }), 'repo-not-found', 'acme/private', 'config.json', 'HF_TOKEN', '401');
    process.env.HF_TOKEN = 'secret-token';
    const path = await hubDownload({ repo: 'acme/private', file: 'config.json' });
    expect(readFileSync(path, 'utf8')).toBe('{"private": true}');
  });

  it('gives clear 404 errors and caches the absence of a file', async () => {
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'missing.json' }), 'entry-not-found', 'missing.json', 'acme/tiny', '404');
    expect(existsSync(join(storage(), '.no_exist', C_MAIN, 'missing.json'))).toBe(true);
    expect(readFileSync(join(storage(), 'refs', 'main'), 'utf8')).toBe(C_MAIN);
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'config.json', revision: 'nope' }), 'revision-not-found', '"nope"', 'acme/tiny');
    await expectHubError(hubDownload({ repo: 'acme/absent', file: 'config.json' }), 'repo-not-found', 'acme/absent', 'config.json');
    // Offline, the cached absence is reported as such.
    process.env.HF_HUB_OFFLINE = '1';
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'missing.json' }), 'not-cached', 'does not exist at commit');
  });

  it('retries a 503 from the hub', async () => {
    hub.faults.unavailable = 2;
    const path = await hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST });
    expect(readFileSync(path, 'utf8')).toBe('[PAD]\n[UNK]\nhello\n');
    expect(hub.requests('hub', '/resolve/').filter((r) => r.method === 'HEAD')).toHaveLength(3);
  });

  it('writes refs for a tag and shares blobs between commits', async () => {
    const v1Config = await hubDownload({ repo: 'acme/tiny', file: 'config.json', revision: 'v1' });
    expect(v1Config).toBe(join(storage(), 'snapshots', C_V1, 'config.json'));
    expect(readFileSync(v1Config, 'utf8')).toContain('"hidden_size": 4');
    expect(readFileSync(join(storage(), 'refs', 'v1'), 'utf8')).toBe(C_V1);

    const atV1 = await hubDownload({ repo: 'acme/tiny', file: 'model.safetensors', revision: 'v1' });
    hub.reset();
    const atMain = await hubDownload({ repo: 'acme/tiny', file: 'model.safetensors', revision: 'main' });
    expect(atMain).not.toBe(atV1);
    expect(readlinkSync(atMain)).toBe(readlinkSync(atV1));
    expect(hub.requests('hub', '/lfs-blobs/')).toEqual([]); // the blob was already there
    expect(readdirSync(join(storage(), 'snapshots')).sort()).toEqual([C_MAIN, C_V1].sort());
  });
});

describe('resumable downloads', () => {
  it('resumes a dropped connection with a Range request and gets identical bytes', async () => {
    hub.faults.dropAfter = { bytes: 100_000, times: 1 };
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
    const gets = hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET');
    expect(gets).toHaveLength(2);
    expect(gets[0]!.headers.range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.headers.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(100_000);
    expect(readdirSync(join(storage('models--acme--big'), 'blobs'))).toEqual([sha256Hex(bigBlob)]);
  });

  it('gives up after bounded retries keeping a resumable .incomplete, and the next run resumes it', async () => {
    hub.faults.dropAfter = { bytes: 50_000, times: 1 };
    hub.faults.dropRanged = 1000;
    const sha = sha256Hex(bigBlob);
    const incomplete = join(storage('models--acme--big'), 'blobs', `${sha}.incomplete`);
    const err = await expectHubError(
      hubDownload({ repo: 'acme/big', file: 'blob.bin', retries: 2, retryDelayMs: 1 }),
      'download',
      'blob.bin',
      'acme/big',
      incomplete,
    );
    expect(err.message).toMatch(/next run resumes/);
    const kept = statSync(incomplete).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(50_000);
    expect(hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET').length).toBeLessThanOrEqual(4);
    expect(existsSync(join(storage('models--acme--big'), 'snapshots', fakeCommit('big'), 'blob.bin'))).toBe(false);

    hub.reset();
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
    const gets = hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET');
    expect(gets.map((r) => r.headers.range)).toEqual([`bytes=${kept}-`]);
    expect(existsSync(incomplete)).toBe(false);
  });

  it('times out a stalled transfer and resumes it', async () => {
    hub.faults.stallAfter = { bytes: 70_000, times: 1 };
    process.env.HF_HUB_DOWNLOAD_TIMEOUT = '0.3';
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
    const gets = hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET');
    expect(gets).toHaveLength(2);
    expect(gets[1]!.headers.range).toMatch(/^bytes=\d+-$/);
  });

  it('downloads a blob once when several callers want it at the same time', async () => {
    const paths = await Promise.all([1, 2, 3].map(() => hubDownload({ repo: 'acme/large', file: 'weights.bin', ...FAST })));
    expect(new Set(paths).size).toBe(1);
    expect(readFileSync(paths[0]!).equals(largeBlob)).toBe(true);
    expect(hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET')).toHaveLength(1);
    expect(readdirSync(join(home, 'hub', '.locks', 'models--acme--large'))).toEqual([]);
  });

  it('takes over a download lock left by a dead process', async () => {
    const lockDir = join(home, 'hub', '.locks', 'models--acme--big');
    mkdirSync(lockDir, { recursive: true });
    // A pid far above any default pid_max, on this host: its owner cannot be alive.
    writeFileSync(join(lockDir, `${sha256Hex(bigBlob)}.sae-eraser.lock`), `99999999 ${hostname()}\n`);
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
    expect(readdirSync(lockDir)).toEqual([]);
  });

  it('restarts from zero when the server ignores the Range header', async () => {
    hub.faults.dropAfter = { bytes: 60_000, times: 1 };
    hub.faults.ignoreRange = true;
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
  });

  it('rejects a wrong size with a clear error and leaves nothing in snapshots or blobs', async () => {
    hub.faults.sizeDelta = 10;
    const err = await expectHubError(
      hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST }),
      'download',
      'Consistency check failed',
      'blob.bin',
      String(bigBlob.length + 10),
    );
    expect(err.message).toContain(String(bigBlob.length));
    const store = storage('models--acme--big');
    expect(existsSync(join(store, 'snapshots', fakeCommit('big'), 'blob.bin'))).toBe(false);
    expect(readdirSync(join(store, 'blobs'))).toEqual([]);

    hub.reset();
    hub.faults.sizeDelta = -5; // a plain (git) file announced 5 bytes short
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }), 'download', 'Consistency check failed', 'vocab.txt');
    expect(existsSync(join(storage(), 'snapshots', C_MAIN, 'vocab.txt'))).toBe(false);
    expect(readdirSync(join(storage(), 'blobs'))).toEqual([]);
  });

  it('rejects an LFS file whose sha256 does not match its etag', async () => {
    const claimed = sha256Hex(Buffer.from('something else'));
    hub.faults.fakeEtag = claimed;
    await expectHubError(hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST }), 'download', 'sha256', sha256Hex(bigBlob), claimed);
    const store = storage('models--acme--big');
    expect(existsSync(join(store, 'snapshots', fakeCommit('big'), 'blob.bin'))).toBe(false);
    expect(readdirSync(join(store, 'blobs'))).toEqual([]);
  });
});

describe('server faults found by fuzzing (test/fuzz/hub.test.ts)', () => {
  const bigStore = (): string => storage('models--acme--big');
  const bigPointer = (): string => join(bigStore(), 'snapshots', fakeCommit('big'), 'blob.bin');
  /** Files in blobs/ (none when the folder was never made). */
  const blobsOf = (store: string): string[] => (existsSync(join(store, 'blobs')) ? readdirSync(join(store, 'blobs')) : []);

  it('follows a protocol-relative LFS redirect (//host/path) to another origin, without the token', async () => {
    hub.faults.redirect = 'protocol-relative';
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', token: 'tok-1' });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
    const cdnGets = hub.requests('cdn', '/lfs-blobs/');
    expect(cdnGets.map((r) => r.method)).toEqual(['GET']);
    expect(cdnGets[0]!.headers.authorization).toBeUndefined();
  });

  it('names a redirect to something that is not a URL, on the HEAD and on the GET', async () => {
    hub.script.set(0, { kind: 'redirect', to: 'malformed' });
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }), 'bad-response', 'vocab.txt', '"http://[::1"', 'not a valid URL');
    hub.reset();
    hub.script.set(1, { kind: 'redirect', to: 'malformed' });
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }), 'download', 'vocab.txt', 'not a valid URL');
    expect(blobsOf(storage())).toEqual([]);
  });

  it('checks a git file against its git blob sha1 etag, so corrupted bytes never enter the cache', async () => {
    hub.script.set(1, { kind: 'corrupt', at: 5, xor: 0x20 }); // the GET after the HEAD
    const content = tinyMain['config.json']!.content;
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'config.json', ...FAST }), 'download', 'config.json', 'git blob sha1', gitBlobSha1(content));
    expect(existsSync(join(storage(), 'snapshots', C_MAIN, 'config.json'))).toBe(false);
    expect(blobsOf(storage())).toEqual([]);
    hub.reset();
    expect(readFileSync(await hubDownload({ repo: 'acme/tiny', file: 'config.json', ...FAST })).equals(content)).toBe(true);
  });

  it('checks a git file cut short under a matching wrong size', async () => {
    hub.faults.sizeDelta = -3; // the HEAD announces 3 bytes less...
    hub.script.set(1, { kind: 'length', delta: -3 }); // ...and the GET sends just those
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }), 'download', 'vocab.txt', 'git blob sha1');
    expect(blobsOf(storage())).toEqual([]);
  });

  it('fetches again from zero when the bytes an earlier run left are wrong', async () => {
    const sha = sha256Hex(bigBlob);
    const incomplete = join(bigStore(), 'blobs', `${sha}.incomplete`);
    mkdirSync(dirname(incomplete), { recursive: true });
    writeFileSync(incomplete, pseudoRandomBytes(50_000, 99)); // same length as a real prefix, other bytes
    const path = await hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST });
    expect(readFileSync(path).equals(bigBlob)).toBe(true);
    const gets = hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET');
    expect(gets.map((r) => r.headers.range)).toEqual(['bytes=50000-', undefined]);
    expect(blobsOf(bigStore())).toEqual([sha]);

    hub.reset(); // the same for a git file, checked through its git blob sha1
    const vocab = tinyMain['vocab.txt']!.content;
    mkdirSync(join(storage(), 'blobs'), { recursive: true });
    writeFileSync(join(storage(), 'blobs', `${gitBlobSha1(vocab)}.incomplete`), Buffer.from('[XYZ]'));
    expect(readFileSync(await hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST })).equals(vocab)).toBe(true);
  });

  it('refuses etags and commits that are not the hub hex forms, and a HEAD without a size', async () => {
    hub.script.set(0, { kind: 'header', name: 'etag', value: '"abc-1"' });
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }), 'bad-response', 'vocab.txt', 'invalid etag "abc-1"');
    hub.reset();
    hub.script.set(0, { kind: 'header', name: 'x-repo-commit', value: 'main' });
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }), 'bad-response', 'vocab.txt', 'invalid commit "main"');
    hub.reset();
    hub.script.set(0, { kind: 'header', name: 'x-linked-size', value: null });
    await expectHubError(hubDownload({ repo: 'acme/big', file: 'blob.bin', ...FAST }), 'bad-response', 'blob.bin', 'no size');
    expect(existsSync(join(home, 'hub', 'models--acme--tiny', 'snapshots'))).toBe(false);
    expect(existsSync(bigPointer())).toBe(false);
    expect(blobsOf(bigStore())).toEqual([]);
  });

  it('refuses an answer for another commit than the one asked for, so a snapshot folder is never missing a file', async () => {
    hub.script.set(1, { kind: 'header', name: 'x-repo-commit', value: C_V1 }); // the HEAD after the listing
    await expectHubError(snapshotDownload({ repo: 'acme/tiny', allowPatterns: ['config.json'], ...FAST }), 'bad-response', 'config.json', C_MAIN, C_V1);
    expect(existsSync(join(storage(), 'snapshots', C_V1))).toBe(false);
    expect(existsSync(join(storage(), 'refs', C_MAIN))).toBe(false);
  });

  it('does not link a cached blob whose size differs from what the hub announced under its etag', async () => {
    await hubDownload({ repo: 'acme/tiny', file: 'model.safetensors', ...FAST });
    // vocab.txt announced under the etag of the cached model.safetensors blob (another size).
    hub.reset();
    hub.script.set(0, { kind: 'header', name: 'etag', value: `"${sha256Hex(weights)}"` });
    await expectHubError(
      hubDownload({ repo: 'acme/tiny', file: 'vocab.txt', ...FAST }),
      'bad-response',
      'vocab.txt',
      sha256Hex(weights),
      `${tinyMain['vocab.txt']!.content.length}`,
      `${weights.length} bytes`,
    );
    expect(existsSync(join(storage(), 'snapshots', C_MAIN, 'vocab.txt'))).toBe(false);
  });

  it('removes an empty .incomplete and says no bytes arrived when every attempt stalls', async () => {
    process.env.HF_HUB_DOWNLOAD_TIMEOUT = '0.2';
    for (const i of [1, 2, 3]) hub.script.set(i, { kind: 'stall', when: 'before-headers', at: 0 });
    const err = await expectHubError(
      hubDownload({ repo: 'acme/big', file: 'blob.bin', retries: 2, retryDelayMs: 1 }),
      'download',
      'blob.bin',
      'no bytes arrived',
      'timeout',
    );
    expect(err.message).not.toContain('resumes');
    expect(blobsOf(bigStore())).toEqual([]);
  });

  it('refuses a listing with file names that are not relative paths, or invalid UTF-8, naming the listing', async () => {
    const listing = (names: string[]): Buffer => Buffer.from(JSON.stringify({ sha: C_MAIN, siblings: names.map((rfilename) => ({ rfilename })) }));
    for (const bad of ['', '../escape.txt', 'a//b', '/abs']) {
      hub.script.set(0, { kind: 'body', body: listing(['config.json', bad]) });
      await expectHubError(listRepoFiles({ repo: 'acme/tiny' }), 'bad-response', 'siblings[1].rfilename', '/api/models/acme/tiny/revision/main');
      hub.reset();
    }
    hub.script.set(0, {
      kind: 'body',
      body: Buffer.concat([listing(['config.json']).subarray(0, 10), Buffer.from([0xff]), listing(['config.json']).subarray(10)]),
    });
    await expectHubError(listRepoFiles({ repo: 'acme/tiny' }), 'bad-response', 'invalid UTF-8', '/api/models/acme/tiny/revision/main');
    hub.reset();
    hub.script.set(0, { kind: 'body', body: listing(['config.json', 'sub/notes.txt']) });
    expect(await listRepoFiles({ repo: 'acme/tiny' })).toEqual(['config.json', 'sub/notes.txt']);
  });

  it('refuses an endless listing at 64 MiB instead of reading it all', async () => {
    hub.script.set(0, { kind: 'endless' });
    await expectHubError(listRepoFiles({ repo: 'acme/tiny' }), 'bad-response', 'larger than 67108864 bytes', '/api/models/acme/tiny/revision/main');
  });

  // Linux drops connection attempts beyond a full accept queue without an answer (others may refuse them).
  it.skipIf(process.platform !== 'linux')(
    'times out a connection the server never accepts (HF_HUB_ETAG_TIMEOUT covers connecting)',
    async () => {
      // A listener whose event loop is blocked accepts nothing; once the kernel's accept queue is
      // full, further connection attempts get no answer at all.
      const child = spawn(
        process.execPath,
        [
          '-e',
          `const s = require('node:net').createServer();
         s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
           process.stdout.write(s.address().port + '\\n');
           Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
         });`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const fillers: Socket[] = [];
      try {
        const port = await new Promise<number>((resolve, reject) => {
          child.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
          child.once('error', reject);
        });
        const connected = await Promise.all(
          Array.from({ length: 6 }, () => {
            const socket = connect(port, '127.0.0.1');
            fillers.push(socket);
            return new Promise<boolean>((resolve) => {
              socket.once('connect', () => resolve(true));
              socket.setTimeout(500, () => resolve(false));
              socket.once('error', () => resolve(false));
            });
          }),
        );
        expect(connected, 'the accept queue must be full for this test to mean anything').toContain(false);
        process.env.HF_HUB_ETAG_TIMEOUT = '0.2';
        await expectHubError(
          hubDownload({ repo: 'acme/tiny', file: 'config.json', endpoint: `http://127.0.0.1:${port}`, retries: 1, retryDelayMs: 1 }),
          'network',
          'config.json',
          'cannot connect to',
          'within 200 ms (timeout)',
        );
      } finally {
        for (const socket of fillers) socket.destroy();
        child.kill();
      }
    },
    30_000,
  );
});

describe('offline and unreachable hub', () => {
  it('serves cached files offline without any request, and names what is missing', async () => {
    const path = await hubDownload({ repo: 'acme/tiny', file: 'config.json' });
    hub.reset();
    process.env.HF_HUB_OFFLINE = '1';
    expect(await hubDownload({ repo: 'acme/tiny', file: 'config.json' })).toBe(path);
    await expectHubError(
      hubDownload({ repo: 'acme/tiny', file: 'vocab.txt' }),
      'not-cached',
      'vocab.txt',
      'acme/tiny',
      'HF_HUB_OFFLINE',
      join(storage(), 'snapshots', C_MAIN, 'vocab.txt'),
    );
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'config.json', revision: 'v1' }), 'not-cached', 'revision "v1"', join(storage(), 'refs', 'v1'));
    await expectHubError(listRepoFiles({ repo: 'acme/tiny' }), 'not-cached', 'HF_HUB_OFFLINE');
    expect(hub.log).toEqual([]);
  });

  it('falls back to the cache when the hub cannot be reached', async () => {
    const path = await hubDownload({ repo: 'acme/tiny', file: 'config.json' });
    process.env.HF_ENDPOINT = DEAD_ENDPOINT;
    expect(await hubDownload({ repo: 'acme/tiny', file: 'config.json' })).toBe(path);
    await expectHubError(hubDownload({ repo: 'acme/tiny', file: 'tokenizer.json' }), 'network', 'tokenizer.json', 'ECONNREFUSED', 'not in the hub cache');
  });
});

describe('listing, snapshots and datasets', () => {
  it('lists repo files through the revision API', async () => {
    expect((await listRepoFiles({ repo: 'acme/tiny', revision: 'main' })).sort()).toEqual(Object.keys(tinyMain).sort());
    expect(hub.requests('hub')[0]!.url).toBe('/api/models/acme/tiny/revision/main');
  });

  it('downloads a filtered snapshot and records the ref', async () => {
    const folder = await snapshotDownload({ repo: 'acme/tiny', revision: 'main', allowPatterns: ['*.json', 'sub/'] });
    expect(folder).toBe(join(storage(), 'snapshots', C_MAIN));
    const files = readdirSync(folder, { recursive: true, encoding: 'utf8' }).filter((f) => !statSync(join(folder, f)).isDirectory());
    expect(files.sort()).toEqual(['config.json', join('sub', 'notes.txt'), 'tokenizer.json'].sort());
    expect(readFileSync(join(storage(), 'refs', 'main'), 'utf8')).toBe(C_MAIN);
    // Files are fetched at the resolved commit, so a moving branch cannot mix two commits.
    for (const r of hub.requests('hub', '/resolve/')) expect(r.url).toContain(`/resolve/${C_MAIN}/`);

    process.env.HF_HUB_OFFLINE = '1';
    expect(await snapshotDownload({ repo: 'acme/tiny', revision: 'main' })).toBe(folder);
    await expectHubError(snapshotDownload({ repo: 'acme/tiny', revision: 'v1' }), 'not-cached', 'acme/tiny', 'v1');
  });

  it('downloads dataset files into datasets--owner--name', async () => {
    const path = await resolveDatasetFile('acme/bios', 'data/train.jsonl');
    expect(path).toBe(join(storage('datasets--acme--bios'), 'snapshots', C_BIOS, 'data', 'train.jsonl'));
    expect(readFileSync(path, 'utf8')).toContain('nurse');
    expect(hub.requests('hub')[0]!.url).toBe('/datasets/acme/bios/resolve/main/data/train.jsonl');
    const parquet = await hubDownload({ repo: 'acme/bios', repoType: 'dataset', file: 'data/test.parquet' });
    expect(readlinkSync(parquet)).toBe(`../../../blobs/${sha256Hex(pseudoRandomBytes(5000, 3))}`);
    hub.reset();
    expect((await listRepoFiles({ repo: 'acme/bios', repoType: 'dataset', revision: 'main' })).sort()).toEqual(['data/test.parquet', 'data/train.jsonl']);
    expect(hub.requests('hub')[0]!.url).toBe('/api/datasets/acme/bios/revision/main');
    await expectHubError(resolveDatasetFile('acme/tiny', 'config.json'), 'repo-not-found', 'dataset repo acme/tiny');
  });
});

describe('resolveModelDir', () => {
  it('returns a local folder as is, and rejects one without config.json', async () => {
    const dir = join(home, 'local-model');
    mkdirSync(dir);
    await expect(resolveModelDir(dir)).rejects.toThrow(`model folder ${dir} has no config.json`);
    writeFileSync(join(dir, 'config.json'), '{}');
    expect(await resolveModelDir(dir)).toBe(dir);
    await expect(resolveModelDir(join(dir, 'config.json'))).rejects.toThrow(/is a file/);
    await expect(resolveModelDir(join(home, 'no such', 'folder'))).rejects.toThrow(/neither an existing folder nor a hub repo id/);
    expect(hub.log).toEqual([]);
  });

  it('fetches config, tokenizer files present in the repo and model.safetensors', async () => {
    const folder = await resolveModelDir('acme/tiny');
    expect(folder).toBe(join(storage(), 'snapshots', C_MAIN));
    expect(readdirSync(folder).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt']);
    expect(readFileSync(join(folder, 'model.safetensors')).equals(weights)).toBe(true);

    hub.reset();
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveModelDir('acme/tiny')).toBe(folder);
    expect(hub.log).toEqual([]);
    await expectHubError(resolveModelDir('acme/tiny@v1'), 'not-cached', 'acme/tiny', '"v1"');
  });

  it('fetches a sharded checkpoint through its index, at a pinned revision', async () => {
    const folder = await resolveModelDir('acme/sharded@main', { files: ['special_tokens_map.json'] });
    expect(folder).toBe(join(storage('models--acme--sharded'), 'snapshots', C_SHARDED));
    expect(readdirSync(folder).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'special_tokens_map.json',
      'tokenizer.json',
    ]);
    expect(readFileSync(join(folder, 'model-00002-of-00002.safetensors')).equals(shard2)).toBe(true);

    // With the hub unreachable the cached snapshot is used (the index says which shards to expect).
    process.env.HF_ENDPOINT = DEAD_ENDPOINT;
    expect(await resolveModelDir('acme/sharded@main')).toBe(folder);
    rmSync(join(folder, 'model-00001-of-00002.safetensors'));
    await expectHubError(resolveModelDir('acme/sharded@main'), 'not-cached', 'model-00001-of-00002.safetensors', 'hub could not be asked');
  });

  it('explains a repo without safetensors weights or without a required file', async () => {
    await expectHubError(resolveModelDir('acme/nosafe'), 'entry-not-found', 'acme/nosafe', 'pytorch_model.bin', 'safetensors');
    await expectHubError(resolveModelDir('acme/tiny', { files: ['generation_config.json'] }), 'entry-not-found', 'generation_config.json');
  });
});

// ---------------------------------------------------------------------------------------------
// Interoperability with Python's huggingface_hub (the project's reference venv), when present.

const python = join(projectRoot(), '.venv-ref', 'bin', 'python');
const hasPython = existsSync(python);

/** Downloads with huggingface_hub (or reads offline) and prints {file: [path, sha256]} as JSON. */
const PY_DOWNLOAD = `
import hashlib, json, sys
from huggingface_hub import hf_hub_download
repo, revisions_files = sys.argv[1], json.loads(sys.argv[2])
out = {}
for revision, filename in revisions_files:
    path = hf_hub_download(repo, filename, revision=revision)
    out[revision + ":" + filename] = [path, hashlib.sha256(open(path, "rb").read()).hexdigest()]
print(json.dumps(out))
`;
import { skipWithout } from '../require.js';

/** Every entry under a hub cache (minus the lock folder): path -> symlink target or content hash. */
function cacheTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
    if (entry.split('/')[0] === '.locks') continue;
    const full = join(root, entry);
    const st = lstatSync(full);
    if (st.isSymbolicLink()) out[entry] = `-> ${readlinkSync(full)}`;
    else if (st.isFile()) out[entry] = createHash('sha256').update(readFileSync(full)).digest('hex');
    else out[entry] = 'dir';
  }
  return out;
}

describe.skipIf(skipWithout(!hasPython, `the huggingface_hub interoperability test needs ${python} (scripts/setup-python-ref.sh)`))(
  'interoperability with huggingface_hub',
  () => {
    const wanted: [string, string][] = [
      ['main', 'config.json'],
      ['main', 'model.safetensors'],
      ['main', 'sub/notes.txt'],
      ['v1', 'config.json'],
    ];

    async function runPython(hfHome: string, offline: boolean, repo = 'acme/tiny', files = wanted): Promise<Record<string, [string, string]>> {
      const { stdout } = await promisify(execFile)(python, ['-c', PY_DOWNLOAD, repo, JSON.stringify(files)], {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: home,
          HF_HOME: hfHome,
          HF_ENDPOINT: hub.url,
          HF_HUB_OFFLINE: offline ? '1' : '0',
          HF_HUB_DISABLE_TELEMETRY: '1',
          HF_HUB_DISABLE_PROGRESS_BARS: '1',
          HF_HUB_ENABLE_HF_TRANSFER: '0',
          HF_HUB_DISABLE_XET: '1',
        },
        timeout: 120_000,
      });
      return JSON.parse(stdout) as Record<string, [string, string]>;
    }

    it('builds the same cache tree as huggingface_hub, and each reads the other offline', async () => {
      hub.faults.redirect = 'absolute';
      const pyHome = join(home, 'python');
      const nodeHome = join(home, 'node');

      const fromPython = await runPython(pyHome, false);
      process.env.HF_HOME = nodeHome;
      for (const [revision, file] of wanted) await hubDownload({ repo: 'acme/tiny', file, revision });

      const pyTree = cacheTree(join(pyHome, 'hub'));
      const nodeTree = cacheTree(join(nodeHome, 'hub'));
      expect(nodeTree).toEqual(pyTree);
      expect(Object.keys(pyTree)).toContain(join('models--acme--tiny', 'refs', 'v1'));

      // huggingface_hub, offline, on the cache written here.
      hub.reset();
      const pyOnNode = await runPython(nodeHome, true);
      expect(hub.log).toEqual([]);
      for (const [key, [path, sha]] of Object.entries(pyOnNode)) {
        expect(relative(nodeHome, path).startsWith('hub')).toBe(true);
        expect(sha).toBe(fromPython[key]![1]);
      }

      // And this client, offline, on the cache huggingface_hub wrote.
      process.env.HF_HOME = pyHome;
      process.env.HF_HUB_OFFLINE = '1';
      for (const [revision, file] of wanted) {
        const path = await hubDownload({ repo: 'acme/tiny', file, revision });
        expect(path).toBe(fromPython[`${revision}:${file}`]![0]);
      }
      expect(hub.log).toEqual([]);
    }, 180_000);

    it('leaves a partial blob that huggingface_hub resumes with a Range request', async () => {
      hub.faults.dropAfter = { bytes: 50_000, times: 1 };
      hub.faults.dropRanged = 1000;
      await expectHubError(hubDownload({ repo: 'acme/big', file: 'blob.bin', retries: 1, retryDelayMs: 1 }), 'download', 'next run resumes');
      const incomplete = join(storage('models--acme--big'), 'blobs', `${sha256Hex(bigBlob)}.incomplete`);
      const kept = statSync(incomplete).size;
      expect(kept).toBeGreaterThan(0);

      hub.reset();
      const fromPython = await runPython(home, false, 'acme/big', [['main', 'blob.bin']]);
      expect(fromPython['main:blob.bin']![1]).toBe(sha256Hex(bigBlob));
      const gets = hub.requests('hub', '/lfs-blobs/').filter((r) => r.method === 'GET');
      expect(gets.map((r) => r.headers.range)).toEqual([`bytes=${kept}-`]);
    }, 180_000);
  },
);
