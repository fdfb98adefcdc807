/** Opening the store for the inspection commands, with one error for a missing --redis. */
import { RacklbError } from '../errors.js';
import { Store } from '../store/store.js';

export async function openStore(opts: { redis?: string; prefix: string }, connectionName: string): Promise<Store> {
  if (!opts.redis) throw new RacklbError('RACKLB_USAGE', '--redis is required (or set RACKLB_REDIS_URL)');
  const store = Store.open(opts.redis, { prefix: opts.prefix, failFast: true, connectionName });
  await store.connect();
  return store;
}
