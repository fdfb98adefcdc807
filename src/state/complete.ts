/**
 * The store's completeness flag (docs/operations.md, "The empty-store guard"): speakers withdraw
 * routes only while the store is marked complete, so only something that can vouch that every
 * object of the cluster is in it may set the flag.
 */
import { randomUUID } from 'node:crypto';
import { storeError } from '../store/redis.js';
import type { Store, TxWriter } from '../store/store.js';

function writeComplete(w: TxWriter): void {
  w.multi.hset(w.keys.meta(), 'complete', '1');
  w.notify({ scope: 'all', topic: 'conf', subject: 'complete' });
}

export async function markComplete(store: Store): Promise<void> {
  await store.transact([], async () => ({ result: undefined, write: writeComplete }));
}

/** The store's generation (absent until something is written) and whether it is marked complete. */
export async function readCompleteness(store: Store): Promise<{ generation: string | undefined; complete: boolean }> {
  const [generation, complete] = await store.redis.hmget(store.keys.meta(), 'generation', 'complete');
  return { generation: generation ?? undefined, complete: complete === '1' };
}

/**
 * The store's generation, created now when it has none (a fresh or emptied Redis), exactly as the
 * first write would (store.ts, NOTIFY_LUA): whoever is about to check the store needs a name for the
 * server it checks before anything is written to it.
 */
export async function ensureGeneration(store: Store): Promise<string> {
  const k = store.keys.meta();
  const results = await store.redis
    .multi()
    .hsetnx(k, 'generation', randomUUID())
    .hget(k, 'generation')
    .exec()
    .catch((err: unknown) => {
      throw storeError(err, `HSETNX ${k} generation`);
    });
  const generation = results?.[1]?.[1];
  if (typeof generation !== 'string') throw storeError(results?.[1]?.[0] ?? new Error('transaction aborted'), `HSETNX ${k} generation`);
  return generation;
}

/**
 * Marks the store complete only if it still has the generation read before it was checked. A Redis
 * that restarted empty in between has another one and holds only what arrived since: marking it
 * would let the speakers withdraw every route it lacks. Returns whether it marked.
 */
export async function markCompleteIf(store: Store, generation: string): Promise<boolean> {
  return store.transact([store.keys.meta()], async (r) => {
    if ((await r.redis.hget(store.keys.meta(), 'generation')) !== generation) return { result: false };
    return { result: true, write: writeComplete };
  });
}
