import { hostname } from 'node:os';
import { Command, Option } from 'commander';
import { FUNCTIONS, FUNCTION_NAMES } from '../functions.js';
import { createLogger } from '../log.js';
import { serveFunction, DEFAULT_BODY_LIMIT } from '../serve/http.js';
import { consumeStream } from '../serve/stream.js';
import type { FunctionName } from '../store/keys.js';
import { Store } from '../store/store.js';
import { RacklbError } from '../errors.js';
import { parsePort, redisDefault } from './main.js';

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
    .addOption(new Option('--from-stream', 'consume the function\'s Redis stream instead of serving HTTP (KEDA)'))
    .option('--consumer <name>', 'consumer name in the stream\'s group', hostname())
    .action(async (fn: FunctionName, opts: { port: number; host: string; redis?: string; prefix: string; bodyLimit: number; fromStream?: boolean; consumer: string }) => {
      if (!opts.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL)');
      const logger = createLogger(fn);
      const store = Store.open(opts.redis, { prefix: opts.prefix, failFast: true, connectionName: `racklb-${fn}` });
      const def = FUNCTIONS[fn];
      const stop = new AbortController();
      const shutdown = (): void => stop.abort();
      process.once('SIGTERM', shutdown);
      process.once('SIGINT', shutdown);
      if (opts.fromStream) {
        logger.info({ stream: store.keys.eventStream(fn), consumer: opts.consumer }, 'consuming stream');
        await consumeStream(def, { store, logger }, { consumer: opts.consumer, signal: stop.signal });
        await store.close();
        return;
      }
      const server = await serveFunction(def, { store, logger }, { host: opts.host, port: opts.port, bodyLimit: opts.bodyLimit });
      logger.info({ url: server.url }, 'ready');
      await new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve()));
      await server.close();
      await store.close();
    });
}
