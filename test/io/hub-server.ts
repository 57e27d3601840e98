/**
 * A fake Hugging Face hub on 127.0.0.1 for the hub client tests: the resolve endpoint (HEAD and GET,
 * with the hub's X-Repo-Commit / X-Linked-Etag / X-Linked-Size / X-Error-Code headers), LFS files
 * redirected to a blob path (relative, absolute, or on a second "CDN" server), Range requests, the
 * revision API, and fault injection (dropped connections, wrong sizes, wrong hashes, 503s).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeFile {
  content: Buffer;
  /** Stored in LFS: resolve answers 302 to the blob path and the etag is the sha256. */
  lfs?: boolean;
}

export interface FakeRevision {
  commit: string;
  files: Record<string, FakeFile>;
}

export interface FakeRepo {
  id: string;
  type: 'model' | 'dataset';
  /** Branch and tag names mapped to revisions (each also reachable by its commit). */
  refs: Record<string, FakeRevision>;
  /** When set, requests must carry `Authorization: Bearer <token>`, else 401 RepoNotFound. */
  token?: string;
}

export interface LoggedRequest {
  server: 'hub' | 'cdn';
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface Faults {
  /** How LFS redirects are written: a relative path, an absolute URL to this server, or the CDN server. */
  redirect: 'relative' | 'absolute' | 'cdn';
  /** Blob GETs cut after this many bytes (connection destroyed), counting down per request. */
  dropAfter: { bytes: number; times: number } | undefined;
  /** Blob GETs stall (headers and these bytes sent, then silence) this many times. */
  stallAfter: { bytes: number; times: number } | undefined;
  /** Blob GETs that carry a Range header are cut right away, this many times. */
  dropRanged: number;
  /** X-Linked-Size (and HEAD Content-Length) is off by this many bytes. */
  sizeDelta: number;
  /** The announced LFS etag is replaced by this (content unchanged): a hash mismatch. */
  fakeEtag: string | undefined;
  /** Answer 503 to this many HEAD requests first. */
  unavailable: number;
  /** Ignore Range headers (answer 200 with the whole file). */
  ignoreRange: boolean;
}

export function gitBlobSha1(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

export function sha256Hex(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** A deterministic 40-hex commit id from a label. */
export function fakeCommit(label: string): string {
  return createHash('sha1').update(label).digest('hex');
}

/** Deterministic pseudo-random bytes (xorshift32, seed 42 by default). */
export function pseudoRandomBytes(n: number, seed = 42): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  });
}

function close(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

export class FakeHub {
  readonly repos: FakeRepo[] = [];
  readonly log: LoggedRequest[] = [];
  faults: Faults = FakeHub.noFaults();
  url = '';
  cdnUrl = '';
  private readonly hub = http.createServer((req, res) => this.handle('hub', req, res));
  private readonly cdn = http.createServer((req, res) => this.handle('cdn', req, res));

  static noFaults(): Faults {
    return {
      redirect: 'absolute',
      dropAfter: undefined,
      stallAfter: undefined,
      dropRanged: 0,
      sizeDelta: 0,
      fakeEtag: undefined,
      unavailable: 0,
      ignoreRange: false,
    };
  }

  async start(): Promise<this> {
    this.url = await listen(this.hub);
    this.cdnUrl = await listen(this.cdn);
    return this;
  }

  async stop(): Promise<void> {
    await Promise.all([close(this.hub), close(this.cdn)]);
  }

  reset(): void {
    this.log.length = 0;
    this.faults = FakeHub.noFaults();
  }

  addRepo(repo: FakeRepo): FakeRepo {
    this.repos.push(repo);
    return repo;
  }

  /** Requests logged for one server, optionally only those whose URL contains `part`. */
  requests(server: 'hub' | 'cdn', part = ''): LoggedRequest[] {
    return this.log.filter((r) => r.server === server && r.url.includes(part));
  }

  static etagOf(file: FakeFile): string {
    return file.lfs === true ? sha256Hex(file.content) : gitBlobSha1(file.content);
  }

  private findBlob(sha: string): Buffer | undefined {
    for (const repo of this.repos) {
      for (const rev of Object.values(repo.refs)) {
        for (const file of Object.values(rev.files)) if (file.lfs === true && sha256Hex(file.content) === sha) return file.content;
      }
    }
    return undefined;
  }

  private handle(server: 'hub' | 'cdn', req: http.IncomingMessage, res: http.ServerResponse): void {
    this.log.push({ server, method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const path = decodeURI((req.url ?? '').split('?')[0]!);
    if (path.startsWith('/lfs-blobs/')) {
      this.serveBytes(req, res, this.findBlob(path.slice('/lfs-blobs/'.length)), true);
      return;
    }
    if (server === 'cdn') {
      res.writeHead(404).end();
      return;
    }
    const api = /^\/api\/(models|datasets)\/(.+)\/revision\/([^/]+)$/.exec(path);
    if (api !== null) {
      this.serveApi(req, res, api[1] === 'datasets' ? 'dataset' : 'model', api[2]!, decodeURIComponent(api[3]!));
      return;
    }
    this.serveResolve(req, res, path);
  }

  private repoAndRevision(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    type: 'model' | 'dataset',
    id: string,
    revision: string,
  ): { repo: FakeRepo; rev: FakeRevision } | undefined {
    const repo = this.repos.find((r) => r.type === type && r.id === id);
    if (repo === undefined || (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`)) {
      res.writeHead(401, { 'X-Error-Code': 'RepoNotFound', 'X-Error-Message': 'Invalid username or password.', 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'Repository not found' }));
      return undefined;
    }
    const rev = repo.refs[revision] ?? Object.values(repo.refs).find((r) => r.commit === revision);
    if (rev === undefined) {
      res.writeHead(404, { 'X-Error-Code': 'RevisionNotFound', 'X-Error-Message': 'Invalid rev id: ' + revision });
      res.end();
      return undefined;
    }
    return { repo, rev };
  }

  private serveApi(req: http.IncomingMessage, res: http.ServerResponse, type: 'model' | 'dataset', id: string, revision: string): void {
    const found = this.repoAndRevision(req, res, type, id, revision);
    if (found === undefined) return;
    const body = JSON.stringify({
      id,
      sha: found.rev.commit,
      siblings: Object.keys(found.rev.files).map((rfilename) => ({ rfilename })),
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  private serveResolve(req: http.IncomingMessage, res: http.ServerResponse, path: string): void {
    const m = /^\/(datasets\/)?([^/]+(?:\/[^/]+)?)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m === null) {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'HEAD' && this.faults.unavailable > 0) {
      this.faults.unavailable--;
      res.writeHead(503).end();
      return;
    }
    const found = this.repoAndRevision(req, res, m[1] !== undefined ? 'dataset' : 'model', m[2]!, decodeURIComponent(m[3]!));
    if (found === undefined) return;
    const file = found.rev.files[m[4]!];
    const commitHeader = { 'X-Repo-Commit': found.rev.commit };
    if (file === undefined) {
      res.writeHead(404, { ...commitHeader, 'X-Error-Code': 'EntryNotFound', 'X-Error-Message': 'Entry not found' });
      res.end();
      return;
    }
    if (file.lfs === true) {
      const sha = sha256Hex(file.content);
      const blobPath = `/lfs-blobs/${sha}`;
      const location = this.faults.redirect === 'relative' ? blobPath : `${this.faults.redirect === 'cdn' ? this.cdnUrl : this.url}${blobPath}`;
      res.writeHead(302, {
        ...commitHeader,
        Location: location,
        ETag: `"${gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\n`))}"`,
        'X-Linked-Etag': `"${this.faults.fakeEtag ?? sha}"`,
        'X-Linked-Size': String(file.content.length + this.faults.sizeDelta),
        'Content-Length': '0',
      });
      res.end();
      return;
    }
    res.setHeader('X-Repo-Commit', found.rev.commit);
    res.setHeader('ETag', `"${gitBlobSha1(file.content)}"`);
    this.serveBytes(req, res, file.content, false);
  }

  /** Serves bytes with Range support and the configured faults (drops apply to blob paths only). */
  private serveBytes(req: http.IncomingMessage, res: http.ServerResponse, content: Buffer | undefined, isBlob: boolean): void {
    if (content === undefined) {
      res.writeHead(404).end();
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range !== null && !this.faults.ignoreRange ? Number(range[1]) : 0;
    const announced = content.length + (isBlob ? 0 : this.faults.sizeDelta);
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'Content-Length': String(announced), 'Accept-Ranges': 'bytes' });
      res.end();
      return;
    }
    if (start > content.length) {
      res.writeHead(416, { 'Content-Range': `bytes */${content.length}` }).end();
      return;
    }
    const body = content.subarray(start);
    const headers: http.OutgoingHttpHeaders = { 'Content-Length': String(body.length), 'Accept-Ranges': 'bytes' };
    if (start > 0) headers['Content-Range'] = `bytes ${start}-${content.length - 1}/${content.length}`;
    res.writeHead(start > 0 ? 206 : 200, headers);
    if (isBlob && range !== null && this.faults.dropRanged > 0) {
      this.faults.dropRanged--;
      res.flushHeaders();
      setTimeout(() => res.socket?.destroy(), 5);
      return;
    }
    const stall = this.faults.stallAfter;
    if (isBlob && stall !== undefined && stall.times > 0 && stall.bytes < body.length) {
      stall.times--;
      res.write(body.subarray(0, stall.bytes)); // then nothing: the client's idle timeout must fire
      return;
    }
    const drop = this.faults.dropAfter;
    if (isBlob && drop !== undefined && drop.times > 0 && drop.bytes < body.length) {
      drop.times--;
      res.write(body.subarray(0, drop.bytes));
      // Let the first bytes reach the client before the connection goes away.
      setTimeout(() => res.socket?.destroy(), 20);
      return;
    }
    res.end(body);
  }
}
