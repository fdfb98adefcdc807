/**
 * The core suites against a Redis Cluster of three masters (issue 8): the functions' integration
 * suite and the out-of-order delivery suite, unchanged, with every Store opened on
 * `redis+cluster://` (test/helpers/redis.ts starts the cluster when RACKLB_TEST_REDIS=cluster).
 * `racklb state` runs as a CLI against the cluster too (stateJson). And every key name racklb
 * builds is checked to land in one slot, asked of the cluster itself (CLUSTER KEYSLOT): a
 * WATCH/MULTI/EXEC across slots fails on a cluster.
 */
import { Redis, type Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KINDS } from '../../src/core/types.js';
import { Keys } from '../../src/store/keys.js';
import { Store } from '../../src/store/store.js';
import { startRedisCluster, type TestRedisCluster } from '../helpers/redis-cluster.js';

// Read by startRedis() when the imported suites' beforeAll hooks run, after this line.
process.env.RACKLB_TEST_REDIS = 'cluster';
await import('./functions.test.js');
await import('./ordering.test.js');

describe('key names on a Redis Cluster', () => {
  let cluster: TestRedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('every key of a prefix hashes to one slot', async () => {
    const admin = new Redis({ port: cluster.ports[0], lazyConnect: true });
    try {
      await admin.connect();
      for (const prefix of ['racklb', 'replay-2024.05', 'a']) {
        const k = new Keys(prefix);
        // Every key-building method of Keys, found by reflection, so a key added later is checked too.
        const methods = Object.getOwnPropertyNames(Keys.prototype).filter((m) => m !== 'constructor' && typeof (k as unknown as Record<string, unknown>)[m] === 'function');
        const build = (m: string, ...args: string[]): string => (k as unknown as Record<string, (...a: string[]) => string>)[m]!(...args);
        const names = methods.flatMap((m) => KINDS.map((kind) => build(m, kind, 'default/web')));
        expect(methods.length).toBeGreaterThan(15);
        const slots = new Set(await Promise.all(names.map((n) => admin.cluster('KEYSLOT', n))));
        expect(slots.size, `${prefix}: ${names.length} keys from ${methods.join(', ')}`).toBe(1);
      }
    } finally {
      admin.disconnect();
    }
  });

  it('a transaction is refused before it reaches Redis when a key lacks the hash tag', async () => {
    const store = Store.open(cluster.url, { failFast: true });
    try {
      await store.connect();
      await expect(store.transact(['racklb:no-tag'], async () => ({ result: 1 }))).rejects.toThrow(/lacks the hash tag \{racklb\}:/);
      // And a tagged one works, WATCH, reads, MULTI/EXEC and the notify script included.
      await store.transact([store.keys.meta()], async (r) => ({ result: await r.redis.get(store.keys.meta()), write: (w) => w.notify({ scope: 'all', topic: 'conf', subject: 'x' }) }));
      expect(await store.redis.hget(store.keys.meta(), 'rev')).toBe('1');
    } finally {
      await store.close();
    }
  });

  it('a transaction whose first attempt WATCH aborted commits on the next, whatever the masters\' script caches hold', async () => {
    // As in change-notifications.test.ts, on the connections a cluster client keeps per node.
    const store = Store.open(cluster.url, { prefix: 'aborted', failFast: true });
    const other = Store.open(cluster.url, { prefix: 'aborted', failFast: true });
    try {
      await Promise.all([store.connect(), other.connect()]);
      const k = store.keys;
      await other.redis.get(k.meta());
      for (const node of (other.redis as unknown as Cluster).nodes('master')) await node.script('FLUSH');
      let attempts = 0;
      await store.transact([k.intents()], async (r) => {
        attempts++;
        await r.redis.hget(k.intents(), '198.51.100.9');
        if (attempts === 1) await other.redis.hset(k.intents(), '198.51.100.8', '{}');
        if (attempts === 2) for (const node of (other.redis as unknown as Cluster).nodes('master')) await node.script('FLUSH');
        return { result: undefined, write: (w) => w.notify({ scope: 'all', topic: 'intent', subject: '198.51.100.9' }) };
      });
      expect(attempts).toBe(2);
      expect(await store.redis.hget(k.meta(), 'rev')).toBe('1');
    } finally {
      await store.close();
      await other.close();
    }
  });

  it('a transaction whose node connection drops between its read and EXEC writes nothing, and another write stands', async () => {
    // As store-reconnect.test.ts shows on one Redis: the cluster client would send the MULTI on
    // its next connection to the node, where the WATCH no longer holds.
    const store = Store.open(cluster.url, { prefix: 'dropped', failFast: true, poolSize: 1 });
    const other = Store.open(cluster.url, { prefix: 'dropped', failFast: true });
    const admins = cluster.ports.map((port) => new Redis({ port, host: '127.0.0.1', lazyConnect: true }));
    try {
      await Promise.all([store.connect(), other.connect(), ...admins.map((a) => a.connect())]);
      const key = `{dropped}:counter`;
      await other.redis.set(key, '10');
      const err = await store
        .transact([key], async (r) => {
          const n = Number(await r.redis.get(key));
          if (n === 10) {
            // Every client connection but the admins' own, on every master.
            for (const a of admins) await a.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
            await other.redis.set(key, '500');
            await new Promise((resolve) => setTimeout(resolve, 300));
          }
          return { result: n + 1, write: (w) => w.multi.set(key, String(n + 1)) };
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect((err as { code?: string } | undefined)?.code).toBe('RACKLB_STORE_UNAVAILABLE');
      expect(await other.redis.get(key)).toBe('500');
    } finally {
      for (const a of admins) a.disconnect();
      await store.close();
      await other.close();
    }
  });
});
