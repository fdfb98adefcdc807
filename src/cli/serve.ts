import { hostname } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { FUNCTIONS, FUNCTION_NAMES } from '../functions.js';
import { createLogger } from '../log.js';
import { serveFunction, DEFAULT_BODY_LIMIT } from '../serve/http.js';
import { serveOps } from '../k8s/ops.js';
import { functionMetrics } from '../serve/metrics.js';
import { consumeStream, StreamConsumerHealth } from '../serve/stream.js';
import { DEFAULT_TOLERANCE_SECONDS, loadWebhookSecret } from '../serve/webhook.js';
import type { FunctionName } from '../store/keys.js';
import { Store } from '../store/store.js';
import { RacklbError } from '../errors.js';
import { parsePort, redisDefault } from './options.js';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve one function: CloudEvents over HTTP (Knative), or from a Redis stream (KEDA)')
    .addArgument(program.createArgument('<function>', 'function to serve').choices(FUNCTION_NAMES))
    .option('--port <n>', 'HTTP port', parsePort, Number(process.env.PORT ?? 8080))
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--redis <url>', 'Redis URL (redis://, rediss://, unix:///path); env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--body-limit <bytes>', 'largest accepted request body', (v) => Number(v), DEFAULT_BODY_LIMIT)
    .option('--rate-limit <per-second>', 'requests a second accepted on POST routes, over it 429 with Retry-After (0: no limit); env RACKLB_RATE_LIMIT', parseRate, parseRate(process.env.RACKLB_RATE_LIMIT ?? '0'))
    .option('--rate-burst <requests>', 'largest burst above --rate-limit (default: one second\'s worth)', parseRate)
    .addOption(new Option('--from-stream', 'consume the function\'s Redis stream instead of serving HTTP (KEDA)'))
    .option('--consumer <name>', 'consumer name in the stream\'s group', hostname())
    .option('--metrics-port <n>', 'with --from-stream: serve /metrics and /health/* on this port', parsePort)
    .option('--metrics-host <address>', 'with --from-stream: address for /metrics', '127.0.0.1')
    .option('--allow-unsigned-webhooks', 'accept plain JSON webhooks and POST /resync without a signature when no webhook secret is set (trusted networks only)')
    .option('--webhook-tolerance <seconds>', 'how far a signed webhook\'s timestamp may be from this clock', parseTolerance, DEFAULT_TOLERANCE_SECONDS)
    .action(async (fn: FunctionName, opts: { port: number; host: string; redis?: string; prefix: string; bodyLimit: number; fromStream?: boolean; consumer: string; metricsPort?: number; metricsHost: string; allowUnsignedWebhooks?: boolean; webhookTolerance: number; rateLimit: number; rateBurst?: number }) => {
      if (!opts.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL)');
      if (opts.metricsPort !== undefined && !opts.fromStream) throw new RacklbError('RACKLB_USAGE', '--metrics-port: only with --from-stream; over HTTP, /metrics and /health/* are on --port');
      // The secret comes from the environment or a mounted file only, never from argv.
      const secret = loadWebhookSecret();
      if (secret !== undefined && opts.allowUnsignedWebhooks) throw new RacklbError('RACKLB_USAGE', '--allow-unsigned-webhooks: cannot be combined with a webhook secret (a secret means every webhook is signed)');
      // A line per event: buffered, so logging does not cost a write(2) per event (src/log.ts).
      const logger = createLogger(fn, undefined, false, true);
      const store = Store.open(opts.redis, { prefix: opts.prefix, failFast: true, connectionName: `racklb-${fn}` });
      const def = FUNCTIONS[fn];
      const stop = new AbortController();
      const shutdown = (): void => stop.abort();
      process.once('SIGTERM', shutdown);
      process.once('SIGINT', shutdown);
      if (opts.fromStream) {
        // No HTTP front here, so the metrics and the probes get a port of their own, as the bridge's do.
        const metrics = functionMetrics(def, store, { processMetrics: opts.metricsPort !== undefined });
        const health = new StreamConsumerHealth();
        const ops = opts.metricsPort === undefined ? undefined : await serveOps(metrics.registry, () => health.ready, opts.metricsHost, opts.metricsPort, () => health.live());
        logger.info({ stream: store.keys.eventStream(fn), consumer: opts.consumer, metrics: ops?.url }, 'consuming stream');
        try {
          await consumeStream(def, { store, logger }, { consumer: opts.consumer, signal: stop.signal, metrics, health });
        } finally {
          await ops?.close();
          await store.close();
        }
        return;
      }
      const server = await serveFunction(def, { store, logger }, {
        host: opts.host,
        port: opts.port,
        bodyLimit: opts.bodyLimit,
        processMetrics: true,
        ...(opts.rateLimit > 0 ? { rateLimit: { perSecond: opts.rateLimit, ...(opts.rateBurst === undefined ? {} : { burst: opts.rateBurst }) } } : {}),
        webhooks: { ...(secret === undefined ? {} : { secret }), allowUnsigned: opts.allowUnsignedWebhooks === true, toleranceSeconds: opts.webhookTolerance },
      });
      if (secret === undefined && opts.allowUnsignedWebhooks) logger.warn('plain webhooks and /resync accepted WITHOUT a signature (--allow-unsigned-webhooks)');
      logger.info({ url: server.url }, 'ready');
      await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve()));
      await server.close();
      await store.close();
    });
}

function parseTolerance(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 3600) throw new InvalidArgumentError('must be a whole number of seconds between 1 and 3600');
  return n;
}

function parseRate(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1_000_000) throw new InvalidArgumentError('must be a number between 0 and 1000000');
  return n;
}
