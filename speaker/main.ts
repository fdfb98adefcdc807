/** `racklb speaker`: runs one speaker beside its gobgpd until SIGTERM. */
import { collectDefaultMetrics } from 'prom-client';
import { GobgpClient } from '../src/gobgp/client.js';
import { serveOps } from '../src/k8s/ops.js';
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

  const ops = opts.metricsPort === undefined ? undefined : await serveOps(metrics.registry, () => speaker.isInSync(), opts.metricsHost, opts.metricsPort);

  await speaker.start();
  logger.info({ gobgp: opts.gobgp }, 'speaker started');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  // Stopping leaves gobgpd as it is: routes stay announced while a new speaker takes over.
  await speaker.stop();
  await ops?.close();
  gobgp.close();
  await store.close();
}
