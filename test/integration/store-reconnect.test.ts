/**
 * A transaction's connection lost between its WATCH and its EXEC, or during its EXEC
 * (src/store/store.ts, HeldConnection). The WATCH goes with the connection, and ioredis would send
 * the MULTI on the next one (or send it there again): EXEC would then apply, unwatched, what was
 * decided on the old connection's reads. Real redis-server, persisting as infra's does; the
 * connection is killed by Redis itself (CLIENT KILL) or by a crash of the server.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RacklbError } from '../../src/errors.js';
import { Store } from '../../src/store/store.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let store: Store;
let admin: Redis;

beforeAll(async () => {
  redis = await startRedis({ appendonly: true });
  store = Store.open(redis.url, { failFast: true, poolSize: 1 });
  await store.connect();
  admin = new Redis({ path: redis.socket, lazyConnect: true, retryStrategy: () => 50 });
  admin.on('error', () => undefined);
  await admin.connect();
});

afterAll(async () => {
  admin?.disconnect();
  await store?.close();
  if (redis) await removeRedis(redis);
});

const K = '{racklb}:test:counter';

async function until(what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Adds one to the counter, calling `meanwhile` once between the read and the EXEC. */
function increment(meanwhile: (conn: Redis) => Promise<void>): Promise<number> {
  let first = true;
  return store.transact([K], async (r) => {
    const n = Number(await r.redis.get(K));
    if (first) {
      first = false;
      await meanwhile(r.redis);
    }
    return { result: n + 1, write: (w) => w.multi.set(K, String(n + 1)) };
  });
}

async function rejection(p: Promise<unknown>): Promise<RacklbError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RacklbError);
  return err as RacklbError;
}

describe('a transaction whose connection is lost', () => {
  it('between its read and EXEC, with another writer in between: writes nothing, and the other write stands', async () => {
    await store.redis.set(K, '10');
    const err = await rejection(
      increment(async (conn) => {
        await admin.client('KILL', 'ID', String(await conn.client('ID')));
        await admin.set(K, '500');
        // ioredis has reconnected: the MULTI would go out on the new connection, unwatched.
        await until('the connection to come back', async () => conn.status === 'ready');
      }),
    );
    expect(err.code).toBe('RACKLB_STORE_UNAVAILABLE');
    expect(err.message).toContain('lost between WATCH and EXEC: nothing was written');
    expect(await admin.get(K)).toBe('500');
    // The next transaction, on a new connection, decides from what is there.
    expect(await increment(async () => undefined)).toBe(501);
  });

  it('between its read and EXEC, by a Redis restart: nothing decided on the old server reaches the new one', async () => {
    await store.redis.set(K, '10');
    const err = await rejection(
      increment(async () => {
        await redis.stop();
        await redis.start();
        await until('Redis to be back', async () => (await admin.get(K)) === '10');
        await admin.set(K, '700');
      }),
    );
    expect(err.code).toBe('RACKLB_STORE_UNAVAILABLE');
    expect(await admin.get(K)).toBe('700');
  });

  it('during EXEC, by a crash of Redis: the transaction is not sent again to the server that comes back', async () => {
    // A store whose commands wait for Redis (as the speaker's and the bridge's CLI stores do):
    // ioredis keeps every unanswered command for the next connection, never dropping it.
    const patient = Store.open(redis.url, { poolSize: 1 });
    await patient.connect();
    await until('Redis to take writes', async () => (await admin.set(K, '10')) === 'OK');
    const err = await rejection(
      patient.transact([K], async (r) => {
        const n = Number(await r.redis.get(K));
        return {
          result: n + 1,
          write: (w) => {
            w.multi.set(K, String(n + 1));
            // Keeps the EXEC running (Redis answers nothing meanwhile) while the server is killed.
            w.multi.eval("local t = redis.call('TIME') local e = t[1] * 1e6 + t[2] + 400000 repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] > e return 1", 0);
            void (async () => {
              await new Promise((resolve) => setTimeout(resolve, 100));
              await redis.stop();
              await redis.start();
            })();
          },
        };
      }),
    );
    expect(err.code).toBe('RACKLB_STORE_UNAVAILABLE');
    expect(err.message).toContain('during EXEC');
    await until('Redis to be back', async () => (await admin.ping()) === 'PONG');
    // Killed before its EXEC was written to the append-only file: not applied, and ioredis had
    // no connection left to send it again on.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await admin.get(K)).toBe('10');
    await patient.close();
  });
});
