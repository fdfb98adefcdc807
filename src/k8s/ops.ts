/**
 * The small HTTP endpoint every long-running racklb process offers: /metrics for Prometheus, and
 * Knative-style /health/liveness and /health/readiness for the kubelet.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface OpsServer {
  url: string;
  close(): Promise<void>;
}

/** `live` answers /health/liveness; a process that only ever fails by exiting leaves it out. */
export async function serveOps(registry: Registry, ready: () => boolean, host: string, port: number, live: () => boolean = () => true): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      void registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else if (path === '/health/liveness') {
      res.writeHead(live() ? 200 : 503).end();
    } else if (path === '/health/readiness') {
      res.writeHead(ready() ? 200 : 503).end();
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
