import { Command } from 'commander';
import { RacklbError } from '../errors.js';
import { runSpeaker } from '../../speaker/main.js';
import { parsePort, redisDefault } from './options.js';

export function registerSpeaker(program: Command): void {
  program
    .command('speaker')
    .description('run the speaker of one node: keeps its gobgpd equal to the node\'s peers and its rack\'s routes')
    .requiredOption('--node <name>', 'this node\'s Kubernetes name; env RACKLB_NODE_NAME', process.env.RACKLB_NODE_NAME)
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--gobgp <host:port>', 'gobgpd gRPC API address', '127.0.0.1:50051')
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--metrics-port <n>', 'serve /metrics and health on this port', parsePort)
    .option('--metrics-host <address>', 'address for /metrics', '127.0.0.1')
    .action(async (opts: { node: string; redis?: string; gobgp: string; prefix: string; metricsPort?: number; metricsHost: string }) => {
      if (!opts.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL)');
      await runSpeaker({ ...opts, redis: opts.redis });
    });
}
