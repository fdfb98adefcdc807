/**
 * Serves one function over HTTP the way Knative delivers events: CloudEvents in binary or
 * structured mode on `/`, health on /health/liveness and /health/readiness, metrics on /metrics.
 * Plain JSON webhooks (Kubernetes watch events, signed with a shared secret) on `/` too, told
 * apart by the absence of a CloudEvent envelope, and a signed POST /resync (webhook.ts, resync.ts).
 *
 * Answers follow what a Knative broker does with them: 2xx with an EMPTY body when applied or
 * stale (a 2xx body that is not a CloudEvent counts as a failed delivery), 400 for input that will
 * never succeed (not retried), 503 when Redis is unreachable (retried with backoff).
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { invalidEvent, isRacklbError } from '../errors.js';
import { decodeHttpEvent, decodeWatchEvent } from '../events/codec.js';
import { journalRejectedEnvelope, runHandler, type FunctionDefinition, type FunctionDeps } from './handler.js';
import { answerResync } from './resync.js';
import { functionMetrics } from './metrics.js';
import { bucketFor, type RateLimit } from './ratelimit.js';
import { authenticateWebhook, isCloudEventRequest, type WebhookOptions } from './webhook.js';

export const DEFAULT_BODY_LIMIT = 1024 * 1024;

export interface ServeOptions {
  host: string;
  port: number;
  bodyLimit?: number;
  /** Plain JSON webhooks and POST /resync (src/serve/webhook.ts); both refused when unset. */
  webhooks?: WebhookOptions;
  /** Requests a second on POST routes (ratelimit.ts); unlimited when unset. */
  rateLimit?: RateLimit;
  /** The process's own figures on /metrics too (src/serve/metrics.ts). */
  processMetrics?: boolean;
}

export interface FunctionServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

class BodyTooLarge extends Error {}

/** How much of an oversized chunked body is read (and dropped) before the connection is cut. */
const DRAIN_FACTOR = 4;

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > limit) {
      reject(new BodyTooLarge());
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // A body without content-length (chunked) is read to its end and dropped, so the sender
        // gets its 413 instead of a connection reset; one that goes on and on is cut off.
        if (!tooLarge) chunks.length = 0;
        tooLarge = true;
        if (size > limit * DRAIN_FACTOR) {
          reject(new BodyTooLarge());
          req.destroy();
        }
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => (tooLarge ? reject(new BodyTooLarge()) : resolve(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function answer(res: ServerResponse, status: number, headers: Record<string, string>, body?: string): void {
  const safe: Record<string, string> = {};
  // Header values must be latin-1 without control characters; outcome details can carry anything.
  for (const [k, v] of Object.entries(headers)) safe[k] = v.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000);
  if (body !== undefined) {
    res.writeHead(status, { ...safe, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } else {
    res.writeHead(status, { ...safe, 'content-length': 0 });
    res.end();
  }
}

export async function serveFunction(def: FunctionDefinition, deps: FunctionDeps, opts: ServeOptions): Promise<FunctionServer> {
  const limit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const bucket = bucketFor(opts.rateLimit);
  const metrics = functionMetrics(def, deps.store, { processMetrics: opts.processMetrics === true });

  const server = createServer((req, res) => {
    void handleRequest(req, res).catch((err: unknown) => {
      deps.logger.error({ err: String(err) }, 'request failed unexpectedly');
      if (!res.headersSent) answer(res, 500, {}, JSON.stringify({ error: 'internal error' }));
    });
  });

  // Requests Node's parser refuses (headers over 16 KiB, broken framing) get a reason too; Node's
  // own answer is a bare status line. They never reach a function, so they are not journaled.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const reason = JSON.stringify({ error: `malformed HTTP request (${err.code ?? 'parse error'}): ${status === 431 ? 'headers larger than 16 KiB' : err.message}` });
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`);
  });

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/health/liveness') return answer(res, 200, {});
    if (req.method === 'GET' && path === '/health/readiness') {
      try {
        await deps.store.ping();
        return answer(res, 200, {});
      } catch (err) {
        return answer(res, 503, {}, JSON.stringify({ error: (err as Error).message }));
      }
    }
    if (req.method === 'GET' && path === '/metrics') {
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'content-type': metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (path !== '/' && path !== '/resync') return answer(res, 404, {}, JSON.stringify({ error: `no route ${path}` }));
    if (req.method !== 'POST') return answer(res, 405, { allow: 'POST' }, JSON.stringify({ error: 'events are POSTed to /, resync requests to /resync' }));
    // Health and metrics are never limited, so probes keep answering during a flood.
    if (bucket !== undefined && !bucket.take()) {
      metrics.count('throttled');
      const wait = bucket.retryAfterSeconds();
      return answer(res, 429, { 'retry-after': String(wait) }, JSON.stringify({ error: `over the rate limit of ${bucket.rate} requests per second (burst ${bucket.burst}): retry after ${wait} s` }));
    }

    const stop = metrics.time();
    let body: string;
    try {
      body = await readBody(req, limit);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        metrics.count('rejected');
        await journalRejectedEnvelope(deps, def.name, `request body larger than ${limit} bytes`, 'http', '');
        return answer(res, 413, { connection: 'close' }, JSON.stringify({ error: `request body larger than ${limit} bytes` }));
      }
      throw err;
    }
    // Webhooks and /resync carry no CloudEvent envelope; the shared secret stands in for it.
    const webhook = path === '/' && !isCloudEventRequest(req.headers);
    const webhookOpts = opts.webhooks ?? {};
    if (path === '/resync' || (webhook && (webhookOpts.secret !== undefined || webhookOpts.allowUnsigned))) {
      const auth = authenticateWebhook(req.headers, body, webhookOpts);
      if (!auth.ok) {
        metrics.count('unauthorized');
        await journalRejectedEnvelope(deps, def.name, auth.reason, path === '/resync' ? 'resync' : 'webhook', '');
        stop();
        return answer(res, auth.status, { 'racklb-outcome': 'rejected' }, JSON.stringify({ error: auth.reason }));
      }
    }
    if (path === '/resync') {
      const resync = await answerResync(def, deps, body);
      stop();
      return answer(res, resync.status, {}, resync.body);
    }
    let event;
    try {
      if (webhook && webhookOpts.secret === undefined && !webhookOpts.allowUnsigned) {
        throw invalidEvent('not a CloudEvent: expected ce-* headers (binary mode) or content-type application/cloudevents+json (structured mode); plain JSON webhooks are off (set RACKLB_WEBHOOK_SECRET or RACKLB_WEBHOOK_SECRET_FILE, or --allow-unsigned-webhooks)');
      }
      event = webhook ? decodeWatchEvent(body) : decodeHttpEvent(req.headers, body);
    } catch (err) {
      const message = isRacklbError(err) ? err.message : String(err);
      const field = isRacklbError(err) ? err.field : undefined;
      metrics.count('rejected');
      await journalRejectedEnvelope(deps, def.name, message, webhook ? 'webhook' : 'http', body);
      stop();
      return answer(res, 400, { 'racklb-outcome': 'rejected' }, JSON.stringify({ error: message, ...(field === undefined ? {} : { field }) }));
    }
    const handled = await runHandler(def, event, deps, webhook ? 'webhook' : 'http');
    stop();
    if (!handled.ok) {
      metrics.count('retry');
      return answer(res, 503, { 'retry-after': '1' }, JSON.stringify({ error: handled.error.message, code: handled.error.code }));
    }
    const { outcome } = handled;
    metrics.count(outcome.outcome);
    if (outcome.outcome === 'rejected') {
      return answer(res, 400, { 'racklb-outcome': 'rejected' }, JSON.stringify({ error: outcome.detail, field: outcome.field, rule: outcome.rule }));
    }
    return answer(res, 200, { 'racklb-outcome': outcome.outcome, 'racklb-detail': outcome.detail });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
