/**
 * A small HTTP(S) client over node:http / node:https for the hub client.
 *
 * Why not global fetch: we need redirects under our own control (the Authorization header must not
 * follow a redirect to another origin, and the hub's metadata sits on the redirect response itself),
 * no transparent decompression (sizes are checked byte for byte), and an idle timeout on the socket
 * rather than on the whole transfer (a 3 GB file may take an hour, a stalled socket must not).
 */
import http from 'node:http';
import https from 'node:https';

/** A response whose body has not been read yet. Read it, or call `discard()`. */
export interface HttpResponse {
  /** The URL that produced this response (after any redirects followed by `requestFollowing`). */
  url: string;
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
  /** One header value (the first if repeated), or undefined. Names are case-insensitive. */
  header(name: string): string | undefined;
  /** Drops the body so the socket can be reused. */
  discard(): void;
  /** Turns an error thrown while reading the body into a NetworkError (naming a timeout as such). */
  bodyError(err: unknown): NetworkError;
}

export interface HttpRequestOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** Time in ms to connect, and then idle time on the socket, after which the request fails with a NetworkError (default 10 000). */
  timeoutMs?: number;
}

/** Error codes that mean the host cannot be reached at all: retrying at once will not help. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH']);

/** A transport failure: no connection, reset, timeout, or a body cut short. */
export class NetworkError extends Error {
  readonly code: string | undefined;
  readonly url: string;
  constructor(url: string, message: string, code: string | undefined, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NetworkError';
    this.url = url;
    this.code = code;
  }
  /** True when the host could not be reached at all (DNS failure, connection refused, no route). */
  get unreachable(): boolean {
    return this.code !== undefined && UNREACHABLE_CODES.has(this.code);
  }
}

/** The message of an unknown thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Wraps a node socket/request error into a NetworkError naming the URL. */
export function toNetworkError(url: string, err: unknown): NetworkError {
  if (err instanceof NetworkError) return err;
  const code = errorCode(err);
  return new NetworkError(url, `network error on ${url}: ${errorMessage(err)}${code !== undefined ? ` (${code})` : ''}`, code, err);
}

function firstHeader(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  if (Array.isArray(v)) return v[0];
  return v;
}

/** Sends one request and resolves when the response headers arrive. Redirects are not followed. */
export function httpRequest(url: string, options: HttpRequestOptions = {}): Promise<HttpResponse> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : target.protocol === 'http:' ? http : undefined;
  if (transport === undefined) {
    return Promise.reject(new Error(`unsupported URL protocol ${target.protocol} in ${url} (only http: and https:)`));
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  let timeout: NetworkError | undefined;
  return new Promise<HttpResponse>((resolve, reject) => {
    // The `timeout` option, unlike req.setTimeout, also covers connecting: a host that never
    // answers the handshake would otherwise hang until the kernel gives up, minutes later. Socket
    // timers are unref'd, so they never keep the process alive.
    const req = transport.request(target, { method: options.method ?? 'GET', headers: options.headers ?? {}, timeout: timeoutMs }, (res) => {
      resolve({
        url,
        status: res.statusCode ?? 0,
        headers: res.headers,
        body: res,
        header: (name) => firstHeader(res.headers, name),
        discard: () => {
          res.resume();
        },
        bodyError: (err) => timeout ?? toNetworkError(url, err),
      });
    });
    req.on('timeout', () => {
      const message =
        req.socket?.connecting === true
          ? `cannot connect to ${target.host} for ${url} within ${timeoutMs} ms (timeout)`
          : `no data from ${url} for ${timeoutMs} ms (timeout)`;
      timeout = new NetworkError(url, message, 'ETIMEDOUT');
      req.destroy(timeout);
    });
    req.on('error', (err) => reject(toNetworkError(url, err)));
    req.end();
  });
}

export function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

function withoutHeader(headers: Record<string, string>, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== name.toLowerCase()) out[k] = v;
  return out;
}

/**
 * The absolute URL a redirect from `from` points to; a Location that is not a URL is the server's
 * fault, reported as such (new URL alone throws a bare "Invalid URL" TypeError).
 */
export function redirectTarget(location: string, from: string): string {
  try {
    return new URL(location, from).href;
  } catch {
    throw new Error(`${from} redirected to "${location}", which is not a valid URL`);
  }
}

/**
 * Sends a request and follows up to `maxRedirects` redirects. Once a redirect leaves the origin
 * (scheme, host and port) of `url`, the Authorization header is dropped for the rest of the chain:
 * signed CDN URLs carry their own credentials and must never see the hub token.
 */
export async function requestFollowing(url: string, options: HttpRequestOptions & { maxRedirects?: number } = {}): Promise<HttpResponse> {
  const maxRedirects = options.maxRedirects ?? 10;
  const origin = new URL(url).origin;
  let headers = options.headers ?? {};
  let current = url;
  for (let hop = 0; ; hop++) {
    const res = await httpRequest(current, { ...options, headers });
    const location = res.header('location');
    if (!isRedirect(res.status) || location === undefined) return res;
    res.discard();
    if (hop >= maxRedirects) throw new Error(`too many redirects (more than ${maxRedirects}) starting from ${url}`);
    current = redirectTarget(location, current);
    if (new URL(current).origin !== origin) headers = withoutHeader(headers, 'authorization');
  }
}

/** Reads at most `limit` bytes of a body as text (the rest is discarded), for error messages and JSON. */
export async function readBodyText(res: HttpResponse, limit = 64 * 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      const part = chunk.subarray(0, limit - size);
      chunks.push(part);
      size += part.length;
      if (size >= limit) {
        res.body.destroy();
        break;
      }
    }
  } catch (err) {
    throw res.bodyError(err);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Reads a whole body of at most `limit` bytes; a longer one is an error naming the URL (a JSON
 * document cut at the limit would only fail later with a misleading parse error).
 */
export async function readBodyBytes(res: HttpResponse, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) {
        res.body.destroy();
        throw new Error(`the response from ${res.url} is larger than ${limit} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (size > limit) throw err;
    throw res.bodyError(err);
  }
  return Buffer.concat(chunks);
}

/**
 * What the server said about a failure: the X-Error-Message header, the `error` field of a JSON body
 * or a short non-HTML body, and the request id, in one line (empty when it said nothing).
 */
export function serverMessage(res: HttpResponse, bodyText: string): string {
  const parts: string[] = [];
  const fromHeader = res.header('x-error-message');
  if (fromHeader !== undefined && fromHeader.trim() !== '') parts.push(fromHeader.trim());
  const text = bodyText.trim();
  if (text !== '') {
    let fromJson: string | undefined;
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed === 'object' && parsed !== null && 'error' in parsed) {
        const e = (parsed as { error: unknown }).error;
        fromJson = Array.isArray(e) ? e.map(String).join('; ') : String(e);
      }
    } catch {
      fromJson = undefined; // not JSON: fall back to the raw text below
    }
    const isHtml = (res.header('content-type') ?? '').toLowerCase().includes('html');
    const candidate = fromJson ?? (isHtml ? undefined : text);
    if (candidate !== undefined && candidate !== '' && !parts.includes(candidate)) parts.push(candidate.slice(0, 500));
  }
  const requestId = res.header('x-request-id') ?? res.header('x-amzn-trace-id');
  if (requestId !== undefined) parts.push(`request id ${requestId}`);
  return parts.join('; ');
}

/** A non-success HTTP status. `retryable` for 408, 429 and 5xx. */
export class HttpStatusError extends Error {
  readonly status: number;
  readonly url: string;
  constructor(message: string, status: number, url: string) {
    super(message);
    this.name = 'HttpStatusError';
    this.status = status;
    this.url = url;
  }
  get retryable(): boolean {
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** Reads a short part of an error body and builds an HttpStatusError whose message starts with `what`. */
export async function statusError(res: HttpResponse, what: string): Promise<HttpStatusError> {
  let said: string;
  try {
    said = serverMessage(res, await readBodyText(res, 4096));
  } catch (err) {
    said = `(error body unreadable: ${errorMessage(err)})`;
  }
  return new HttpStatusError(`${what}: HTTP ${res.status} from ${res.url}${said !== '' ? ` (${said})` : ''}`, res.status, res.url);
}
