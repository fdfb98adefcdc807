/**
 * `racklb inspect`: a read-only web view of the state in Redis. node:http serves the page
 * (page.ts), the data as JSON under /api/, and /api/events, a server-sent event stream that pushes
 * the topology whenever it changes. One poller reads Redis for all watchers, and only while
 * someone watches. Nothing here writes to Redis.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { parseIp } from '../core/ip.js';
import { readSnapshot } from '../state/snapshot.js';
import type { Store } from '../store/store.js';
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from './page.js';
import { buildPaths, buildTopology, type Topology } from './topology.js';

export interface InspectOptions {
  store: Store;
  host: string;
  port: number;
  /** How often Redis is read while a page watches. */
  intervalMs?: number;
  logger?: Logger;
}

export interface InspectServer {
  url: string;
  close(): Promise<void>;
}

// A strict policy: the page loads only its own script and style, and talks only to this server.
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

/**
 * What decides whether watchers get a new topology: everything but the moment it was read and the
 * speakers' heartbeat times, which move every few seconds (whether a heartbeat went stale is kept).
 */
function changeKey(t: Topology): string {
  const { readAt: _readAt, ...rest } = t;
  return JSON.stringify({ ...rest, racks: rest.racks.map((r) => ({ ...r, speakers: r.speakers.map((sp) => ({ ...sp, lastSeen: null })) })) });
}

export async function serveInspect(opts: InspectOptions): Promise<InspectServer> {
  const interval = opts.intervalMs ?? 1000;
  const watchers = new Set<ServerResponse>();
  let timer: NodeJS.Timeout | undefined;
  let lastKey = '';
  let lastTopology: Topology | undefined;
  let polling = false;

  async function topology(): Promise<Topology> {
    return buildTopology(await readSnapshot(opts.store));
  }

  function push(res: ServerResponse, t: Topology): void {
    res.write(`event: topology\ndata: ${JSON.stringify(t)}\n\n`);
  }

  async function poll(): Promise<void> {
    if (polling) return;
    polling = true;
    try {
      const t = await topology();
      const key = changeKey(t);
      lastTopology = t;
      if (key !== lastKey) {
        lastKey = key;
        for (const w of watchers) push(w, t);
      }
    } catch (err) {
      opts.logger?.warn({ err: String(err) }, 'inspect: cannot read the state');
      for (const w of watchers) w.write(`event: problem\ndata: ${JSON.stringify({ error: String(err) })}\n\n`);
    } finally {
      polling = false;
    }
  }

  function watch(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    // Tells EventSource how soon to come back after a dropped connection.
    res.write('retry: 2000\n\n');
    watchers.add(res);
    if (lastTopology) push(res, lastTopology);
    else void poll();
    timer ??= setInterval(() => void poll(), interval);
    req.on('close', () => {
      watchers.delete(res);
      if (watchers.size === 0 && timer) {
        clearInterval(timer);
        timer = undefined;
        lastTopology = undefined;
        lastKey = '';
      }
    });
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://inspect');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return sendJson(res, 405, { error: 'racklb inspect is read-only: GET only' });
    }
    switch (url.pathname) {
      case '/':
        return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      case '/app.js':
        return send(res, 200, 'text/javascript; charset=utf-8', PAGE_JS);
      case '/app.css':
        return send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
      case '/health':
        return sendJson(res, 200, { ok: true });
      case '/api/topology':
        return sendJson(res, 200, await topology());
      case '/api/services':
        return sendJson(res, 200, (await topology()).services);
      case '/api/paths': {
        const ip = url.searchParams.get('ip') ?? '';
        const parsed = parseIp(ip);
        if (!parsed) return sendJson(res, 400, { error: `ip: must be an IPv4 or IPv6 address (got ${JSON.stringify(ip.slice(0, 60))})`, field: 'ip' });
        const paths = buildPaths(await readSnapshot(opts.store), parsed.text);
        return paths ? sendJson(res, 200, paths) : sendJson(res, 404, { error: `no Service holds ${parsed.text}` });
      }
      case '/api/events':
        return watch(req, res);
      default:
        return sendJson(res, 404, { error: `no page ${url.pathname}; the data is under /api/topology, /api/services, /api/paths?ip=IP, /api/events` });
    }
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      opts.logger?.warn({ err: String(err), url: req.url }, 'inspect: request failed');
      if (!res.headersSent) sendJson(res, 503, { error: `cannot read the state: ${String(err)}` });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        if (timer) clearInterval(timer);
        for (const w of watchers) w.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
