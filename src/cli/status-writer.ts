import { Command } from 'commander';
import { Registry } from 'prom-client';
import { RacklbError } from '../errors.js';
import { createLogger } from '../log.js';
import { Store } from '../store/store.js';
import { parsePort, redisDefault } from './options.js';

function positiveSeconds(option: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new RacklbError('RACKLB_USAGE', `${option}: must be a positive number of seconds`);
    return n * 1000;
  };
}

export function registerStatusWriter(program: Command): void {
  program
    .command('status-writer')
    .description('write Service ingress and pool label, Eip, BgpPeer and BgpConf status back to the Kubernetes API from the store')
    .option('--kubeconfig <file>', 'kubeconfig file; default: in-cluster service account, then $KUBECONFIG or ~/.kube/config')
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--poll <seconds>', 'longest wait between two looks at the store', positiveSeconds('--poll'), 1000)
    .option('--sessions-every <seconds>', 'how often speakers\' session reports are read for BgpPeer status', positiveSeconds('--sessions-every'), 5000)
    .option('--full-every <seconds>', 'how often every object is compared with the API again', positiveSeconds('--full-every'), 600_000)
    .option('--metrics-port <n>', 'serve /metrics and /health/* on this port', parsePort)
    .option('--metrics-host <address>', 'address for /metrics', '127.0.0.1')
    .action(async (opts: { kubeconfig?: string; redis?: string; prefix: string; poll: number; sessionsEvery: number; fullEvery: number; metricsPort?: number; metricsHost: string }) => {
      if (!opts.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL)');
      // Loaded here: @kubernetes/client-node takes a second to import (see cli/bridge.ts).
      const [{ KubeApi }, { serveOps }, { StatusWriter }] = await Promise.all([import('../k8s/kube.js'), import('../k8s/ops.js'), import('../k8s/status-writer.js')]);
      const logger = createLogger('status-writer');
      const store = Store.open(opts.redis, { prefix: opts.prefix, failFast: true, connectionName: 'racklb-status-writer' });
      await store.connect();
      const api = new KubeApi({ kubeconfig: opts.kubeconfig });
      const registry = new Registry();
      const writer = new StatusWriter({ api, store, logger, registry, pollMs: opts.poll, sessionsEveryMs: opts.sessionsEvery, fullEveryMs: opts.fullEvery });
      const ops = opts.metricsPort === undefined ? undefined : await serveOps(registry, () => true, opts.metricsHost, opts.metricsPort);
      const stop = new AbortController();
      process.once('SIGTERM', () => stop.abort());
      process.once('SIGINT', () => stop.abort());
      logger.info({ server: api.server, metrics: ops?.url }, 'status writer starting');
      writer.start();
      await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve()));
      await writer.stop();
      await ops?.close();
      await store.close();
      // Requests still waiting on a hung API server must not keep a stopped process alive.
      process.exit(process.exitCode ?? 0);
    });
}
