/**
 * Fuzzing the hub client against the local fake hub (test/io/hub-server.ts): fast-check scripts, per
 * request, what the server does wrong (truncated or endless bodies, Content-Length off, mangled
 * ETag / X-Linked-Etag / X-Repo-Commit / X-Linked-Size / Location headers, bodies that do not hash
 * to their etag, mangled listing JSON, wrong status codes, redirect loops and redirects to other
 * hosts, dribbled bodies, stalled connections, bytes that are not HTTP).
 *
 * Property: each download either puts exactly the right bytes in the cache or fails with a clear
 * error naming the file; it never hangs (timeouts are 0.2 s here, retries bounded); it never leaves
 * a wrong file in snapshots/ or blobs/ (partial data only as a resumable `.incomplete`); the token
 * never reaches another origin; and a clean download afterwards succeeds.
 */
import fc from 'fast-check';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hubDownload, listRepoFiles, resolveModelDir, snapshotDownload, type HubOptions } from '../../src/io/hub.js';
import { setQuiet } from '../../src/util/progress.js';
import {
  FAULT_HEADERS,
  FakeHub,
  fakeCommit,
  gitBlobSha1,
  pseudoRandomBytes,
  sha256Hex,
  type Fault,
  type FakeFile,
  type RedirectTarget,
} from '../io/hub-server.js';
import { FuzzTally, fuzzParams, fuzzRuns } from './budget.js';

const REPO = 'fuzz/repo';
const COMMIT = fakeCommit('fuzz-main');
const TOKEN = 'fuzz-token';
/** Files of distinct sizes (a blob of another file is then told apart by its size too). */
const FILES: Record<string, FakeFile> = {
  'config.json': { content: Buffer.from('{"model_type": "bert", "hidden_size": 8, "vocab_size": 30}\n') },
  'nested/dir/notes.txt': { content: pseudoRandomBytes(3000, 5) },
  'empty.txt': { content: Buffer.alloc(0) },
  'model.safetensors': { content: pseudoRandomBytes(24_000, 6), lfs: true },
  'weights/extra.bin': { content: pseudoRandomBytes(9_000, 7), lfs: true },
};
const NAMES = Object.keys(FILES);
/** A sharded model repo for resolveModelDir (listing, optional files, index, shards, cache fallback). */
const MODEL_REPO = 'fuzz/model';
const MODEL_COMMIT = fakeCommit('fuzz-model');
const SHARDS = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
const MODEL_FILES: Record<string, FakeFile> = {
  'config.json': { content: Buffer.from('{"model_type": "gpt_neox"}\n') },
  'tokenizer.json': { content: Buffer.from('{"version": "1.0", "model": {"type": "BPE"}}\n') },
  'special_tokens_map.json': { content: Buffer.from('{}\n') },
  'model.safetensors.index.json': { content: Buffer.from(JSON.stringify({ weight_map: { a: SHARDS[0], b: SHARDS[1], c: SHARDS[0] } })) },
  [SHARDS[0]!]: { content: pseudoRandomBytes(12_000, 11), lfs: true },
  [SHARDS[1]!]: { content: pseudoRandomBytes(7_000, 12), lfs: true },
};
const ETAGS = NAMES.map((name) => FakeHub.etagOf(FILES[name]!));
/** The blob name each file is stored under. */
const BLOB_OF = new Map(NAMES.map((name, i) => [name, ETAGS[i]!]));
/** Generous: a download that has not settled by then hangs (timeouts here are 0.2 s). */
const HANG_MS = 30_000;
/** A test's time limit: generous per run (most take milliseconds, a stalled one a few timeouts of 0.2 s), scaled with the budget. */
const limitFor = (ciRuns: number): number => 60_000 + fuzzRuns(ciRuns) * 2_000;
const TIMEOUT_ENV = ['HF_HUB_ETAG_TIMEOUT', 'HF_HUB_DOWNLOAD_TIMEOUT', 'HF_HUB_OFFLINE'] as const;
const savedEnv = new Map(TIMEOUT_ENV.map((k) => [k, process.env[k]]));

let hub: FakeHub;

class Hang extends Error {}

/** Rejects with Hang when `promise` has not settled after HANG_MS; the timer never outlives it. */
async function watchdog<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Hang(`no result after ${HANG_MS} ms`)), HANG_MS);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

function storageOf(cacheDir: string, repo = REPO): string {
  return join(cacheDir, `models--${repo.replace('/', '--')}`);
}

/**
 * Every file in snapshots/ reads as the right bytes of the file it names; every finished blob hashes
 * to its name; nothing else but resumable `.incomplete` files sits in blobs/.
 */
function expectCacheSound(cacheDir: string, repo = REPO, files: Record<string, FakeFile> = FILES): void {
  const storage = storageOf(cacheDir, repo);
  const snapshots = join(storage, 'snapshots');
  if (existsSync(snapshots)) {
    for (const entry of readdirSync(snapshots, { recursive: true, encoding: 'utf8' })) {
      const full = join(snapshots, entry);
      if (lstatSync(full).isDirectory()) continue;
      const file = entry.split(sep).slice(1).join('/');
      expect(files[file], `unexpected snapshot entry ${entry}`).toBeDefined();
      expect(existsSync(full), `dangling pointer ${entry}`).toBe(true);
      expect(readFileSync(full).equals(files[file]!.content), `wrong bytes in ${entry}`).toBe(true);
    }
  }
  const blobs = join(storage, 'blobs');
  if (existsSync(blobs)) {
    for (const name of readdirSync(blobs)) {
      if (name.endsWith('.incomplete')) continue;
      const bytes = readFileSync(join(blobs, name));
      const actual = name.length === 64 ? sha256Hex(bytes) : gitBlobSha1(bytes);
      expect(actual, `blob ${name} does not hash to its name`).toBe(name);
    }
  }
}

function expectTokenStayedHome(): void {
  for (const r of hub.requests('cdn')) expect(r.headers.authorization, `token sent to the CDN: ${r.method} ${r.url}`).toBeUndefined();
}

function options(cacheDir: string): HubOptions {
  return { cacheDir, endpoint: hub.url, token: TOKEN, retries: 2, retryDelayMs: 1 };
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const hex = (n: number): fc.Arbitrary<string> => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));
/** Header values: dropped, well-formed but wrong, another file's etag, and junk. */
const headerValue: fc.Arbitrary<string | null> = fc.oneof(
  fc.constant(null),
  hex(40),
  hex(64),
  hex(40).map((h) => `"${h}"`),
  hex(64).map((h) => `W/"${h}"`),
  fc.constantFrom(...ETAGS, ...ETAGS.map((e) => `"${e}"`), COMMIT, fakeCommit('other')),
  fc.integer({ min: -5, max: 100_000 }).map(String),
  fc.constantFrom('', ' ', '""', 'W/', '1e3', '0x10', '99999999999999999999', '-1', 'gzip', 'bytes */5', 'bytes 0-1/2', '..', '.', 'a/b', '%00'),
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 80 }),
  fc.string({ unit: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 8 }),
);
const redirectTarget = fc.constantFrom<RedirectTarget>('self', 'self-relative', 'cdn', 'protocol-relative', 'dead', 'malformed', 'ftp');
const bytes = (min: number, max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ minLength: min, maxLength: max }).map((b) => Buffer.from(b));

const fault: fc.Arbitrary<Fault> = fc.oneof(
  fc.record({
    kind: fc.constant('status' as const),
    status: fc.constantFrom(100, 101, 200, 201, 204, 206, 301, 302, 304, 307, 400, 401, 403, 404, 408, 416, 429, 500, 502, 503, 599, 999),
    errorCode: fc.option(fc.constantFrom('EntryNotFound', 'RevisionNotFound', 'RepoNotFound', 'GatedRepo'), { nil: undefined }),
  }),
  fc.record({ kind: fc.constant('header' as const), name: fc.constantFrom(...FAULT_HEADERS), value: headerValue }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('length' as const), delta: fc.integer({ min: -50, max: 50 }).filter((d) => d !== 0) }),
  fc.record({ kind: fc.constant('corrupt' as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
  fc.record({
    kind: fc.constant('body' as const),
    body: fc.oneof(
      bytes(0, 64),
      fc.string({ maxLength: 64 }).map((s) => Buffer.from(s)),
    ),
  }),
  fc.record({ kind: fc.constant('redirect' as const), to: redirectTarget }),
  fc.record({ kind: fc.constant('dribble' as const), parts: fc.integer({ min: 2, max: 5 }), delayMs: fc.integer({ min: 0, max: 40 }) }),
  fc.record({
    kind: fc.constant('stall' as const),
    when: fc.constantFrom('before-headers' as const, 'after-headers' as const, 'mid-body' as const),
    at: fc.nat(),
  }),
  fc.record({
    kind: fc.constant('garbage' as const),
    bytes: fc.oneof(bytes(1, 40), fc.constantFrom(Buffer.from('HTTP/1.1 200\r\n\r\n'), Buffer.from('HTTP/9.9 abc\r\n'), Buffer.from('\r\n\r\n'))),
  }),
  fc.constant<Fault>({ kind: 'endless' }),
);
/** Faults for the first `maxLength` requests of a run, by index (undefined: that request is answered correctly). */
const scriptOf = (maxLength: number): fc.Arbitrary<(Fault | undefined)[]> => fc.array(fc.option(fault, { nil: undefined, freq: 3 }), { maxLength });
const script = scriptOf(6);

function applyScript(faults: readonly (Fault | undefined)[]): void {
  hub.script.clear();
  faults.forEach((f, i) => {
    if (f !== undefined) hub.script.set(i, f);
  });
}

/** What may already sit in the cache before the faulty download. */
const before = fc.oneof(
  fc.constant({ kind: 'nothing' as const }),
  fc.record({ kind: fc.constant('right-prefix' as const), length: fc.nat() }),
  fc.record({ kind: fc.constant('wrong-prefix' as const), length: fc.nat() }),
  fc.record({ kind: fc.constant('other-file' as const), file: fc.constantFrom(...NAMES) }),
  fc.constant({ kind: 'same-file' as const }),
);

/** The listing the fake hub sends for REPO at main. */
const LISTING = { id: REPO, sha: COMMIT, siblings: NAMES.map((rfilename) => ({ rfilename })) };
const LISTING_BYTES = Buffer.from(JSON.stringify(LISTING));
const badName = fc.constantFrom('', '.', '..', '../x', '/abs', 'a//b', 'a/./b', 'a\\b', 'x\0y', 'dir/', 'missing.bin');
/** Listing bodies: cut, a field or a sibling replaced, other JSON, a flipped byte, deep nesting, invalid UTF-8, a valid subset. */
const listingBody: fc.Arbitrary<Buffer> = fc.oneof(
  fc.nat().map((n) => LISTING_BYTES.subarray(0, n % LISTING_BYTES.length)),
  fc
    .record({ field: fc.constantFrom('sha', 'siblings', 'id'), value: fc.oneof(fc.jsonValue(), hex(40), fc.constant(fakeCommit('other'))) })
    .map(({ field, value }) => Buffer.from(JSON.stringify({ ...LISTING, [field]: value }))),
  fc.record({ i: fc.nat(), value: fc.jsonValue() }).map(({ i, value }) => {
    const siblings: unknown[] = [...LISTING.siblings];
    siblings[i % siblings.length] = value;
    return Buffer.from(JSON.stringify({ ...LISTING, siblings }));
  }),
  fc.record({ i: fc.nat(), name: fc.oneof(badName, fc.string({ maxLength: 20 })) }).map(({ i, name }) => {
    const siblings = LISTING.siblings.map((s, j) => (j === i % LISTING.siblings.length ? { rfilename: name } : s));
    return Buffer.from(JSON.stringify({ ...LISTING, siblings }));
  }),
  fc.json().map((text) => Buffer.from(text)),
  fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }).map(({ at, xor }) => {
    const body = Buffer.from(LISTING_BYTES);
    body[at % body.length] = body[at % body.length]! ^ xor;
    return body;
  }),
  fc.integer({ min: 1, max: 300_000 }).map((depth) => Buffer.from(`{"sha": "${COMMIT}", "siblings": ${'['.repeat(depth)}${']'.repeat(depth)}}`)),
  fc.nat().map((i) => Buffer.from(LISTING_BYTES.toString('latin1').replace(NAMES[i % NAMES.length]!, 'caf\xe9'), 'latin1')),
  fc.subarray(NAMES).map((names) => Buffer.from(JSON.stringify({ ...LISTING, siblings: names.map((rfilename) => ({ rfilename })) }))),
);

/** What a correct client makes of a listing body: its commit and files, or undefined when it must be refused. */
function expectedListing(body: Buffer): { commit: string; files: string[] } | undefined {
  let info: unknown;
  try {
    info = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body));
  } catch {
    return undefined;
  }
  if (typeof info !== 'object' || info === null || Array.isArray(info)) return undefined;
  const { sha, siblings } = info as { sha?: unknown; siblings?: unknown };
  if (typeof sha !== 'string' || !/^[0-9a-f]{40}$/.test(sha) || !Array.isArray(siblings)) return undefined;
  const files: string[] = [];
  for (const sibling of siblings as unknown[]) {
    const name = typeof sibling === 'object' && sibling !== null ? (sibling as { rfilename?: unknown }).rfilename : undefined;
    if (typeof name !== 'string' || name === '' || /[\\\0]/.test(name) || name.split('/').some((p) => p === '' || p === '.' || p === '..')) return undefined;
    files.push(name);
  }
  return { commit: sha, files };
}

// ---------------------------------------------------------------------------------------------

const downloads = new FuzzTally('hub download');
const listings = new FuzzTally('hub repo listing');
const models = new FuzzTally('hub model folder');

beforeAll(async () => {
  setQuiet(true);
  hub = await new FakeHub().start();
  hub.addRepo({ id: REPO, type: 'model', refs: { main: { commit: COMMIT, files: FILES } } });
  hub.addRepo({ id: MODEL_REPO, type: 'model', refs: { main: { commit: MODEL_COMMIT, files: MODEL_FILES } } });
  process.env.HF_HUB_ETAG_TIMEOUT = '0.2';
  process.env.HF_HUB_DOWNLOAD_TIMEOUT = '0.2';
  delete process.env.HF_HUB_OFFLINE;
});

afterAll(async () => {
  downloads.save();
  listings.save();
  models.save();
  await hub.stop();
  setQuiet(false);
  for (const [k, v] of savedEnv) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe('hub client under fuzzed server faults', () => {
  it(
    'downloads the right bytes or fails clearly, leaves a sound cache, and a clean retry succeeds',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...NAMES),
          fc.constantFrom('relative' as const, 'absolute' as const, 'cdn' as const, 'protocol-relative' as const),
          before,
          script,
          fc.constantFrom(1, 1, 1, 2),
          async (file, redirect, prior, faults, callers) => {
            const cacheDir = mkdtempSync(join(tmpdir(), 'sae-eraser-hubfuzz-'));
            try {
              hub.reset();
              hub.faults.redirect = redirect;
              const content = FILES[file]!.content;
              const blobs = join(storageOf(cacheDir), 'blobs');
              if (prior.kind === 'other-file' || prior.kind === 'same-file') {
                await hubDownload({ ...options(cacheDir), repo: REPO, file: prior.kind === 'same-file' ? file : prior.file });
              } else if (prior.kind !== 'nothing') {
                mkdirSync(blobs, { recursive: true });
                const length = prior.length % (content.length + 8);
                const partial = prior.kind === 'right-prefix' ? content.subarray(0, length) : Buffer.from(pseudoRandomBytes(length, prior.length + 1));
                writeFileSync(join(blobs, `${BLOB_OF.get(file)!}.incomplete`), partial);
              }
              hub.log.length = 0;
              applyScript(faults);

              // One download, or two at once (the second waits on the first one's lock, then finds or fetches the blob).
              const outcomes = await Promise.all(
                Array.from({ length: callers }, () => downloads.runAsync(() => watchdog(hubDownload({ ...options(cacheDir), repo: REPO, file })))),
              );
              for (const outcome of outcomes) {
                if (outcome.ok) {
                  expect(readFileSync(outcome.value).equals(content)).toBe(true);
                } else {
                  expect(outcome.error).not.toBeInstanceOf(Hang);
                  expect(outcome.error.message).toContain(file);
                }
              }
              expect(hub.log.length, 'requests in one faulty download').toBeLessThanOrEqual(60);
              expectCacheSound(cacheDir);
              expectTokenStayedHome();

              hub.reset();
              hub.faults.redirect = redirect;
              const path = await watchdog(hubDownload({ ...options(cacheDir), repo: REPO, file }));
              expect(path).toBe(join(storageOf(cacheDir), 'snapshots', COMMIT, ...file.split('/')));
              expect(readFileSync(path).equals(content)).toBe(true);
              expect(existsSync(join(blobs, `${BLOB_OF.get(file)!}.incomplete`))).toBe(false);
              expectCacheSound(cacheDir);
              expectTokenStayedHome();
            } finally {
              hub.script.clear();
              rmSync(cacheDir, { recursive: true, force: true });
            }
          },
        ),
        fuzzParams(60),
      );
    },
    limitFor(60),
  );

  it(
    'lists exactly what a listing says or refuses it clearly; snapshots stay sound and a clean one succeeds',
    async () => {
      await fc.assert(
        fc.asyncProperty(listingBody, script, async (body, faults) => {
          const cacheDir = mkdtempSync(join(tmpdir(), 'sae-eraser-hubfuzz-'));
          try {
            hub.reset();
            const expected = expectedListing(body);
            hub.script.set(0, { kind: 'body', body });
            const listed = await listings.runAsync(() => watchdog(listRepoFiles({ ...options(cacheDir), repo: REPO })));
            if (listed.ok) expect(listed.value).toEqual(expected?.files);
            else {
              expect(listed.error).not.toBeInstanceOf(Hang);
              expect(expected, `refused a valid listing: ${listed.error.message}`).toBeUndefined();
              expect(listed.error.message).toContain(`/api/models/${REPO}/revision/main`);
            }

            hub.reset();
            applyScript([{ kind: 'body', body }, ...faults]);
            const snapshot = await listings.runAsync(() => watchdog(snapshotDownload({ ...options(cacheDir), repo: REPO })));
            if (snapshot.ok) {
              expect(expected).toBeDefined();
              expect(snapshot.value).toBe(join(storageOf(cacheDir), 'snapshots', expected!.commit));
              for (const file of expected!.files) expect(readFileSync(join(snapshot.value, ...file.split('/'))).equals(FILES[file]!.content)).toBe(true);
            } else {
              expect(snapshot.error).not.toBeInstanceOf(Hang);
              expect(snapshot.error.message).toContain(REPO);
            }
            expect(hub.log.length, 'requests in one faulty snapshot').toBeLessThanOrEqual(120);
            expectCacheSound(cacheDir);
            expectTokenStayedHome();

            hub.reset();
            const folder = await watchdog(snapshotDownload({ ...options(cacheDir), repo: REPO }));
            expect(folder).toBe(join(storageOf(cacheDir), 'snapshots', COMMIT));
            for (const file of NAMES) expect(readFileSync(join(folder, ...file.split('/'))).equals(FILES[file]!.content)).toBe(true);
            expectCacheSound(cacheDir);
            expectTokenStayedHome();
          } finally {
            hub.script.clear();
            rmSync(cacheDir, { recursive: true, force: true });
          }
        }),
        fuzzParams(30),
      );
    },
    limitFor(30),
  );

  it(
    'resolves a sharded model folder with every file right, from the hub or the cache, or fails clearly',
    async () => {
      const expectModel = (folder: string): void => {
        expect(folder).toBe(join(storageOf(cachedModelDir, MODEL_REPO), 'snapshots', MODEL_COMMIT));
        for (const [file, { content }] of Object.entries(MODEL_FILES)) expect(readFileSync(join(folder, file)).equals(content), file).toBe(true);
      };
      let cachedModelDir = '';
      await fc.assert(
        fc.asyncProperty(fc.constantFrom('nothing', 'complete', 'one shard missing'), scriptOf(14), async (prior, faults) => {
          cachedModelDir = mkdtempSync(join(tmpdir(), 'sae-eraser-hubfuzz-'));
          const opts = { ...options(cachedModelDir), files: ['special_tokens_map.json'] };
          try {
            hub.reset();
            if (prior !== 'nothing') {
              const folder = await resolveModelDir(MODEL_REPO, opts);
              if (prior === 'one shard missing') rmSync(join(folder, SHARDS[1]!));
            }
            hub.reset();
            applyScript(faults);
            const outcome = await models.runAsync(() => watchdog(resolveModelDir(MODEL_REPO, opts)));
            if (outcome.ok) expectModel(outcome.value);
            else {
              expect(outcome.error).not.toBeInstanceOf(Hang);
              expect(outcome.error.message).toContain(MODEL_REPO);
            }
            expectCacheSound(cachedModelDir, MODEL_REPO, MODEL_FILES);
            expectTokenStayedHome();

            hub.reset();
            expectModel(await watchdog(resolveModelDir(MODEL_REPO, opts)));
            expectCacheSound(cachedModelDir, MODEL_REPO, MODEL_FILES);
          } finally {
            hub.script.clear();
            rmSync(cachedModelDir, { recursive: true, force: true });
          }
        }),
        fuzzParams(20),
      );
    },
    limitFor(20),
  );
});
