import { Command, Option } from 'commander';
import { Registry } from 'prom-client';
import { RacklbError } from '../errors.js';
import { createLogger } from '../log.js';
import { Store } from '../store/store.js';
import { collect, parseTarget } from '../k8s/targets.js';
import { parsePort, redisDefault } from './options.js';

interface BridgeFlags {
  kubeconfig?: string;
  functionUrl?: string[];
  broker?: string;
  streams?: boolean;
  redis?: string;
  prefix: string;
  markComplete: boolean;
  writeStatus?: boolean;
  metricsPort?: number;
  metricsHost: string;
  concurrency: number;
}

export function registerBridge(program: Command): void {
  program
    .command('bridge')
    .description('watch Nodes, Services, EndpointSlices, Eips, BgpPeers and BgpConfs and deliver every change as ApiServerSource\'s CloudEvent (no Knative needed)')
    .option('--kubeconfig <file>', 'kubeconfig file; default: in-cluster service account, then $KUBECONFIG or ~/.kube/config')
    .option('--function-url <name=url>', 'deliver to a function\'s URL (give all three)', collect)
    .option('--broker <url>', 'deliver to a Knative Broker ingress (answers 202)')
    .addOption(new Option('--streams', 'publish onto the functions\' Redis streams (KEDA); needs --redis'))
    .option('--redis <url>', 'racklb\'s Redis: for --streams, the first sync\'s deletes and the complete mark; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--no-mark-complete', 'do not mark the store complete after the first sync')
    .option('--write-status', 'also write status back to the API (what racklb status-writer does)')
    .option('--metrics-port <n>', 'serve /metrics and /health/* on this port', parsePort)
    .option('--metrics-host <address>', 'address for /metrics', '127.0.0.1')
    .option('--concurrency <n>', 'events in flight at once', (v) => Number(v), 8)
    .action(async (flags: BridgeFlags) => {
      if (flags.writeStatus && !flags.redis) throw new RacklbError('RACKLB_USAGE', '--write-status needs --redis (or RACKLB_REDIS_URL)');
      if (!Number.isInteger(flags.concurrency) || flags.concurrency < 1) throw new RacklbError('RACKLB_USAGE', '--concurrency: must be a positive integer');
      const logger = createLogger('bridge');
      const store = flags.redis ? Store.open(flags.redis, { prefix: flags.prefix, failFast: true, connectionName: 'racklb-bridge' }) : undefined;
      const target = parseTarget(flags, store);
      // Loaded here, not at the top: @kubernetes/client-node takes a second to import, which every
      // other racklb command would pay for nothing.
      const [{ Bridge }, { Deliverer, describeTarget }, { KubeApi }, { serveOps }, { ResultSink }, { StatusWriter }] = await Promise.all([
        import('../k8s/bridge.js'),
        import('../k8s/deliver.js'),
        import('../k8s/kube.js'),
        import('../k8s/ops.js'),
        import('../k8s/resync.js'),
        import('../k8s/status-writer.js'),
      ]);
      await store?.connect();
      const api = new KubeApi({ kubeconfig: flags.kubeconfig });
      const registry = new Registry();
      const sink = new ResultSink();
      const deliverer = new Deliverer({ target, source: api.server, logger, registry, concurrency: flags.concurrency, onResult: sink.handle });
      const bridge = new Bridge({ api, deliverer, logger, registry, store, markComplete: flags.markComplete, sink });
      const writer = flags.writeStatus && store ? new StatusWriter({ api, store, logger, registry }) : undefined;
      const ops = flags.metricsPort === undefined ? undefined : await serveOps(registry, () => bridge.isReady(), flags.metricsHost, flags.metricsPort);
      const stop = new AbortController();
      process.once('SIGTERM', () => stop.abort());
      process.once('SIGINT', () => stop.abort());
      logger.info({ server: api.server, target: describeTarget(target), metrics: ops?.url }, 'bridge starting');
      writer?.start();
      void bridge.start().then(
        (r) => logger.info({ deletesSent: r.deleted, markedComplete: r.markedComplete }, 'first sync done; following changes'),
        (err: unknown) => {
          logger.error({ err: String(err) }, 'first sync failed');
          stop.abort();
        },
      );
      await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve()));
      await bridge.stop();
      await writer?.stop();
      await ops?.close();
      await store?.close();
      // Requests still waiting on a hung API server must not keep a stopped process alive.
      process.exit(process.exitCode ?? 0);
    });
}
