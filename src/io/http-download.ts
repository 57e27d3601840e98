/**
 * Resumable, verified download of one URL into one file.
 *
 * Bytes go to `<destination>.incomplete` (the huggingface_hub convention, so either tool resumes the
 * other's partial blob). A dropped connection is retried with `Range: bytes=<have>-`; a server that
 * answers 200 to a Range request is restarted from zero. When all bytes are in, the size (and the
 * sha256 when one is known) is checked and the file is renamed onto `destination` in one step, so
 * `destination` exists only when complete and verified. A transfer that keeps failing throws after
 * `retries` attempts without progress and leaves the `.incomplete` file for the next run to resume;
 * data proven wrong (too many bytes, wrong hash) is deleted instead. When the bytes of an earlier run
 * fail a check, the file is fetched once more from zero before giving up.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { progress, type Progress } from '../util/progress.js';
import { HttpStatusError, NetworkError, errorMessage, requestFollowing, statusError, type HttpResponse } from './http.js';

export interface DownloadOptions {
  url: string;
  /** Final path; partial data lives at `<destination>.incomplete`. */
  destination: string;
  /** Request headers (Authorization is dropped by the redirect follower when the origin changes). */
  headers?: Record<string, string>;
  /** Expected size in bytes, when known beforehand (for the hub: X-Linked-Size or Content-Length). */
  expectedSize?: number;
  /** Expected lowercase hex sha256 of the content, checked before the final rename. */
  sha256?: string;
  /** Expected git blob sha1 of the content (sha1 of `blob <size>\0` and the bytes: a git file's hub ETag), checked before the final rename. */
  gitSha1?: string;
  /** Shown in progress lines and error messages. */
  label?: string;
  /** Consecutive failed attempts without new bytes before giving up (default 5). */
  retries?: number;
  /** Wait before the first retry in ms, doubled after each failure without progress, capped at 8 s (default 500). */
  retryDelayMs?: number;
  /** Socket idle timeout in ms (default 10 000). */
  timeoutMs?: number;
}

/** Files at least this large get a progress bar; small ones would only add noise. */
const PROGRESS_MIN_BYTES = 1 << 20;
const MIB = 1 << 20;
/** Hard cap on attempts for one file, whatever the progress, so no loop runs forever. */
const MAX_TOTAL_ATTEMPTS = 100;

/** Data that arrived but is provably wrong: retrying the same request will not fix it. */
export class DownloadConsistencyError extends Error {
  /**
   * @param message What is wrong, naming the file and the URL.
   * @param resumedFrom Bytes an earlier run had left when the failing pass began (0: none).
   */
  constructor(
    message: string,
    readonly resumedFrom: number,
  ) {
    super(message);
    this.name = 'DownloadConsistencyError';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isRetryable(err: unknown): boolean {
  if (err instanceof NetworkError) return true;
  if (err instanceof HttpStatusError) return err.retryable;
  return false;
}

/** `bytes <start>-<end>/<total|*>` -> start and total (undefined when `*`). */
function parseContentRange(value: string | undefined): { start: number; total: number | undefined } | undefined {
  const m = value === undefined ? null : /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(value.trim());
  if (m === null) return undefined;
  return { start: Number(m[1]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

function parseLength(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

/** Hashes the first `length` bytes of a file (the part already downloaded by an earlier attempt). */
async function hashPrefix(hash: Hash, path: string, length: number): Promise<void> {
  if (length === 0) return;
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1 })) hash.update(chunk as Buffer);
}

/** Progress in whole MiB (the shared helper prints integer counts). */
class MibProgress {
  private bar: Progress | undefined;
  private pending = 0;
  constructor(label: string, totalBytes: number | undefined) {
    if (totalBytes === undefined || totalBytes >= PROGRESS_MIN_BYTES) {
      this.bar = progress(label, totalBytes === undefined ? 0 : Math.ceil(totalBytes / MIB), 'MiB');
    }
  }
  add(bytes: number): void {
    if (this.bar === undefined) return;
    this.pending += bytes;
    const whole = Math.floor(this.pending / MIB);
    if (whole > 0) {
      this.pending -= whole * MIB;
      this.bar.tick(whole);
    }
  }
  done(info?: string): void {
    if (this.bar === undefined) return;
    if (this.pending > 0) this.bar.tick(1);
    this.pending = 0;
    this.bar.done(info);
    this.bar = undefined;
  }
}

/** What one pass of `transfer` left in the `.incomplete` file. */
interface Transferred {
  size: number;
  /** The sha256 of the bytes, when one was asked for. */
  sha256: string | undefined;
  /** Bytes that were already there from an earlier run when the pass began. */
  resumedFrom: number;
}

/**
 * Downloads `url` to `destination` (see the module comment). Resolves when `destination` is complete.
 * When the bytes fail a check and the pass had resumed bytes left by an earlier run, those bytes may
 * be what is wrong (a run killed mid-write, a proxy that mangled them): the file is fetched once more
 * from zero before the error is reported.
 */
export async function downloadToFile(options: DownloadOptions): Promise<void> {
  const incomplete = `${options.destination}.incomplete`;
  let got: Transferred;
  let problem: string | undefined;
  try {
    got = await transfer(options, incomplete);
    problem = await verify(options, incomplete, got);
  } catch (err) {
    if (!(err instanceof DownloadConsistencyError) || err.resumedFrom === 0) throw err;
    problem = err.message;
    got = { size: 0, sha256: undefined, resumedFrom: err.resumedFrom };
  }
  if (problem !== undefined && got.resumedFrom > 0) {
    await rm(incomplete, { force: true });
    got = await transfer(options, incomplete);
    problem = await verify(options, incomplete, got);
  }
  if (problem !== undefined) {
    await rm(incomplete, { force: true });
    throw new DownloadConsistencyError(`${problem}; the partial file was deleted`, 0);
  }
  await rename(incomplete, options.destination);
}

/** Why the finished `.incomplete` file is not the expected content, or undefined when it is. */
async function verify(options: DownloadOptions, incomplete: string, got: Transferred): Promise<string | undefined> {
  const label = options.label ?? options.url;
  if (options.sha256 !== undefined && got.sha256 !== options.sha256.toLowerCase()) {
    return `Consistency check failed for ${label}: sha256 of the ${got.size} downloaded bytes is ${got.sha256 ?? '?'}, expected ${options.sha256}`;
  }
  const onDisk = (await stat(incomplete)).size;
  if (options.expectedSize !== undefined && onDisk !== options.expectedSize) {
    return `Consistency check failed for ${label}: ${incomplete} has ${onDisk} bytes, expected ${options.expectedSize}`;
  }
  if (options.gitSha1 !== undefined) {
    const actual = await gitBlobSha1Of(incomplete, onDisk);
    if (actual !== options.gitSha1.toLowerCase()) {
      return `Consistency check failed for ${label}: the git blob sha1 of the ${onDisk} downloaded bytes is ${actual}, expected ${options.gitSha1}`;
    }
  }
  return undefined;
}

/** Git's object id of a file's content: sha1 of `blob <size>\0` and the bytes. */
async function gitBlobSha1Of(path: string, size: number): Promise<string> {
  const hash = createHash('sha1').update(`blob ${size}\0`);
  await hashPrefix(hash, path, size);
  return hash.digest('hex');
}

/**
 * One pass: appends to `incomplete` until the server has sent everything, retrying dropped
 * connections with a Range request. Throws after `retries` failures in a row without new bytes
 * (keeping the bytes for the next run), or at once on data proven wrong (deleting them).
 */
async function transfer(options: DownloadOptions, incomplete: string): Promise<Transferred> {
  const { url } = options;
  const label = options.label ?? url;
  const retries = options.retries ?? 5;
  const baseDelay = options.retryDelayMs ?? 500;
  let total = options.expectedSize;

  // Partial data is appended in place, not written through writeFileAtomic: resuming needs the
  // bytes on disk between runs. The atomic step is the final rename onto `destination`.
  const file = await open(incomplete, 'a');
  const bar = new MibProgress(`download ${label}`, total);
  let hash: Hash | undefined;
  let size = 0;
  let resumedFrom = 0;
  try {
    size = (await file.stat()).size;
    if (total !== undefined && size > total) {
      await file.truncate(0);
      size = 0;
    }
    resumedFrom = size;
    if (options.sha256 !== undefined) {
      hash = createHash('sha256');
      await hashPrefix(hash, incomplete, size);
    }
    bar.add(size);

    let failuresWithoutProgress = 0;
    let attempts = 0;
    let finished = total !== undefined && size === total;
    while (!finished) {
      attempts++;
      const sizeBefore = size;
      let res: HttpResponse | undefined;
      try {
        const headers: Record<string, string> = { ...options.headers, 'Accept-Encoding': 'identity' };
        if (size > 0) headers['Range'] = `bytes=${size}-`;
        res = await requestFollowing(url, { method: 'GET', headers, timeoutMs: options.timeoutMs });

        let responseTotal: number | undefined;
        if (res.status === 206 && size > 0) {
          const range = parseContentRange(res.header('content-range'));
          if (range === undefined || range.start !== size) {
            res.discard();
            throw new DownloadConsistencyError(
              `${label}: asked for bytes ${size}- and got Content-Range ${JSON.stringify((res.header('content-range') ?? '').slice(0, 100))} from ${res.url}`,
              resumedFrom,
            );
          }
          responseTotal = range.total;
        } else if (res.status === 200) {
          if (size > 0) {
            // The server ignored the Range header: start over rather than append a second copy.
            await file.truncate(0);
            size = 0;
            resumedFrom = 0;
            if (hash !== undefined) hash = createHash('sha256');
          }
          responseTotal = parseLength(res.header('content-length'));
        } else if (res.status === 416 && size > 0) {
          res.discard();
          throw new DownloadConsistencyError(
            `${label}: the server has fewer than the ${size} bytes already downloaded ` +
              `(HTTP 416 for Range bytes=${size}- from ${res.url}${total !== undefined ? `; expected ${total} bytes` : ''})`,
            resumedFrom,
          );
        } else {
          throw await statusError(res, `download of ${label} failed`);
        }
        const encoding = res.header('content-encoding');
        if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
          res.discard();
          throw new DownloadConsistencyError(
            `${label}: server sent Content-Encoding ${JSON.stringify(encoding.slice(0, 100))} although identity was asked (${res.url})`,
            resumedFrom,
          );
        }
        if (responseTotal !== undefined) {
          if (total === undefined) total = responseTotal;
          else if (responseTotal !== total) {
            res.discard();
            throw new DownloadConsistencyError(
              `Consistency check failed for ${label}: the hub announced ${total} bytes but ${res.url} serves ${responseTotal}`,
              resumedFrom,
            );
          }
        }

        try {
          for await (const chunk of res.body as AsyncIterable<Buffer>) {
            if (total !== undefined && size + chunk.length > total) {
              res.body.destroy();
              throw new DownloadConsistencyError(`Consistency check failed for ${label}: received more than the expected ${total} bytes`, resumedFrom);
            }
            await file.write(chunk);
            hash?.update(chunk);
            size += chunk.length;
            bar.add(chunk.length);
          }
        } catch (err) {
          if (err instanceof DownloadConsistencyError) throw err;
          throw res.bodyError(err);
        }
        if (total !== undefined && size !== total) {
          throw new DownloadConsistencyError(
            `Consistency check failed for ${label}: file should be of size ${total} but has size ${size} after the server ended the transfer`,
            resumedFrom,
          );
        }
        finished = true;
      } catch (err) {
        if (!isRetryable(err)) throw err;
        failuresWithoutProgress = size > sizeBefore ? 1 : failuresWithoutProgress + 1;
        if (failuresWithoutProgress > retries || attempts >= MAX_TOTAL_ATTEMPTS) {
          const kept =
            size === 0
              ? 'no bytes arrived'
              : `${size}${total !== undefined ? ` of ${total}` : ''} bytes are kept in ${incomplete} and the next run resumes from there`;
          throw new Error(
            `download of ${label} failed after ${attempts} attempts (${failuresWithoutProgress} in a row without new data); ${kept}. ` +
              `Last error: ${errorMessage(err)}`,
            { cause: err },
          );
        }
        await sleep(Math.min(8000, baseDelay * 2 ** (failuresWithoutProgress - 1)));
      }
    }
    await file.sync();
  } catch (err) {
    await file.close();
    // Data proven wrong goes; so does an empty file, which would only litter the cache.
    if (err instanceof DownloadConsistencyError || size === 0) await rm(incomplete, { force: true });
    throw err;
  }
  await file.close();
  bar.done();
  return { size, sha256: hash?.digest('hex'), resumedFrom };
}
