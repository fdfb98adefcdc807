import { createServer } from 'node:http';
import { Command, Option } from 'commander';
import { Counter, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { RacklbError } from '../errors.js';
import { createLogger } from '../log.js';
import { Store } from '../store/store.js';
import type { Target } from '../k8s/deliver.js';
import type { KubeApi } from '../k8s/kube.js';
import type { ResyncReport } from '../k8s/resync.js';
import { collect, parseTarget } from '../k8s/targets.js';
import { parsePort, redisDefault } from './options.js';

interface ResyncFlags {
  kubeconfig?: string;
  functionUrl?: string[];
  broker?: string;
  streams?: boolean;
  redis?: string;
  prefix: string;
  markComplete: boolean;
  all?: boolean;
  json?: boolean;
  timeout: number;
  serve?: boolean;
  port: number;
  host: string;
}

async function runOnce(api: KubeApi, store: Store, target: Target, logger: Logger, flags: ResyncFlags): Promise<ResyncReport> {
  const [{ Deliverer }, { resync, ResultSink }] = await Promise.all([import('../k8s/deliver.js'), import('../k8s/resync.js')]);
  const sink = new ResultSink();
  // A registry per run: the deliverer's counters are per-run figures, reported in the result.
  const deliverer = new Deliverer({ target, source: api.server, logger, registry: new Registry(), onResult: sink.handle, maxBackoffMs: 5000 });
  try {
    return await resync({ api, store, deliverer, target, logger, markComplete: flags.markComplete, all: flags.all, convergenceTimeoutMs: flags.timeout }, sink);
  } finally {
    deliverer.stop();
  }
}

export function registerResync(program: Command): void {
  program
    .command('resync')
    .description('list every watched kind from the API, correct the store (add, update, delete), report the corrections, then mark the store complete')
    .option('--kubeconfig <file>', 'kubeconfig file; default: in-cluster service account, then $KUBECONFIG or ~/.kube/config')
    .option('--function-url <name=url>', 'deliver to a function\'s URL (give all three)', collect)
    .option('--broker <url>', 'deliver to a Knative Broker ingress (answers 202)')
    .addOption(new Option('--streams', 'publish onto the functions\' Redis streams (KEDA)'))
    .option('--redis <url>', 'racklb\'s Redis (read to compare; required); env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--no-mark-complete', 'do not mark the store complete afterwards')
    .option('--all', 'also send objects the store already holds at the listed version')
    .option('--json', 'print the report as JSON')
    .option('--timeout <seconds>', 'how long to wait for the store to reflect what was sent', (v) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new RacklbError('RACKLB_USAGE', '--timeout: must be a positive number of seconds');
      return n * 1000;
    }, 60_000)
    .option('--serve', 'stay up and run a resync for every POST / (a Knative PingSource or dead-letter sink)')
    .option('--port <n>', 'HTTP port with --serve', parsePort, Number(process.env.PORT ?? 8080))
    .option('--host <address>', 'address with --serve', '127.0.0.1')
    .action(async (flags: ResyncFlags) => {
      if (!flags.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL): resync compares the cluster with the store');
      // The one-shot run prints its report on stdout; its logs go to stderr.
      const logger = createLogger('resync', undefined, !flags.serve);
      const store = Store.open(flags.redis, { prefix: flags.prefix, failFast: true, connectionName: 'racklb-resync' });
      const target = parseTarget(flags, store);
      await store.connect();
      // Loaded here: @kubernetes/client-node takes a second to import (see cli/bridge.ts).
      const [{ KubeApi }, { formatReport }] = await Promise.all([import('../k8s/kube.js'), import('../k8s/resync.js')]);
      const api = new KubeApi({ kubeconfig: flags.kubeconfig });
      if (!flags.serve) {
        try {
          const report = await runOnce(api, store, target, logger, flags);
          process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
          // A CronJob run that left the store incomplete shows as failed.
          if (!report.complete) process.exitCode = 1;
        } finally {
          await store.close();
        }
      } else {
        await serveResync(api, store, target, logger, flags);
      }
      // Idle keep-alive connections (to the API, the functions, a broker) must not delay the exit.
      process.exit(process.exitCode ?? 0);
    });
}

/** One resync at a time; requests that arrive during a run share the next run. */
async function serveResync(api: KubeApi, store: Store, target: Target, logger: Logger, flags: ResyncFlags): Promise<void> {
  const registry = new Registry();
  const runs = new Counter({ name: 'racklb_resync_runs_total', help: 'Resyncs by result (complete, incomplete, failed)', labelNames: ['result'], registers: [registry] });
  const corrections = new Counter({ name: 'racklb_resync_corrections_total', help: 'Events sent by resyncs to correct the store', registers: [registry] });
  let running: Promise<ResyncReport> | undefined;
  let queued: Promise<ResyncReport> | undefined;
  const run = (): Promise<ResyncReport> => {
    if (queued) return queued;
    const start = async (): Promise<ResyncReport> => {
      try {
        const r = await runOnce(api, store, target, logger, flags);
        runs.inc({ result: r.complete ? 'complete' : 'incomplete' });
        corrections.inc(r.corrected);
        logger.info({ corrected: r.corrected, complete: r.complete, report: r }, 'resync done');
        return r;
      } catch (err) {
        runs.inc({ result: 'failed' });
        throw err;
      }
    };
    if (!running) {
      running = start().finally(() => (running = undefined));
      return running;
    }
    queued = running.catch(() => undefined).then(() => {
      queued = undefined;
      running = start().finally(() => (running = undefined));
      return running;
    });
    return queued;
  };
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && (path === '/health/liveness' || path === '/health/readiness')) return void res.writeHead(200).end();
    if (req.method === 'GET' && path === '/metrics') {
      void registry.metrics().then((t) => res.writeHead(200, { 'content-type': registry.contentType }).end(t));
      return;
    }
    if (req.method !== 'POST' || path !== '/') return void res.writeHead(404).end();
    // The body (a PingSource tick, or a dead-lettered event) only says "now"; log what it was.
    req.resume();
    logger.info({ ceType: req.headers['ce-type'], ceSource: req.headers['ce-source'], ceSubject: req.headers['ce-subject'] }, 'resync requested');
    void run().then(
      (r) => {
        // An empty 2xx body: a broker treats any other 2xx body as a failed delivery.
        res.writeHead(r.complete ? 200 : 503, { 'racklb-outcome': r.complete ? 'complete' : 'incomplete', 'racklb-detail': `${r.corrected} correction(s)`, 'content-length': 0 }).end();
      },
      (err: unknown) => res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(err) })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(flags.port, flags.host, () => resolve());
  });
  const bound = server.address();
  logger.info({ host: flags.host, port: typeof bound === 'object' && bound ? bound.port : flags.port }, 'resync serving: POST / runs a resync');
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  process.once('SIGINT', () => stop.abort());
  await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve()));
  server.close();
  server.closeAllConnections();
  await store.close();
}
