import { Command } from 'commander';
import { RacklbError } from '../errors.js';
import { formatState, readState } from '../state/read.js';
import { Store } from '../store/store.js';
import { redisDefault } from './main.js';

export function registerState(program: Command): void {
  const state = program
    .command('state')
    .description('print the stored state: racks and their routes, Services and their IPs, speakers and their peers')
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--json', 'one JSON document')
    .action(async (opts: { redis?: string; prefix: string; json?: boolean }) => {
      const store = await openStore(opts);
      try {
        const doc = await readState(store);
        process.stdout.write(opts.json ? `${JSON.stringify(doc, null, 2)}\n` : `${formatState(doc)}\n`);
      } finally {
        await store.close();
      }
    });
  state
    .command('mark-complete')
    .description('declare that the store holds the complete cluster state, so speakers may withdraw routes again')
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .action(async (opts: { redis?: string; prefix: string }) => {
      const store = await openStore(opts);
      try {
        await markComplete(store);
        process.stdout.write('store marked complete\n');
      } finally {
        await store.close();
      }
    });
}

async function openStore(opts: { redis?: string; prefix: string }): Promise<Store> {
  if (!opts.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL)');
  const store = Store.open(opts.redis, { prefix: opts.prefix, failFast: true, connectionName: 'racklb-state' });
  await store.connect();
  return store;
}

/** See docs/state.md: the flag that lets speakers withdraw after the store came back empty. */
export async function markComplete(store: Store): Promise<void> {
  await store.transact([], async () => ({
    result: undefined,
    write: (w) => {
      w.multi.hset(store.keys.meta(), 'complete', '1');
      w.notify({ scope: 'all', topic: 'conf', subject: 'complete' });
    },
  }));
}
