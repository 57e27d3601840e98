/**
 * Hugging Face hub client that shares its cache with Python's huggingface_hub.
 *
 * Cache layout (identical to huggingface_hub's, so either tool reuses what the other downloaded):
 * ```
 * $HF_HUB_CACHE/                                 default $HF_HOME/hub, HF_HOME default ~/.cache/huggingface
 *   models--owner--name/                         datasets--owner--name/ for datasets
 *     blobs/<etag>                               content; etag = git sha1, or sha256 for LFS files
 *     blobs/<etag>.incomplete                    a partial download, resumed by the next run
 *     refs/<revision>                            the commit a branch or tag resolved to (no newline)
 *     snapshots/<commit>/<file>                  relative symlink to ../../blobs/<etag>
 *     .no_exist/<commit>/<file>                  empty marker: the hub said this file does not exist
 *   .locks/models--owner--name/<etag>.sae-eraser.lock   our cross-process download lock
 * ```
 * Protocol (as in huggingface_hub's file_download.py): a HEAD on
 * `<endpoint>[/datasets]/<repo>/resolve/<revision>/<file>` with `Accept-Encoding: identity`, following
 * only relative redirects (renamed repos). The commit is `X-Repo-Commit`, the etag is `X-Linked-Etag`
 * or else `ETag` (quotes and a `W/` prefix removed), the size `X-Linked-Size` or else `Content-Length`.
 * An absolute redirect (an LFS file on a CDN) gives the download location; the token is sent there
 * only when it has the hub's origin. The listing API is `/api/<models|datasets>/<repo>/revision/<rev>`.
 * Stricter than huggingface_hub, so that nothing unverified enters the cache: the commit must be 40
 * hex digits (and the one asked for, when a commit was), the etag a git blob sha1 or a sha256, and
 * the download is checked against it (sha256 of the bytes, or git's sha1 of `blob <size>\0` + bytes).
 * test/fuzz/hub.test.ts holds the client to this against a server that gets everything wrong.
 *
 * Environment: HF_HOME, HF_HUB_CACHE (or legacy HUGGINGFACE_HUB_CACHE), HF_ENDPOINT (default
 * https://huggingface.co), HF_TOKEN (or HUGGING_FACE_HUB_TOKEN, or the token file
 * $HF_TOKEN_PATH / $HF_HOME/token), HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE: 1/ON/YES/TRUE serves from
 * the cache only), HF_HUB_ETAG_TIMEOUT (metadata and listings) and HF_HUB_DOWNLOAD_TIMEOUT (file
 * transfers): seconds, default 10, to connect and then of socket idleness.
 * All are read at call time. When the hub cannot be reached (or refuses), a cached copy of the
 * requested revision is used, as huggingface_hub does.
 */
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { homedir, hostname } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { isQuiet } from '../util/progress.js';
import { tempPathFor, writeFileAtomic } from './atomic.js';
import { downloadToFile } from './http-download.js';
import {
  NetworkError,
  errorMessage,
  httpRequest,
  isRedirect,
  readBodyBytes,
  readBodyText,
  redirectTarget,
  requestFollowing,
  serverMessage,
  type HttpResponse,
} from './http.js';
import { decodeUtf8 } from './text.js';

export type RepoType = 'model' | 'dataset';

/** Options shared by every hub call. */
export interface HubOptions {
  /** The hub cache folder (the one holding `models--*`), default $HF_HUB_CACHE or $HF_HOME/hub. */
  cacheDir?: string;
  /** Access token; default $HF_TOKEN (then the token file). `false` sends none. */
  token?: string | false;
  /** Hub base URL, default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Serve from the cache only, like HF_HUB_OFFLINE=1. */
  localFilesOnly?: boolean;
  /** Failed attempts in a row without new bytes before a download gives up (default 5). */
  retries?: number;
  /** First wait between retries in ms, doubled after each failure (default 500). */
  retryDelayMs?: number;
}

export interface RepoRef extends HubOptions {
  /** `owner/name` (or a legacy single name such as `gpt2`). */
  repo: string;
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /** Default `model`. */
  repoType?: RepoType;
}

export interface HubDownloadOptions extends RepoRef {
  /** Path of the file inside the repo, with `/` separators. */
  file: string;
}

export interface SnapshotOptions extends RepoRef {
  /** fnmatch-style patterns (`*` also matches `/`, as in huggingface_hub); default: every file. */
  allowPatterns?: readonly string[];
}

export interface ResolveModelOptions extends HubOptions {
  /** Extra files the caller needs from the repo (each must exist), beyond the default set. */
  files?: readonly string[];
}

export type HubErrorKind =
  'repo-not-found' | 'revision-not-found' | 'entry-not-found' | 'gated' | 'forbidden' | 'http' | 'network' | 'not-cached' | 'bad-response' | 'download';

/** A hub failure; the message names the repo, revision and file concerned. */
export class HubError extends Error {
  readonly kind: HubErrorKind;
  readonly status: number | undefined;
  constructor(kind: HubErrorKind, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HubError';
    this.kind = kind;
    this.status = options.status;
  }
}

// ---------------------------------------------------------------------------------------------
// Environment

const TRUE_VALUES = new Set(['1', 'ON', 'YES', 'TRUE']);
const DEFAULT_ENDPOINT = 'https://huggingface.co';

function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}

/** $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(): string {
  const fromEnv = env('HF_HOME');
  if (fromEnv !== undefined) return resolve(expandHome(fromEnv));
  return resolve(expandHome(env('XDG_CACHE_HOME') ?? join(homedir(), '.cache')), 'huggingface');
}

/** $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub. */
export function hubCacheDir(): string {
  const fromEnv = env('HF_HUB_CACHE') ?? env('HUGGINGFACE_HUB_CACHE');
  return fromEnv !== undefined ? resolve(expandHome(fromEnv)) : join(hfHome(), 'hub');
}

/** $HF_ENDPOINT without trailing slashes, else https://huggingface.co. */
export function hubEndpoint(): string {
  return (env('HF_ENDPOINT') ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
}

/** True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is 1, ON, YES or TRUE. */
export function hubOffline(): boolean {
  const v = env('HF_HUB_OFFLINE') ?? env('TRANSFORMERS_OFFLINE');
  return v !== undefined && TRUE_VALUES.has(v.toUpperCase());
}

/** $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the token file ($HF_TOKEN_PATH or $HF_HOME/token). */
export function hubToken(): string | undefined {
  const fromEnv = env('HF_TOKEN') ?? env('HUGGING_FACE_HUB_TOKEN');
  if (fromEnv !== undefined) return fromEnv.trim();
  const path = expandHome(env('HF_TOKEN_PATH') ?? join(hfHome(), 'token'));
  if (!existsSync(path)) return undefined;
  const token = readFileSync(path, 'utf8').trim();
  return token === '' ? undefined : token;
}

function envSecondsAsMs(name: string, fallbackSeconds: number): number {
  const v = env(name);
  if (v === undefined) return fallbackSeconds * 1000;
  const seconds = Number(v);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error(`${name} must be a positive number of seconds, got "${v}"`);
  return seconds * 1000;
}

// ---------------------------------------------------------------------------------------------
// Names, validation, paths

const COMMIT_RE = /^[0-9a-f]{40}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
const REPO_RE = /^(?:[A-Za-z0-9_.-]+\/)?[A-Za-z0-9_.-]+$/;

/** `models--owner--name` / `datasets--owner--name`: the repo's folder in the hub cache. */
export function repoFolderName(repo: string, repoType: RepoType = 'model'): string {
  checkRepo(repo);
  return [`${repoType}s`, ...repo.split('/')].join('--');
}

function checkRepo(repo: string): void {
  if (!REPO_RE.test(repo) || repo.includes('--') || repo.includes('..') || repo.length > 200) {
    throw new Error(`invalid hub repo id "${repo}": expected owner/name (letters, digits, "-", "_", "."; no "--" or "..")`);
  }
}

/** A relative `/`-separated path without `.`/`..`/empty segments (it becomes a path in the cache). */
function checkRelativePath(what: string, value: string): void {
  const segments = value.split('/');
  if (value === '' || value.includes('\\') || value.includes('\0') || segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw new Error(`invalid ${what} "${value}": expected a relative path with "/" separators and no "." or ".." parts`);
  }
}

/** A git blob sha1 (a git file's etag) or a sha256 (an LFS file's): the only etags the hub sends. */
const ETAG_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
/** Headers are latin1; a hostile value is cut short in messages. */
const shown = (value: string): string => JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);

/**
 * Commits and etags become folder and file names in the cache, and the etag is also the checksum
 * every download is verified against, so anything but the hub's hex forms is refused: a blob that
 * cannot be verified could hold anything.
 */
function checkCommit(commit: string, source: string, target: string): void {
  if (!COMMIT_RE.test(commit))
    throw new HubError('bad-response', `the hub sent an invalid commit ${shown(commit)} (not 40 hex digits) for ${target} from ${source}`);
}

function checkEtag(etag: string, source: string, target: string): void {
  if (!ETAG_RE.test(etag)) {
    throw new HubError('bad-response', `the hub sent an invalid etag ${shown(etag)} (neither a git sha1 nor a sha256) for ${target} from ${source}`);
  }
}

/** Strips a weak-validator prefix and the quotes of an ETag header value. */
export function normalizeEtag(value: string): string {
  return value
    .trim()
    .replace(/^W\//, '')
    .replace(/^"+|"+$/g, '');
}

function encodeFilePath(file: string): string {
  return file.split('/').map(encodeURIComponent).join('/');
}

interface Ctx {
  repo: string;
  repoType: RepoType;
  revision: string;
  cacheDir: string;
  storage: string;
  endpoint: string;
  token: string | undefined;
  offline: boolean;
  retries: number;
  retryDelayMs: number;
  metadataTimeoutMs: number;
  downloadTimeoutMs: number;
}

function context(ref: RepoRef): Ctx {
  const repoType = ref.repoType ?? 'model';
  if (repoType !== 'model' && repoType !== 'dataset') throw new Error(`invalid repoType "${String(repoType)}": expected "model" or "dataset"`);
  const revision = ref.revision ?? 'main';
  checkRelativePath('revision', revision);
  const cacheDir = resolve(expandHome(ref.cacheDir ?? hubCacheDir()));
  return {
    repo: ref.repo,
    repoType,
    revision,
    cacheDir,
    storage: join(cacheDir, repoFolderName(ref.repo, repoType)),
    endpoint: (ref.endpoint ?? hubEndpoint()).replace(/\/+$/, ''),
    token: ref.token === false ? undefined : (ref.token ?? hubToken()),
    offline: ref.localFilesOnly === true || hubOffline(),
    retries: ref.retries ?? 5,
    retryDelayMs: ref.retryDelayMs ?? 500,
    metadataTimeoutMs: envSecondsAsMs('HF_HUB_ETAG_TIMEOUT', 10),
    downloadTimeoutMs: envSecondsAsMs('HF_HUB_DOWNLOAD_TIMEOUT', 10),
  };
}

/** `file "x" of model repo o/n at revision "main"` (or without the file). */
function describe(ctx: Ctx, file?: string): string {
  const repo = `${ctx.repoType} repo ${ctx.repo} at revision "${ctx.revision}"`;
  return file === undefined ? repo : `file "${file}" of ${repo}`;
}

function resolveUrl(ctx: Ctx, file: string): string {
  const prefix = ctx.repoType === 'dataset' ? 'datasets/' : '';
  return `${ctx.endpoint}/${prefix}${ctx.repo}/resolve/${encodeURIComponent(ctx.revision)}/${encodeFilePath(file)}`;
}

function apiUrl(ctx: Ctx): string {
  return `${ctx.endpoint}/api/${ctx.repoType}s/${ctx.repo}/revision/${encodeURIComponent(ctx.revision)}`;
}

function hubHeaders(token: string | undefined): Record<string, string> {
  const headers: Record<string, string> = { 'User-Agent': `sae-eraser; node/${process.versions.node}` };
  if (token !== undefined) headers['Authorization'] = `Bearer ${token}`;
  return headers;
}

function pointerPath(storage: string, commit: string, file: string): string {
  return join(storage, 'snapshots', commit, ...file.split('/'));
}

function refPath(storage: string, revision: string): string {
  return join(storage, 'refs', ...revision.split('/'));
}

function noExistPath(storage: string, commit: string, file: string): string {
  return join(storage, '.no_exist', commit, ...file.split('/'));
}

function readRef(storage: string, revision: string): string | undefined {
  const path = refPath(storage, revision);
  if (!existsSync(path)) return undefined;
  const commit = readFileSync(path, 'utf8').trim();
  return commit === '' ? undefined : commit;
}

/** Records `revision -> commit` in refs/ (nothing for a commit itself), rewriting only on change. */
function writeRef(storage: string, revision: string, commit: string): void {
  if (revision === commit || readRef(storage, revision) === commit) return;
  writeFileAtomic(refPath(storage, revision), commit);
}

/** The commit a revision maps to in the cache: itself when it is a full commit hash, else refs/. */
function cachedCommit(storage: string, revision: string): string | undefined {
  return COMMIT_RE.test(revision) ? revision : readRef(storage, revision);
}

/** Points snapshots/<commit>/<file> at the blob with a relative symlink (a copy where symlinks fail). */
function linkPointer(blob: string, pointer: string): void {
  mkdirSync(dirname(pointer), { recursive: true });
  const tmp = tempPathFor(pointer);
  try {
    symlinkSync(relative(dirname(pointer), blob), tmp);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Windows without developer mode: huggingface_hub falls back to a copy too.
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EACCES') throw err;
    copyFileSync(blob, tmp);
  }
  try {
    renameSync(tmp, pointer);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function note(message: string): void {
  if (!isQuiet()) process.stderr.write(`hub: ${message}\n`);
}

/**
 * The cached path of a file at a revision (resolved through refs/), or undefined when it is not
 * cached. Never touches the network.
 */
export function cachedFile(options: HubDownloadOptions): string | undefined {
  const ctx = context({ ...options, localFilesOnly: true });
  checkRelativePath('file name', options.file);
  const commit = cachedCommit(ctx.storage, ctx.revision);
  if (commit === undefined) return undefined;
  const pointer = pointerPath(ctx.storage, commit, options.file);
  return existsSync(pointer) ? pointer : undefined;
}

// ---------------------------------------------------------------------------------------------
// Cross-process lock: an exclusive-create file holding `pid host`, refreshed while held, and taken
// over when its owner is dead (same host) or it has not been refreshed for a minute.

const LOCK_REFRESH_MS = 10_000;
const LOCK_STALE_MS = 60_000;
const LOCK_POLL_MS = 200;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockIsStale(path: string): boolean {
  let owner: string;
  let mtimeMs: number;
  try {
    owner = readFileSync(path, 'utf8').trim();
    mtimeMs = statSync(path).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false; // released meanwhile: retry the create
    throw err;
  }
  if (Date.now() - mtimeMs > LOCK_STALE_MS) return true;
  const [pidText, host] = owner.split(' ');
  const pid = Number(pidText);
  return host === hostname() && Number.isInteger(pid) && pid !== process.pid && !pidAlive(pid);
}

async function withLock<T>(path: string, body: () => Promise<T>): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  for (;;) {
    try {
      // Exclusive create is the lock itself, so this one file cannot go through writeFileAtomic.
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, `${process.pid} ${hostname()}\n`);
      } finally {
        closeSync(fd);
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (lockIsStale(path)) {
        rmSync(path, { force: true });
        continue;
      }
      await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
    }
  }
  const refresh = setInterval(() => {
    const now = new Date();
    try {
      utimesSync(path, now, now);
    } catch (err) {
      note(`could not refresh the lock ${path}: ${errorMessage(err)}`);
    }
  }, LOCK_REFRESH_MS);
  refresh.unref();
  try {
    return await body();
  } finally {
    clearInterval(refresh);
    rmSync(path, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Requests and errors

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function retryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * Sends a metadata or API request, retrying (a few times) on resets, timeouts and 408/429/5xx.
 * Unreachable hosts (DNS failure, refused) fail at once so the cache fallback is quick.
 */
async function sendWithRetries(ctx: Ctx, send: () => Promise<HttpResponse>): Promise<HttpResponse> {
  const attempts = 1 + Math.min(ctx.retries, 3);
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await send();
      if (!retryableStatus(res.status) || attempt >= attempts) return res;
      res.discard();
    } catch (err) {
      if (!(err instanceof NetworkError) || err.unreachable || attempt >= attempts) throw err;
    }
    await sleep(Math.min(8000, ctx.retryDelayMs * 2 ** (attempt - 1)));
  }
}

/** Turns a failed hub response into a HubError that says what was asked and what the hub said. */
async function hubHttpError(res: HttpResponse, ctx: Ctx, file: string | undefined): Promise<HubError> {
  let said: string;
  try {
    said = serverMessage(res, await readBodyText(res, 4096));
  } catch (err) {
    said = `error body unreadable: ${errorMessage(err)}`;
  }
  const status = res.status;
  const code = res.header('x-error-code');
  const tail = ` (HTTP ${status} from ${res.url}${said !== '' ? `: ${said}` : ''})`;
  const target = describe(ctx, file);
  const tokenHint = ctx.token === undefined ? 'set HF_TOKEN to a token that can read it' : 'check that HF_TOKEN can read it';
  if (code === 'RevisionNotFound') {
    return new HubError(
      'revision-not-found',
      `revision "${ctx.revision}" not found in ${ctx.repoType} repo ${ctx.repo}${file !== undefined ? ` (asked for "${file}")` : ''}${tail}`,
      { status },
    );
  }
  if (code === 'EntryNotFound') {
    return new HubError('entry-not-found', `${target} does not exist${tail}`, { status });
  }
  if (code === 'GatedRepo') {
    return new HubError('gated', `${ctx.repoType} repo ${ctx.repo} is gated: accept its terms on the hub and ${tokenHint}; needed for ${target}${tail}`, {
      status,
    });
  }
  if (code === 'RepoNotFound' || status === 401) {
    return new HubError(
      'repo-not-found',
      `${ctx.repoType} repo ${ctx.repo} not found or not accessible (if it is private or gated, ${tokenHint}); needed for ${target}${tail}`,
      { status },
    );
  }
  if (status === 403) {
    return new HubError('forbidden', `access to ${target} is forbidden: ${tokenHint}${tail}`, { status });
  }
  if (status === 404) {
    const what = file === undefined ? 'the repo or the revision' : 'the repo, the revision or the file';
    return new HubError('http', `${target} not found: ${what} does not exist on ${ctx.endpoint}${tail}`, { status });
  }
  return new HubError('http', `the hub could not serve ${target}${tail}`, { status });
}

interface FileMetadata {
  commit: string;
  etag: string;
  size: number;
  /** Where to GET the bytes (the resolve URL, or the CDN location of an LFS file). */
  location: string;
  /** Whether `location` has the hub's origin (only then is the token sent). */
  sameOrigin: boolean;
}

/**
 * HEAD on the resolve URL. Relative redirects are followed (renamed repos, the hub's own cache
 * paths); hub headers are taken from the first response in the chain that carries them, since a
 * redirect response is where the hub puts X-Linked-Etag/X-Linked-Size for LFS files. The commit,
 * the etag and the size are required, as huggingface_hub requires them: the size bounds the
 * download and the etag is the checksum it is verified against.
 */
async function fileMetadata(ctx: Ctx, file: string): Promise<FileMetadata> {
  const url = resolveUrl(ctx, file);
  const target = describe(ctx, file);
  const headers = { ...hubHeaders(ctx.token), 'Accept-Encoding': 'identity' };
  let current = url;
  let commit: string | undefined;
  let linkedEtag: string | undefined;
  let linkedSize: string | undefined;
  for (let hop = 0; hop <= 10; hop++) {
    const res = await sendWithRetries(ctx, () => httpRequest(current, { method: 'HEAD', headers, timeoutMs: ctx.metadataTimeoutMs }));
    commit ??= res.header('x-repo-commit');
    linkedEtag ??= res.header('x-linked-etag');
    linkedSize ??= res.header('x-linked-size');
    const location = res.header('location');
    let etag: string | undefined;
    let size: string | undefined;
    let downloadFrom: string;
    if (isRedirect(res.status) && location !== undefined) {
      res.discard();
      let next: string;
      try {
        next = redirectTarget(location, current);
      } catch (err) {
        throw new HubError('bad-response', `${errorMessage(err)}, for ${target}`);
      }
      const isRelative = !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(location) && !location.startsWith('//');
      if (isRelative) {
        current = next;
        continue;
      }
      downloadFrom = next;
      etag = linkedEtag ?? res.header('etag');
      size = linkedSize; // a redirect's own Content-Length is that of its body, not of the file
    } else if (res.status >= 200 && res.status < 300) {
      res.discard();
      downloadFrom = current;
      etag = linkedEtag ?? res.header('etag');
      size = linkedSize ?? res.header('content-length');
    } else {
      const error = await hubHttpError(res, ctx, file);
      if (error.kind === 'entry-not-found' && commit !== undefined && COMMIT_RE.test(commit)) {
        // Cache the non-existence, as huggingface_hub does, so offline runs can say so.
        const marker = noExistPath(ctx.storage, commit, file);
        if (!existsSync(marker)) writeFileAtomic(marker, '');
        writeRef(ctx.storage, ctx.revision, commit);
      }
      throw error;
    }
    if (commit === undefined) {
      throw new HubError(
        'bad-response',
        `no X-Repo-Commit header for ${target} from ${res.url}: the endpoint ${ctx.endpoint} does not answer like the Hugging Face hub (proxy or firewall?)`,
      );
    }
    checkCommit(commit, res.url, target);
    if (COMMIT_RE.test(ctx.revision) && commit !== ctx.revision) {
      // Files asked for at a commit (as snapshots and models are) must land in that commit's folder.
      throw new HubError('bad-response', `asked for ${target}, the hub answered for commit ${commit} (X-Repo-Commit from ${res.url})`);
    }
    if (etag === undefined) throw new HubError('bad-response', `no ETag for ${target} from ${res.url}: cannot name the cached blob`);
    etag = normalizeEtag(etag);
    checkEtag(etag, res.url, target);
    if (size === undefined) {
      throw new HubError('bad-response', `no size (X-Linked-Size or Content-Length) for ${target} from ${res.url}: the download could not be bounded`);
    }
    const parsedSize = /^\d+$/.test(size.trim()) ? Number(size.trim()) : NaN;
    if (!Number.isSafeInteger(parsedSize)) throw new HubError('bad-response', `invalid size ${shown(size)} for ${target} from ${res.url}`);
    return { commit, etag, size: parsedSize, location: downloadFrom, sameOrigin: new URL(downloadFrom).origin === new URL(url).origin };
  }
  throw new HubError('bad-response', `more than 10 relative redirects for ${target} starting at ${url}`);
}

/** Errors after which a cached copy may stand in (network, outage, auth); not "this does not exist". */
function cacheMayStandIn(err: unknown): boolean {
  if (err instanceof HubError) return err.kind !== 'revision-not-found' && err.kind !== 'entry-not-found' && err.kind !== 'bad-response';
  return err instanceof NetworkError;
}

/** The cached file for ctx.revision, or a clear error naming what is missing (and why we looked). */
function offlineReason(): string {
  return hubOffline() ? 'HF_HUB_OFFLINE is set' : 'local files only were asked for';
}

function fromCacheOrThrow(ctx: Ctx, file: string, cause: unknown, cacheOnlyReason?: string): string {
  const commit = cachedCommit(ctx.storage, ctx.revision);
  const pointer = commit === undefined ? undefined : pointerPath(ctx.storage, commit, file);
  if (pointer !== undefined && existsSync(pointer)) {
    if (cause !== undefined) note(`${errorMessage(cause)}; using the cached ${pointer}`);
    return pointer;
  }
  let missing: string;
  if (commit === undefined) {
    missing = `revision "${ctx.revision}" was never resolved in this cache (no ${refPath(ctx.storage, ctx.revision)})`;
  } else if (existsSync(noExistPath(ctx.storage, commit, file))) {
    missing = `the hub reported that "${file}" does not exist at commit ${commit}`;
  } else {
    missing = `no ${pointer ?? ''}`;
  }
  if (cause === undefined) {
    const why = cacheOnlyReason ?? offlineReason();
    throw new HubError('not-cached', `${describe(ctx, file)} is not in the hub cache ${ctx.cacheDir} and ${why}: ${missing}`);
  }
  if (cause instanceof HubError) throw cause;
  throw new HubError(
    'network',
    `cannot reach the hub for ${describe(ctx, file)} (${errorMessage(cause)}), and it is not in the hub cache ${ctx.cacheDir}: ${missing}`,
    { cause },
  );
}

async function materialize(ctx: Ctx, file: string, meta: FileMetadata): Promise<string> {
  const blob = join(ctx.storage, 'blobs', meta.etag);
  const pointer = pointerPath(ctx.storage, meta.commit, file);
  writeRef(ctx.storage, ctx.revision, meta.commit);
  if (existsSync(pointer)) return pointer;
  if (existsSync(blob) && statSync(blob).size !== meta.size) {
    // Blobs are only renamed into place once verified, so the etag the hub sent is not this file's.
    throw new HubError(
      'bad-response',
      `the hub sent etag ${meta.etag} and size ${meta.size} for ${describe(ctx, file)}, but the cached blob ${blob} with that etag has ${statSync(blob).size} bytes`,
    );
  }
  if (!existsSync(blob)) {
    mkdirSync(dirname(blob), { recursive: true });
    const lock = join(ctx.cacheDir, '.locks', repoFolderName(ctx.repo, ctx.repoType), `${meta.etag}.sae-eraser.lock`);
    await withLock(lock, async () => {
      if (existsSync(blob)) return; // another process finished it while we waited
      try {
        await downloadToFile({
          url: meta.location,
          destination: blob,
          headers: hubHeaders(meta.sameOrigin ? ctx.token : undefined),
          expectedSize: meta.size,
          sha256: SHA256_RE.test(meta.etag) ? meta.etag : undefined,
          gitSha1: COMMIT_RE.test(meta.etag) ? meta.etag : undefined,
          label: `${ctx.repo}/${file}`,
          retries: ctx.retries,
          retryDelayMs: ctx.retryDelayMs,
          timeoutMs: ctx.downloadTimeoutMs,
        });
      } catch (err) {
        throw new HubError('download', `failed to download ${describe(ctx, file)}: ${errorMessage(err)}`, { cause: err });
      }
    });
  }
  linkPointer(blob, pointer);
  return pointer;
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Downloads one file of a hub repo into the cache (or finds it there) and returns its local path
 * `<cache>/<repo folder>/snapshots/<commit>/<file>`.
 *
 * With a full commit hash as revision and the file cached, no request is made. Otherwise a HEAD
 * resolves the revision to a commit and the file to a blob; a blob already cached (from any commit)
 * is only linked. Offline, or when the hub cannot be reached or refuses, the cached copy of the
 * revision (through refs/) is returned if there is one; a clear HubError says what is missing.
 */
export async function hubDownload(options: HubDownloadOptions): Promise<string> {
  return download(context(options), options.file);
}

/** hubDownload on a context; `cacheOnlyReason` (when set) forbids the network and says why. */
async function download(ctx: Ctx, file: string, cacheOnlyReason?: string): Promise<string> {
  checkRelativePath('file name', file);
  if (COMMIT_RE.test(ctx.revision)) {
    const pointer = pointerPath(ctx.storage, ctx.revision, file);
    if (existsSync(pointer)) return pointer;
  }
  if (ctx.offline || cacheOnlyReason !== undefined) return fromCacheOrThrow(ctx, file, undefined, cacheOnlyReason);
  let meta: FileMetadata;
  try {
    meta = await fileMetadata(ctx, file);
  } catch (err) {
    if (!cacheMayStandIn(err)) throw err;
    return fromCacheOrThrow(ctx, file, err);
  }
  return materialize(ctx, file, meta);
}

/** A listing larger than this is refused rather than held in memory (a repo of 100 000 files lists in about 5 MB). */
const LISTING_MAX_BYTES = 64 * 1024 * 1024;

interface RepoInfo {
  commit: string;
  files: string[];
}

async function fetchRepoInfo(ctx: Ctx): Promise<RepoInfo> {
  if (ctx.offline) {
    throw new HubError('not-cached', `cannot list the files of ${describe(ctx)}: ${offlineReason()}`);
  }
  const url = apiUrl(ctx);
  const headers = { ...hubHeaders(ctx.token), Accept: 'application/json' };
  const res = await sendWithRetries(ctx, () => requestFollowing(url, { method: 'GET', headers, timeoutMs: ctx.metadataTimeoutMs }));
  if (res.status !== 200) throw await hubHttpError(res, ctx, undefined);
  const listing = `the repo listing of ${describe(ctx)} from ${res.url}`;
  let bytes: Buffer;
  try {
    bytes = await readBodyBytes(res, LISTING_MAX_BYTES);
  } catch (err) {
    if (err instanceof NetworkError) throw err; // the cache may stand in
    throw new HubError('bad-response', `${listing}: ${errorMessage(err)}`);
  }
  let info: unknown;
  try {
    info = JSON.parse(decodeUtf8(bytes, listing));
  } catch (err) {
    throw new HubError('bad-response', err instanceof SyntaxError ? `${listing} is not JSON: ${err.message}` : errorMessage(err));
  }
  const record = typeof info === 'object' && info !== null && !Array.isArray(info) ? (info as Record<string, unknown>) : {};
  const sha = record['sha'];
  const siblings = record['siblings'];
  if (typeof sha !== 'string' || !Array.isArray(siblings)) throw new HubError('bad-response', `${listing} has no "sha" string or no "siblings" array`);
  checkCommit(sha, res.url, describe(ctx));
  const files = siblings.map((s: unknown, i) => {
    const name = typeof s === 'object' && s !== null ? (s as Record<string, unknown>)['rfilename'] : undefined;
    if (typeof name !== 'string') throw new HubError('bad-response', `siblings[${i}].rfilename is not a string in ${listing}`);
    try {
      checkRelativePath('file name', name);
    } catch (err) {
      throw new HubError('bad-response', `siblings[${i}].rfilename in ${listing}: ${errorMessage(err)}`);
    }
    return name;
  });
  return { commit: sha, files };
}

/** Lists the files of a repo at a revision through `/api/<models|datasets>/<repo>/revision/<rev>`. */
export async function listRepoFiles(ref: RepoRef): Promise<string[]> {
  return (await fetchRepoInfo(context(ref))).files;
}

/** Python's fnmatch as a RegExp: `*` matches anything (including `/`), `?` one character, `[...]` a class. */
export function fnmatchRegExp(pattern: string): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        out += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      out += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else out += c.replace(/[.+^${}()|\\/\]-]/g, '\\$&');
  }
  return new RegExp(`^${out}$`, 's');
}

function matchesAny(file: string, patterns: readonly string[] | undefined): boolean {
  if (patterns === undefined) return true;
  // As in huggingface_hub: a pattern ending in "/" means everything under that folder.
  return patterns.some((p) => fnmatchRegExp(p.endsWith('/') ? `${p}*` : p).test(file));
}

/**
 * The commit for ctx.revision: from the listing when the hub answers (recording the ref), else from
 * the cache. Returns the listing too when there is one, and `cacheOnly` when files must come from
 * the cache.
 */
async function resolveRevision(ctx: Ctx): Promise<{ commit: string; files: string[] | undefined; cacheOnlyReason: string | undefined }> {
  let cause: unknown;
  if (!ctx.offline) {
    try {
      const info = await fetchRepoInfo(ctx);
      writeRef(ctx.storage, ctx.revision, info.commit);
      return { commit: info.commit, files: info.files, cacheOnlyReason: undefined };
    } catch (err) {
      if (!cacheMayStandIn(err)) throw err;
      cause = err;
    }
  }
  const commit = cachedCommit(ctx.storage, ctx.revision);
  if (commit === undefined || !existsSync(join(ctx.storage, 'snapshots', commit))) {
    const missing = commit === undefined ? `no ${refPath(ctx.storage, ctx.revision)}` : `no ${join(ctx.storage, 'snapshots', commit)}`;
    if (cause === undefined) {
      throw new HubError('not-cached', `${describe(ctx)} is not in the hub cache ${ctx.cacheDir} and ${offlineReason()}: ${missing}`);
    }
    if (cause instanceof HubError && cause.kind !== 'network') throw cause;
    throw new HubError(
      'network',
      `cannot reach the hub for ${describe(ctx)} (${errorMessage(cause)}), and it is not in the hub cache ${ctx.cacheDir}: ${missing}`,
      { cause },
    );
  }
  if (cause === undefined) return { commit, files: undefined, cacheOnlyReason: offlineReason() };
  note(`${errorMessage(cause)}; using the cached snapshot ${commit} of ${ctx.repo}`);
  return { commit, files: undefined, cacheOnlyReason: `the hub could not be asked (${errorMessage(cause)})` };
}

/**
 * Downloads the files of a repo revision that match `allowPatterns` (all by default) and returns
 * the snapshot folder `<cache>/<repo folder>/snapshots/<commit>`. Offline, or when the hub cannot
 * be reached, returns the cached snapshot of the revision as it is (possibly partial, like
 * huggingface_hub).
 */
export async function snapshotDownload(options: SnapshotOptions): Promise<string> {
  const ctx = context(options);
  const { commit, files } = await resolveRevision(ctx);
  const folder = join(ctx.storage, 'snapshots', commit);
  if (files === undefined) return folder;
  const atCommit = { ...ctx, revision: commit };
  for (const file of files.filter((f) => matchesAny(f, options.allowPatterns))) await download(atCommit, file);
  mkdirSync(folder, { recursive: true });
  return folder;
}

/** Splits `owner/name@revision` (revision optional). */
export function parseRepoSpec(spec: string): { repo: string; revision: string | undefined } {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? undefined : spec.slice(at + 1);
  if (!REPO_RE.test(repo) || repo.includes('--') || repo.includes('..') || revision === '') {
    throw new Error(`"${spec}" is neither an existing folder nor a hub repo id of the form owner/name[@revision]`);
  }
  return { repo, revision };
}

const MODEL_REQUIRED_FILES = ['config.json', 'tokenizer.json'];
const MODEL_OPTIONAL_FILES = ['tokenizer_config.json', 'vocab.txt', 'special_tokens_map.json'];
const SAFETENSORS_FILE = 'model.safetensors';
const SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json';

/** The shard file names of a model.safetensors.index.json, in first-use order. */
function safetensorsShards(indexPath: string): string[] {
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new Error(`${indexPath}: not valid JSON (${errorMessage(err)})`);
  }
  const weightMap = typeof index === 'object' && index !== null ? (index as Record<string, unknown>)['weight_map'] : undefined;
  if (typeof weightMap !== 'object' || weightMap === null) throw new Error(`${indexPath}: no "weight_map" object`);
  const shards: string[] = [];
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string') throw new Error(`${indexPath}: weight_map["${tensor}"] is not a file name`);
    checkRelativePath(`shard name in ${indexPath}`, shard);
    if (!shards.includes(shard)) shards.push(shard);
  }
  return shards;
}

/**
 * A model folder from a local path or a hub repo.
 *
 * A folder that exists is returned as it is (it must hold config.json). Otherwise `dirOrRepo` is
 * `owner/name[@revision]`: config.json, tokenizer.json, those of tokenizer_config.json, vocab.txt
 * and special_tokens_map.json that the repo has, `options.files`, and the weights (model.safetensors,
 * or model.safetensors.index.json and its shards) are fetched into the hub cache, all at the one
 * commit the revision resolves to, and the snapshot folder is returned.
 */
export async function resolveModelDir(dirOrRepo: string, options: ResolveModelOptions = {}): Promise<string> {
  const local = resolve(expandHome(dirOrRepo));
  if (existsSync(local)) {
    if (!statSync(local).isDirectory()) {
      throw new Error(`${local} is a file; expected a model folder holding config.json, or a hub repo id owner/name[@revision]`);
    }
    for (const file of ['config.json', ...(options.files ?? [])]) {
      if (!existsSync(join(local, file))) throw new Error(`model folder ${local} has no ${file}`);
    }
    return local;
  }
  const { repo, revision } = parseRepoSpec(dirOrRepo);
  const ctx = context({ ...options, repo, revision, repoType: 'model' });
  const { commit, files, cacheOnlyReason } = await resolveRevision(ctx);
  const listed = files === undefined ? undefined : new Set(files);
  const atCommit = { ...ctx, revision: commit };
  const fetch = (file: string): Promise<string> => download(atCommit, file, cacheOnlyReason);
  const absent = (file: string): HubError =>
    new HubError(
      'entry-not-found',
      `model repo ${repo} at revision "${ctx.revision}" (commit ${commit}) has no ${file}; its files: ${[...(listed ?? [])].slice(0, 30).join(', ')}`,
    );
  /** Fetches a file that may be absent: undefined when the listing or the cache says it is not there. */
  const fetchIfPresent = async (file: string): Promise<string | undefined> => {
    if (listed !== undefined) return listed.has(file) ? fetch(file) : undefined;
    try {
      return await fetch(file);
    } catch (err) {
      if (err instanceof HubError && err.kind === 'not-cached') return undefined;
      throw err;
    }
  };

  for (const file of [...MODEL_REQUIRED_FILES, ...(options.files ?? [])]) {
    if (listed !== undefined && !listed.has(file)) throw absent(file);
    await fetch(file);
  }
  for (const file of MODEL_OPTIONAL_FILES) await fetchIfPresent(file);

  if ((await fetchIfPresent(SAFETENSORS_FILE)) === undefined) {
    const index = await fetchIfPresent(SAFETENSORS_INDEX_FILE);
    if (index === undefined) {
      if (listed !== undefined) {
        const weights = [...listed].filter((f) => /\.(bin|pt|pth|h5|msgpack|safetensors|gguf|onnx)$/.test(f));
        throw new HubError(
          'entry-not-found',
          `model repo ${repo} at revision "${ctx.revision}" has neither ${SAFETENSORS_FILE} nor ${SAFETENSORS_INDEX_FILE} ` +
            `(weight files there: ${weights.length > 0 ? weights.join(', ') : 'none'}); only safetensors weights are read`,
        );
      }
      throw new HubError(
        'not-cached',
        `neither ${SAFETENSORS_FILE} nor ${SAFETENSORS_INDEX_FILE} of model repo ${repo} at commit ${commit} is in the hub cache ${ctx.cacheDir}, and the hub cannot be asked`,
      );
    }
    for (const shard of safetensorsShards(index)) {
      if (listed !== undefined && !listed.has(shard)) throw absent(`${shard} (named in ${SAFETENSORS_INDEX_FILE})`);
      await fetch(shard);
    }
  }
  return join(ctx.storage, 'snapshots', commit);
}

/** Downloads (or finds in the cache) one file of a dataset repo; returns its local path. */
export function resolveDatasetFile(repo: string, file: string, revision = 'main', options: HubOptions = {}): Promise<string> {
  return hubDownload({ ...options, repo, file, revision, repoType: 'dataset' });
}

/** A file in a hub repo named by an `hf://` URI (see `parseHubPath`). */
export interface HubPath {
  repo: string;
  repoType: RepoType;
  /** Branch, tag or commit; `main` when the URI names none. */
  revision: string;
  /** Path of the file inside the repo. */
  file: string;
}

const HUB_PATH_PREFIX = 'hf://';
/** Revisions that hold a "/" and may be written unencoded after "@" (as huggingface_hub's HfFileSystem accepts them). */
const SPECIAL_REVISION_RE = /^(refs\/convert\/\w+|refs\/pr\/\d+)\//;

/** True when `path` is an `hf://` URI rather than a local path. */
export function isHubPath(path: string): boolean {
  return path.startsWith(HUB_PATH_PREFIX);
}

/**
 * Parses `hf://[datasets/|models/]<owner>/<name>[@<revision>]/<path in repo>`, the syntax of
 * huggingface_hub's HF URIs: no type prefix (or `models/`) means a model repo. The revision may be
 * percent-encoded (`@refs%2Fconvert%2Fparquet`), or written as is when it is `refs/convert/<name>`
 * or `refs/pr/<n>`. Returns undefined for a path that does not start with `hf://`; throws, quoting
 * the URI, for one that does but is malformed, names another repo type (spaces, buckets), or names
 * no file.
 */
export function parseHubPath(path: string): HubPath | undefined {
  if (!isHubPath(path)) return undefined;
  const fail: (why: string) => never = (why) => {
    throw new Error(
      `"${path}" is not a usable hub file URI: ${why} (expected hf://datasets/<owner>/<name>[@<revision>]/<path in repo>, or hf://<owner>/<name>/... for a model repo)`,
    );
  };
  let rest = path.slice(HUB_PATH_PREFIX.length);
  let repoType: RepoType = 'model';
  const type = /^(datasets|models|spaces|kernels|buckets)\//.exec(rest);
  if (type !== null) {
    if (type[1] !== 'datasets' && type[1] !== 'models') fail(`${type[1]} are not supported, only dataset and model repos`);
    repoType = type[1] === 'datasets' ? 'dataset' : 'model';
    rest = rest.slice(type[0].length);
  }
  const id = /^([^/@]+)\/([^/@]+)/.exec(rest);
  if (id === null) fail('no <owner>/<name> repo id');
  const repo = `${id[1]}/${id[2]}`;
  rest = rest.slice(id[0].length);
  let revision = 'main';
  if (rest.startsWith('@')) {
    const special = SPECIAL_REVISION_RE.exec(rest.slice(1));
    const raw = special !== null ? special[1]! : rest.slice(1).split('/')[0]!;
    try {
      revision = special !== null ? raw : decodeURIComponent(raw);
    } catch {
      fail(`the revision "${raw}" is not valid percent-encoding`);
    }
    if (revision === '') fail('an empty revision after "@"');
    rest = rest.slice(1 + raw.length);
  }
  if (!rest.startsWith('/') || rest.length === 1) fail('no file path inside the repo');
  const file = rest.slice(1);
  try {
    checkRepo(repo);
    checkRelativePath('revision', revision);
    checkRelativePath('file name', file);
  } catch (err) {
    fail(errorMessage(err));
  }
  return { repo, repoType, revision, file };
}

/**
 * The local path of a data file: `path` itself when it is not an `hf://` URI, else the file
 * downloaded into (or found in) the hub cache by `hubDownload`, so it is cached, verified and served
 * offline (HF_HUB_OFFLINE) exactly as model files are.
 */
export async function resolveHubPath(path: string, options: HubOptions = {}): Promise<string> {
  const hub = parseHubPath(path);
  return hub === undefined ? path : hubDownload({ ...options, ...hub });
}
