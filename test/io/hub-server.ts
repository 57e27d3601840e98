/**
 * A fake Hugging Face hub on 127.0.0.1 for the hub client tests: the resolve endpoint (HEAD and GET,
 * with the hub's X-Repo-Commit / X-Linked-Etag / X-Linked-Size / X-Error-Code headers), LFS files
 * redirected to a blob path (relative, absolute, or on a second "CDN" server), Range requests, the
 * revision API, and fault injection: the fixed `faults` below (dropped connections, wrong sizes, wrong
 * hashes, 503s) for the plain tests, and `script`, one `Fault` per request index, which the fuzz tests
 * fill from fast-check (truncated or endless bodies, wrong Content-Length, mangled headers and JSON,
 * wrong status codes, redirects of every kind, dribbled bodies, stalled connections, non-HTTP bytes).
 * Scripted answers are written as raw bytes on the socket, so they can break what node:http would
 * refuse to send (a Content-Length that does not match the body, a cut-off header block).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

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
  /** How LFS redirects are written: a relative path, an absolute URL to this server, the CDN server, or `//host:port/path` of the CDN server. */
  redirect: 'relative' | 'absolute' | 'cdn' | 'protocol-relative';
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

/** Response headers a scripted fault may replace or drop. */
export const FAULT_HEADERS = [
  'etag',
  'x-linked-etag',
  'x-repo-commit',
  'x-linked-size',
  'content-length',
  'content-range',
  'content-encoding',
  'location',
  'x-error-code',
] as const;
export type FaultHeader = (typeof FAULT_HEADERS)[number];

/** Where a scripted redirect points. */
export type RedirectTarget =
  | 'self' // the same URL, absolute: a loop
  | 'self-relative' // the same path, relative: a loop
  | 'cdn' // the same path on the CDN server (another origin)
  | 'protocol-relative' // `//host:port/path` of the CDN server
  | 'dead' // a port nothing listens on
  | 'malformed' // not a URL at all
  | 'ftp'; // a scheme the client does not speak

/**
 * One scripted fault, applied to the answer of one request. Positions (`at`) are taken modulo the
 * length of what they cut, so any integer is meaningful.
 */
export type Fault =
  /** This status instead (an error body; X-Repo-Commit kept; X-Error-Code when given). */
  | { kind: 'status'; status: number; errorCode?: string }
  /** One header replaced by `value`, or dropped when `value` is null. */
  | { kind: 'header'; name: FaultHeader; value: string | null }
  /** The raw response (status line, headers and body) cut after `at` bytes, then the connection closed. */
  | { kind: 'truncate'; at: number }
  /** Content-Length off by `delta` (the body unchanged), then the connection closed. */
  | { kind: 'length'; delta: number }
  /** The body with its byte at `at` xor-ed with `xor` (1..255). */
  | { kind: 'corrupt'; at: number; xor: number }
  /** A different body with a matching Content-Length (mangled JSON, wrong bytes). */
  | { kind: 'body'; body: Buffer }
  /** A 302 to `to`, the hub headers kept. */
  | { kind: 'redirect'; to: RedirectTarget }
  /** The raw response sent in `parts` pieces, `delayMs` apart. */
  | { kind: 'dribble'; parts: number; delayMs: number }
  /** Silence: before any byte, after the header block, or after `at` body bytes; the connection stays open. */
  | { kind: 'stall'; when: 'before-headers' | 'after-headers' | 'mid-body'; at: number }
  /** These bytes instead of an HTTP response, then the connection closed. */
  | { kind: 'garbage'; bytes: Buffer }
  /** A 200 with no Content-Length whose body never ends (until the client hangs up or 256 MiB). */
  | { kind: 'endless' };

/** What a handler answers, before faults are applied. */
interface Reply {
  status: number;
  headers: [string, string][];
  body: Buffer;
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
  /** Scripted faults by request index (the index in `log`, both servers counted): applied once each. */
  script = new Map<number, Fault>();
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
    this.script.clear();
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
    const index = this.log.length;
    this.log.push({ server, method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const { reply, isBlob } = this.route(server, req);
    const fault = this.script.get(index);
    if (fault === undefined) {
      this.send(req, res, reply, isBlob);
      return;
    }
    this.script.delete(index);
    this.sendFaulty(server, req, reply, fault);
  }

  private route(server: 'hub' | 'cdn', req: http.IncomingMessage): { reply: Reply; isBlob: boolean } {
    let path: string;
    try {
      path = decodeURI((req.url ?? '').split('?')[0]!);
    } catch {
      return { reply: { status: 400, headers: [], body: Buffer.from('bad path') }, isBlob: false };
    }
    if (path.startsWith('/lfs-blobs/')) return { reply: this.bytesReply(req, this.findBlob(path.slice('/lfs-blobs/'.length)), true), isBlob: true };
    if (server === 'cdn') return { reply: notFound(), isBlob: false };
    const api = /^\/api\/(models|datasets)\/(.+)\/revision\/([^/]+)$/.exec(path);
    if (api !== null) return { reply: this.apiReply(req, api[1] === 'datasets' ? 'dataset' : 'model', api[2]!, decodeURIComponent(api[3]!)), isBlob: false };
    return { reply: this.resolveReply(req, path), isBlob: false };
  }

  private repoAndRevision(req: http.IncomingMessage, type: 'model' | 'dataset', id: string, revision: string): { repo: FakeRepo; rev: FakeRevision } | Reply {
    const repo = this.repos.find((r) => r.type === type && r.id === id);
    if (repo === undefined || (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`)) {
      return {
        status: 401,
        headers: [
          ['X-Error-Code', 'RepoNotFound'],
          ['X-Error-Message', 'Invalid username or password.'],
          ['Content-Type', 'application/json'],
        ],
        body: Buffer.from(JSON.stringify({ error: 'Repository not found' })),
      };
    }
    const rev = repo.refs[revision] ?? Object.values(repo.refs).find((r) => r.commit === revision);
    if (rev === undefined) {
      return {
        status: 404,
        headers: [
          ['X-Error-Code', 'RevisionNotFound'],
          ['X-Error-Message', 'Invalid rev id: ' + revision],
        ],
        body: Buffer.alloc(0),
      };
    }
    return { repo, rev };
  }

  private apiReply(req: http.IncomingMessage, type: 'model' | 'dataset', id: string, revision: string): Reply {
    const found = this.repoAndRevision(req, type, id, revision);
    if ('status' in found) return found;
    const body = JSON.stringify({
      id,
      sha: found.rev.commit,
      siblings: Object.keys(found.rev.files).map((rfilename) => ({ rfilename })),
    });
    return { status: 200, headers: [['Content-Type', 'application/json']], body: Buffer.from(body) };
  }

  private resolveReply(req: http.IncomingMessage, path: string): Reply {
    const m = /^\/(datasets\/)?([^/]+(?:\/[^/]+)?)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m === null) return notFound();
    if (req.method === 'HEAD' && this.faults.unavailable > 0) {
      this.faults.unavailable--;
      return { status: 503, headers: [], body: Buffer.alloc(0) };
    }
    const found = this.repoAndRevision(req, m[1] !== undefined ? 'dataset' : 'model', m[2]!, decodeURIComponent(m[3]!));
    if ('status' in found) return found;
    const file = found.rev.files[m[4]!];
    const commitHeader: [string, string] = ['X-Repo-Commit', found.rev.commit];
    if (file === undefined) {
      return {
        status: 404,
        headers: [commitHeader, ['X-Error-Code', 'EntryNotFound'], ['X-Error-Message', 'Entry not found']],
        body: Buffer.alloc(0),
      };
    }
    if (file.lfs === true) {
      const sha = sha256Hex(file.content);
      const blobPath = `/lfs-blobs/${sha}`;
      const location = {
        relative: blobPath,
        absolute: `${this.url}${blobPath}`,
        cdn: `${this.cdnUrl}${blobPath}`,
        'protocol-relative': `//${new URL(this.cdnUrl).host}${blobPath}`,
      }[this.faults.redirect];
      return {
        status: 302,
        headers: [
          commitHeader,
          ['Location', location],
          ['ETag', `"${gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\n`))}"`],
          ['X-Linked-Etag', `"${this.faults.fakeEtag ?? sha}"`],
          ['X-Linked-Size', String(file.content.length + this.faults.sizeDelta)],
          ['Content-Length', '0'],
        ],
        body: Buffer.alloc(0),
      };
    }
    const reply = this.bytesReply(req, file.content, false);
    reply.headers.unshift(commitHeader, ['ETag', `"${gitBlobSha1(file.content)}"`]);
    return reply;
  }

  /** Bytes with Range support (`bytes=<start>-` only); a HEAD gets the announced size and no body. */
  private bytesReply(req: http.IncomingMessage, content: Buffer | undefined, isBlob: boolean): Reply {
    if (content === undefined) return notFound();
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range !== null && !this.faults.ignoreRange ? Number(range[1]) : 0;
    if (req.method === 'HEAD') {
      const announced = content.length + (isBlob ? 0 : this.faults.sizeDelta);
      return {
        status: 200,
        headers: [
          ['Content-Length', String(announced)],
          ['Accept-Ranges', 'bytes'],
        ],
        body: Buffer.alloc(0),
      };
    }
    if (start > content.length) return { status: 416, headers: [['Content-Range', `bytes */${content.length}`]], body: Buffer.alloc(0) };
    const headers: [string, string][] = [['Accept-Ranges', 'bytes']];
    if (start > 0) headers.push(['Content-Range', `bytes ${start}-${content.length - 1}/${content.length}`]);
    return { status: start > 0 ? 206 : 200, headers, body: content.subarray(start) };
  }

  /** Sends a reply through node:http, with the fixed `faults` that cut or stall blob bodies. */
  private send(req: http.IncomingMessage, res: http.ServerResponse, reply: Reply, isBlob: boolean): void {
    const headers: http.OutgoingHttpHeaders = Object.fromEntries(reply.headers);
    const isHead = req.method === 'HEAD';
    if (!isHead && !reply.headers.some(([k]) => k.toLowerCase() === 'content-length')) headers['Content-Length'] = String(reply.body.length);
    res.writeHead(reply.status, headers);
    const body = reply.body;
    if (isHead || !isBlob || (reply.status !== 200 && reply.status !== 206)) {
      res.end(isHead ? undefined : body);
      return;
    }
    if (req.headers.range !== undefined && this.faults.dropRanged > 0) {
      this.faults.dropRanged--;
      res.flushHeaders();
      setTimeout(() => res.socket?.destroy(), 5);
      return;
    }
    const stall = this.faults.stallAfter;
    if (stall !== undefined && stall.times > 0 && stall.bytes < body.length) {
      stall.times--;
      res.write(body.subarray(0, stall.bytes)); // then nothing: the client's idle timeout must fire
      return;
    }
    const drop = this.faults.dropAfter;
    if (drop !== undefined && drop.times > 0 && drop.bytes < body.length) {
      drop.times--;
      res.write(body.subarray(0, drop.bytes));
      // Let the first bytes reach the client before the connection goes away.
      setTimeout(() => res.socket?.destroy(), 20);
      return;
    }
    res.end(body);
  }

  /** Writes `reply` with `fault` applied as raw bytes on the socket (node:http would refuse most of these). */
  private sendFaulty(server: 'hub' | 'cdn', req: http.IncomingMessage, reply: Reply, fault: Fault): void {
    const socket = req.socket;
    const isHead = req.method === 'HEAD';
    let status = reply.status;
    let body = reply.body;
    let headers = reply.headers.filter(([k]) => k.toLowerCase() !== 'content-length');
    let contentLength: string | null = String(isHead ? (headerOf(reply.headers, 'content-length') ?? '0') : body.length);
    switch (fault.kind) {
      case 'status':
        status = fault.status;
        body = Buffer.from(JSON.stringify({ error: `injected HTTP ${fault.status}` }));
        headers = headers.filter(([k]) => k.toLowerCase() === 'x-repo-commit');
        headers.push(['Content-Type', 'application/json']);
        if (fault.errorCode !== undefined) headers.push(['X-Error-Code', fault.errorCode]);
        contentLength = String(body.length);
        break;
      case 'header':
        if (fault.name === 'content-length') contentLength = fault.value;
        else {
          headers = headers.filter(([k]) => k.toLowerCase() !== fault.name);
          if (fault.value !== null) headers.push([fault.name, fault.value]);
        }
        break;
      case 'length':
        contentLength = String(Math.max(0, Number(contentLength) + fault.delta));
        break;
      case 'corrupt':
        if (body.length > 0) {
          body = Buffer.from(body);
          const at = fault.at % body.length;
          body[at] = body[at]! ^ fault.xor;
        }
        break;
      case 'body':
        body = fault.body;
        contentLength = String(body.length);
        break;
      case 'redirect':
        status = 302;
        body = Buffer.alloc(0);
        contentLength = '0';
        headers = headers.filter(([k]) => k.toLowerCase() !== 'location');
        headers.push(['Location', this.redirectTarget(server, req, fault.to)]);
        break;
      case 'endless':
        status = 200;
        contentLength = null;
        break;
      default:
        break;
    }
    if (contentLength !== null) headers.push(['Content-Length', contentLength]);
    const statusLine = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Injected'}\r\n`;
    const head = Buffer.from(`${statusLine}${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n\r\n`, 'latin1');
    const raw = isHead ? head : Buffer.concat([head, body]);
    switch (fault.kind) {
      case 'truncate':
        socket.end(raw.subarray(0, fault.at % raw.length));
        return;
      case 'dribble':
        dribble(socket, raw, Math.max(1, fault.parts), fault.delayMs);
        return;
      case 'stall':
        if (fault.when === 'after-headers') socket.write(head);
        else if (fault.when === 'mid-body')
          socket.write(Buffer.concat([head, isHead ? Buffer.alloc(0) : body.subarray(0, fault.at % Math.max(1, body.length))]));
        return; // and then nothing, with the connection open
      case 'garbage':
        socket.end(fault.bytes);
        return;
      case 'endless':
        pour(socket, head, body.length > 0 ? body : Buffer.from('x'));
        return;
      default:
        socket.end(raw);
    }
  }

  private redirectTarget(server: 'hub' | 'cdn', req: http.IncomingMessage, to: RedirectTarget): string {
    const path = req.url ?? '/';
    const cdnHostPort = new URL(this.cdnUrl).host;
    switch (to) {
      case 'self':
        return `${server === 'hub' ? this.url : this.cdnUrl}${path}`;
      case 'self-relative':
        return path;
      case 'cdn':
        return `${this.cdnUrl}${path}`;
      case 'protocol-relative':
        return `//${cdnHostPort}${path}`;
      case 'dead':
        return `http://127.0.0.1:1${path}`;
      case 'malformed':
        return 'http://[::1';
      case 'ftp':
        return `ftp://${cdnHostPort}${path}`;
    }
  }
}

function notFound(): Reply {
  return { status: 404, headers: [], body: Buffer.alloc(0) };
}

function headerOf(headers: [string, string][], name: string): string | undefined {
  return headers.find(([k]) => k.toLowerCase() === name)?.[1];
}

/** Writes `raw` in `parts` pieces `delayMs` apart, then closes; stops when the client hangs up. */
function dribble(socket: Socket, raw: Buffer, parts: number, delayMs: number): void {
  const step = Math.max(1, Math.ceil(raw.length / parts));
  let offset = 0;
  const next = (): void => {
    if (socket.destroyed) return;
    const piece = raw.subarray(offset, offset + step);
    offset += piece.length;
    if (offset >= raw.length) socket.end(piece);
    else {
      socket.write(piece);
      setTimeout(next, delayMs);
    }
  };
  next();
}

/** Writes `head`, then `chunk` over and over (with backpressure) until the client hangs up, capped at 256 MiB. */
function pour(socket: Socket, head: Buffer, chunk: Buffer): void {
  const block = Buffer.concat(Array.from({ length: Math.ceil(65536 / chunk.length) }, () => chunk));
  let sent = 0;
  socket.write(head);
  const fill = (): void => {
    while (!socket.destroyed && sent < 256 * 1024 * 1024) {
      sent += block.length;
      if (!socket.write(block)) {
        socket.once('drain', fill);
        return;
      }
    }
    if (!socket.destroyed) socket.end();
  };
  fill();
}

/** Environment variables the hub client reads: tests clear them, so that a user's settings cannot leak in. */
export const HUB_ENV_KEYS = [
  'HF_HOME',
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'HF_ENDPOINT',
  'HF_TOKEN',
  'HUGGING_FACE_HUB_TOKEN',
  'HF_TOKEN_PATH',
  'HF_HUB_OFFLINE',
  'TRANSFORMERS_OFFLINE',
  'XDG_CACHE_HOME',
  'HF_HUB_ETAG_TIMEOUT',
  'HF_HUB_DOWNLOAD_TIMEOUT',
] as const;

/**
 * Points the hub client at `endpoint` with its cache in `home`, every other hub variable cleared.
 * Returns a function that puts the environment back as it was.
 */
export function useHubEnv(endpoint: string, home: string): () => void {
  const saved = new Map(HUB_ENV_KEYS.map((k) => [k, process.env[k]]));
  for (const k of HUB_ENV_KEYS) delete process.env[k];
  process.env.HF_HOME = home;
  process.env.HF_ENDPOINT = endpoint;
  return () => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}
