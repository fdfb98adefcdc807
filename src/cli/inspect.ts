/** `racklb inspect --port N`: the live topology view in a browser. */
import { Command, InvalidArgumentError } from 'commander';
import { serveInspect } from '../inspect/server.js';
import { createLogger } from '../log.js';
import { parsePort, redisDefault } from './options.js';
import { openStore } from './store.js';

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('serve a read-only web page drawing racks, nodes, speakers, sessions and a Service\'s ECMP paths from the state in Redis, updated live; the same data as JSON under /api/')
    .requiredOption('--port <n>', 'HTTP port (0: any free port)', parsePort)
    .option('--host <address>', 'address to listen on (the page has no login: keep it on loopback or behind something that has)', '127.0.0.1')
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--interval <ms>', 'how often Redis is read while a page is open', parseInterval, 1000)
    .action(async (opts: { port: number; host: string; redis?: string; prefix: string; interval: number }) => {
      const logger = createLogger('inspect');
      const store = await openStore(opts, 'racklb-inspect');
      const server = await serveInspect({ store, host: opts.host, port: opts.port, intervalMs: opts.interval, logger });
      process.stdout.write(`racklb inspect: ${server.url} (read-only; Ctrl-C stops)\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
      await store.close();
    });
}

function parseInterval(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 100 || n > 60_000) throw new InvalidArgumentError('must be a whole number of milliseconds between 100 and 60000');
  return n;
}
