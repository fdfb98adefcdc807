/** `racklb speaker`: runs one speaker beside its gobgpd until SIGTERM. */
import { createServer } from 'node:http';
import { collectDefaultMetrics } from 'prom-client';
import { GobgpClient } from '../src/gobgp/client.js';
import { createLogger } from '../src/log.js';
import { Store } from '../src/store/store.js';
import { createSpeakerMetrics } from './metrics.js';
import { Speaker } from './speaker.js';

export interface SpeakerMainOptions {
  node: string;
  redis: string;
  gobgp: string;
  prefix: string;
  metricsPort?: number;
  metricsHost: string;
}

export async function runSpeaker(opts: SpeakerMainOptions): Promise<void> {
  const logger = createLogger('speaker').child({ node: opts.node });
  const store = Store.open(opts.redis, { prefix: opts.prefix, connectionName: `racklb-speaker-${opts.node}` });
  await store.connect().catch((err: unknown) => logger.warn({ err: String(err) }, 'Redis not reachable yet; will keep trying'));
  const gobgp = new GobgpClient(opts.gobgp, { logger });
  const metrics = createSpeakerMetrics();
  // The process's own figures (resident memory, V8 heap by space, GC pauses): the speaker has a
  // memory target (docs/performance.md), and its heap swings with bursts of route changes.
  collectDefaultMetrics({ register: metrics.registry });
  const speaker = new Speaker({ node: opts.node, store, gobgp, logger, metrics });

  let server: ReturnType<typeof createServer> | undefined;
  if (opts.metricsPort !== undefined) {
    server = createServer((req, res) => {
      if (req.url === '/metrics') {
        void metrics.registry.metrics().then((text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(text);
        });
      } else if (req.url === '/health/readiness') {
        res.writeHead(speaker.isInSync() ? 200 : 503).end();
      } else if (req.url === '/health/liveness') {
        res.writeHead(200).end();
      } else {
        res.writeHead(404).end();
      }
    });
    server.listen(opts.metricsPort, opts.metricsHost);
  }

  await speaker.start();
  logger.info({ gobgp: opts.gobgp }, 'speaker started');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  // Stopping leaves gobgpd as it is: routes stay announced while a new speaker takes over.
  await speaker.stop();
  server?.close();
  gobgp.close();
  await store.close();
}
