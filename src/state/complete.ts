/**
 * The store's completeness flag (docs/operations.md, "The empty-store guard"): speakers withdraw
 * routes only while the store is marked complete, so only something that can vouch that every
 * object of the cluster is in it may set the flag.
 */
import type { Store } from '../store/store.js';

export async function markComplete(store: Store): Promise<void> {
  await store.transact([], async () => ({
    result: undefined,
    write: (w) => {
      w.multi.hset(store.keys.meta(), 'complete', '1');
      w.notify({ scope: 'all', topic: 'conf', subject: 'complete' });
    },
  }));
}
