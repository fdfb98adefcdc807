/**
 * A transaction's change notifications (TxWriter in src/store/store.ts) reach the change stream
 * the speakers follow as one entry per change, in order, with consecutive revisions, each carrying
 * the value its transaction left; and a transaction sets one epoch token per kind it wrote.
 */
import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { atOneRevision } from '../../src/state/read.js';
import { useRedisStore } from '../helpers/redis.js';
import { node } from '../helpers/fixtures.js';
import { parseNode } from '../../src/core/objects.js';

let store: Store;
let redisUrl: string;
useRedisStore((s, r) => {
  store = s;
  redisUrl = r.url;
});

async function entries(): Promise<Record<string, string>[]> {
  const raw = await store.redis.xrange(store.keys.changes(), '-', '+');
  return raw.map(([, fields]) => {
    const out: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) out[fields[i]!] = fields[i + 1]!;
    return out;
  });
}

describe('change notifications of one transaction', () => {
  it('are one entry each, in order, revisions consecutive, carrying what the transaction left (or nothing)', async () => {
    const k = store.keys;
    // A value the transaction replaces, and one it removes: the entries carry the final state.
    await store.redis.hset(k.intents(), '198.51.100.2', '{"old":true}');
    await store.redis.hset(k.rackNextHops('rack-b'), 'n-b1', '{"old":true}');
    await store.transact([], async () => ({
      result: undefined,
      write: (w) => {
        w.multi.hset(k.intents(), '198.51.100.1', '{"ip":"198.51.100.1"}');
        w.notify({ scope: 'all', topic: 'intent', subject: '198.51.100.1' });
        w.multi.hset(k.rackNextHops('rack-a'), 'n-a1', '{"node":"n-a1"}');
        w.notify({ scope: { rack: 'rack-a' }, topic: 'nexthops', subject: 'n-a1' });
        w.multi.hdel(k.rackNextHops('rack-b'), 'n-b1');
        w.notify({ scope: { rack: 'rack-b' }, topic: 'nexthops', subject: 'n-b1' });
        w.notify({ scope: { node: 'n-a1' }, topic: 'peers', subject: 'leaf-a' });
        w.multi.hdel(k.intents(), '198.51.100.2');
        w.notify({ scope: 'all', topic: 'intent', subject: '198.51.100.2' });
        // The same change twice is sent once; a second rack-a node shares rack-a's hash.
        w.notify({ scope: { rack: 'rack-a' }, topic: 'nexthops', subject: 'n-a1' });
        w.multi.hset(k.rackNextHops('rack-a'), 'n-a2', '{"node":"n-a2"}');
        w.notify({ scope: { rack: 'rack-a' }, topic: 'nexthops', subject: 'n-a2' });
        // Written after its notification was queued: the entry still carries this final value.
        w.multi.hset(k.intents(), '198.51.100.1', '{"ip":"198.51.100.1","final":true}');
      },
    }));
    const got = await entries();
    expect(got.map(({ rev, scope, topic, subject, intent, nexthop }) => ({ rev, scope, topic, subject, intent, nexthop }))).toEqual([
      { rev: '1', scope: 'all', topic: 'intent', subject: '198.51.100.1', intent: '{"ip":"198.51.100.1","final":true}', nexthop: undefined },
      { rev: '2', scope: 'rack:rack-a', topic: 'nexthops', subject: 'n-a1', intent: undefined, nexthop: '{"node":"n-a1"}' },
      { rev: '3', scope: 'rack:rack-b', topic: 'nexthops', subject: 'n-b1', intent: undefined, nexthop: '' },
      { rev: '4', scope: 'node:n-a1', topic: 'peers', subject: 'leaf-a', intent: undefined, nexthop: undefined },
      { rev: '5', scope: 'all', topic: 'intent', subject: '198.51.100.2', intent: '', nexthop: undefined },
      { rev: '6', scope: 'rack:rack-a', topic: 'nexthops', subject: 'n-a2', intent: undefined, nexthop: '{"node":"n-a2"}' },
    ]);
    expect(await store.redis.hget(k.meta(), 'rev')).toBe('6');
    expect(await store.redis.hget(k.meta(), 'generation')).toMatch(/^[0-9a-f-]{36}$/);

    // The next transaction goes on from there and keeps the generation.
    const generation = await store.redis.hget(k.meta(), 'generation');
    await store.transact([], async () => ({ result: undefined, write: (w) => w.notify({ scope: 'all', topic: 'conf', subject: 'default' }) }));
    expect((await entries()).at(-1)).toMatchObject({ rev: '7', topic: 'conf', subject: 'default' });
    expect(await store.redis.hget(k.meta(), 'generation')).toBe(generation);
  });

  it('set one new epoch token per kind written, however many objects the transaction wrote', async () => {
    const k = store.keys;
    const before = await store.redis.get(k.epoch('Node'));
    const records = ['n1', 'n2', 'n3'].map((name) => parseNode(node({ name })));
    await store.redis.call('CONFIG', 'RESETSTAT');
    await store.transact([], async () => ({
      result: undefined,
      write: (w) => {
        for (const r of records) w.putObject(r);
        w.tombstone('Node', 'n0', 'uid-n0', '1');
      },
    }));
    const after = await store.redis.get(k.epoch('Node'));
    expect(after).not.toBeNull();
    expect(after).not.toBe(before);
    // Three SETs of objects, one tombstone, one epoch: five SETs in all.
    const stats = String(await store.redis.call('INFO', 'commandstats'));
    expect(stats).toMatch(/cmdstat_set:calls=5,/);
    expect((await store.reader.allRecords('Node')).map((r) => r.key)).toEqual(['n1', 'n2', 'n3']);
    // A transaction that writes no Node leaves the token alone.
    await store.transact([], async () => ({ result: undefined, write: (w) => w.notify({ scope: 'all', topic: 'conf', subject: 'default' }) }));
    expect(await store.redis.get(k.epoch('Node'))).toBe(after);
  });
});

describe('a transaction whose first attempt WATCH aborted', () => {
  it('commits on its next attempt on the same connection, notifications included, whatever Redis\'s script cache holds', async () => {
    // ioredis sends a script's text the first time a connection uses it and only its SHA after.
    // A first EVAL queued in a MULTI that EXEC then discarded never ran: the next attempt's EVALSHA
    // found no script, failing inside EXEC after every other command of it had been applied. The
    // transaction's script goes as text every time (TxWriter.finish).
    const fresh = Store.open(redisUrl, { prefix: 'aborted', failFast: true });
    const other = Store.open(redisUrl, { prefix: 'aborted', failFast: true });
    try {
      await Promise.all([fresh.connect(), other.connect()]);
      await fresh.redis.script('FLUSH');
      const k = fresh.keys;
      let attempts = 0;
      await fresh.transact([k.intents()], async (r) => {
        attempts++;
        await r.redis.hget(k.intents(), '198.51.100.9');
        // Another writer between this read and EXEC: the first EXEC is discarded. And Redis's
        // script cache emptied before the second (as a restart or SCRIPT FLUSH leaves it).
        if (attempts === 1) await other.redis.hset(k.intents(), '198.51.100.8', '{}');
        if (attempts === 2) await other.redis.script('FLUSH');
        return {
          result: undefined,
          write: (w) => {
            w.multi.hset(k.intents(), '198.51.100.9', '{"ip":"198.51.100.9"}');
            w.notify({ scope: 'all', topic: 'intent', subject: '198.51.100.9' });
          },
        };
      });
      expect(attempts).toBe(2);
      const changes = await fresh.redis.xrange(k.changes(), '-', '+');
      expect(changes.map(([, f]) => f[f.indexOf('subject') + 1])).toEqual(['198.51.100.9']);
      expect(await fresh.redis.hget(k.meta(), 'rev')).toBe('1');
    } finally {
      await fresh.close();
      await other.close();
    }
  });
});

describe('a view of the state read while a transaction commits (atOneRevision)', () => {
  it('is read again until the revision did not move during the read, so it is the state at that revision', async () => {
    const k = store.keys;
    let reads = 0;
    const got = await atOneRevision(store, async () => {
      reads++;
      const revision = Number((await store.redis.hget(k.meta(), 'rev')) ?? 0);
      // A transaction commits in the middle of the first read.
      if (reads === 1) await store.transact([], async () => ({ result: undefined, write: (w) => w.notify({ scope: 'all', topic: 'conf', subject: 'mid-read' }) }));
      return { revision, reads };
    });
    expect(got.reads).toBe(2);
    expect(got.revision).toBe(Number(await store.redis.hget(k.meta(), 'rev')));
  });

  it('gives up after its attempts under constant change, labelled with the revision it began at', async () => {
    const k = store.keys;
    let reads = 0;
    const got = await atOneRevision(
      store,
      async () => {
        reads++;
        const revision = Number((await store.redis.hget(k.meta(), 'rev')) ?? 0);
        await store.transact([], async () => ({ result: undefined, write: (w) => w.notify({ scope: 'all', topic: 'conf', subject: 'churn' }) }));
        return { revision };
      },
      3,
    );
    expect(reads).toBe(3);
    expect(got.revision).toBe(Number(await store.redis.hget(k.meta(), 'rev')) - 1);
  });
});
