/**
 * on-service, on-node-label and on-bgppeer keep the Eips, BgpPeers and speaker Nodes they read on
 * every event in memory, by the kind's epoch token (RecordCache in src/store/store.ts). What a
 * user must never see: an address taken from a pool another replica removed, a speaker's peers
 * from a BgpPeer another replica changed, a speaker another replica added left without its peers,
 * or, after Redis is restored from an older snapshot, addresses from pools that snapshot never
 * held. Each replica is its own Store (its own cache) on one real Redis.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { definition as onBgpPeer } from '../../functions/on-bgppeer/handler.js';
import { definition as onNodeLabel } from '../../functions/on-node-label/handler.js';
import { definition as onService } from '../../functions/on-service/handler.js';
import type { KubeAction, KubeEvent } from '../../src/events/codec.js';
import { runHandler, type FunctionDefinition } from '../../src/serve/handler.js';
import { Store } from '../../src/store/store.js';
import { bgpPeer, eip, node, service, type Json } from '../helpers/fixtures.js';
import { metricValue, send, serveAll } from '../helpers/functions.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let a: Store;
let b: Store;
const logger = pino({ level: 'silent' });
const POOL_A = '198.51.100.0/28';
const POOL_B = '203.0.113.0/28';
const POOL_C = '192.0.2.0/28';

beforeAll(async () => {
  redis = await startRedis();
  a = Store.open(redis.url, { failFast: true });
  b = Store.open(redis.url, { failFast: true });
  await Promise.all([a.connect(), b.connect()]);
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  if (redis) await removeRedis(redis);
});

beforeEach(async () => {
  await a.redis.flushall();
});

let rv = 100;
function event(action: KubeAction, object: Json): KubeEvent {
  const o = structuredClone(object);
  (o.metadata as Json).resourceVersion = String(++rv);
  return { id: `e${rv}`, source: 'test', type: `dev.knative.apiserver.resource.${action}`, time: undefined, action, object: o };
}

async function apply(def: FunctionDefinition, store: Store, action: KubeAction, object: Json): Promise<void> {
  const handled = await runHandler(def, event(action, object), { store, logger }, 'test');
  expect(handled.ok && handled.outcome.outcome, handled.ok ? handled.outcome.detail : String(handled.error)).toBe('applied');
}

async function addressOf(store: Store, name: string): Promise<string | null> {
  return store.redis.hget(store.keys.serviceIps(), `default/${name}`);
}

function inPool(ip: string | null, cidr: string): boolean {
  const [net] = cidr.split('/');
  return ip !== null && ip.split('.').slice(0, 3).join('.') === (net as string).split('.').slice(0, 3).join('.');
}

/** Every key of the store, as DUMP gives it: what a snapshot holds. */
async function snapshot(store: Store): Promise<[string, Buffer][]> {
  const keys = await store.redis.keys(`{${store.keys.prefix}}:*`);
  return Promise.all(keys.map(async (key) => [key, (await store.redis.dumpBuffer(key)) as Buffer] as [string, Buffer]));
}

async function restore(store: Store, snap: [string, Buffer][]): Promise<void> {
  await store.redis.flushall();
  for (const [key, value] of snap) await store.redis.restore(key, 0, value);
}

describe('the Eips on-service keeps in memory', () => {
  it('follow a pool another replica replaced', async () => {
    await apply(onService, b, 'add', eip({ name: 'pool-a', address: POOL_A, isDefault: true }));
    await apply(onService, a, 'add', service({ name: 'first' }));
    expect(inPool(await addressOf(a, 'first'), POOL_A)).toBe(true);

    await apply(onService, b, 'update', eip({ name: 'pool-a', address: POOL_A }));
    await apply(onService, b, 'add', eip({ name: 'pool-b', address: POOL_B, isDefault: true }));
    await apply(onService, a, 'add', service({ name: 'second' }));
    expect(inPool(await addressOf(a, 'second'), POOL_B)).toBe(true);
    expect(a.recordCache.misses).toBeGreaterThan(0);
  });

  it('are read again after Redis is restored from an older snapshot, even once as many writes followed', async () => {
    await apply(onService, b, 'add', eip({ name: 'pool-a', address: POOL_A, isDefault: true }));
    const older = await snapshot(a);
    // After the snapshot: pool-a deleted, pool-b the default, and replica a allocates from it.
    await apply(onService, b, 'delete', eip({ name: 'pool-a', address: POOL_A, isDefault: true }));
    await apply(onService, b, 'add', eip({ name: 'pool-b', address: POOL_B, isDefault: true }));
    await apply(onService, a, 'add', service({ name: 'before-restore' }));
    expect(inPool(await addressOf(a, 'before-restore'), POOL_B)).toBe(true);

    // Restored: pool-a is back; then as many Eip writes as before (a counter would be where it was).
    await restore(a, older);
    await apply(onService, b, 'add', eip({ name: 'pool-c', address: POOL_C }));
    await apply(onService, b, 'update', eip({ name: 'pool-c', address: POOL_C, priority: 5 }));
    await apply(onService, a, 'add', service({ name: 'after-restore' }));
    expect(inPool(await addressOf(a, 'after-restore'), POOL_A)).toBe(true);
  });

  it('cannot be changed by a handler (frozen)', async () => {
    await apply(onService, a, 'add', eip({ name: 'pool-a', address: POOL_A, isDefault: true }));
    const pools = await a.reader.allRecordsCached('Eip');
    const again = await a.reader.allRecordsCached('Eip');
    expect(again.map((p) => p.key)).toEqual(['pool-a']);
    expect(a.recordCache.hits).toBeGreaterThan(0);
    expect(() => {
      (pools[0] as { cidr?: string }).cidr = POOL_B;
    }).toThrow(TypeError);
  });
});

describe('the BgpPeers on-node-label keeps in memory', () => {
  it('follow a BgpPeer another replica changed', async () => {
    const speaker = (): Json => node({ name: 'n1', rack: 'rack1', speaker: true, ip: '198.51.100.11' });
    await apply(onBgpPeer, b, 'add', bgpPeer({ name: 'leaf1', neighborAddress: '198.51.100.1', peerAs: 65001, rack: 'rack1' }));
    await apply(onNodeLabel, a, 'add', speaker());
    const peersOf = async (): Promise<unknown> => JSON.parse((await a.redis.get(a.keys.peers('n1'))) ?? 'null');
    expect(JSON.stringify(await peersOf())).toContain('198.51.100.1');

    await apply(onBgpPeer, b, 'update', bgpPeer({ name: 'leaf1', neighborAddress: '198.51.100.2', peerAs: 65001, rack: 'rack1' }));
    // A change of the node (a label) that makes on-node-label compute the node's peers again.
    await apply(onNodeLabel, a, 'update', node({ name: 'n1', rack: 'rack1', speaker: true, ip: '198.51.100.11', labels: { team: 'edge' } }));
    const peers = JSON.stringify(await peersOf());
    expect(peers).toContain('198.51.100.2');
    expect(peers).not.toContain('198.51.100.1"');
  });
});

describe('the speaker Nodes and BgpPeers on-bgppeer keeps in memory', () => {
  it('are parsed again when their stored text changed: a speaker another replica moved to another rack gets that rack\'s peer', async () => {
    const peerOf = (rack: string, sendMax = 10): Json => bgpPeer({ name: `leaf-${rack}`, neighborAddress: rack === 'rack1' ? '198.51.100.1' : '198.51.100.2', peerAs: 65001, rack, sendMax });
    await apply(onNodeLabel, b, 'add', node({ name: 'n1', rack: 'rack1', speaker: true, ip: '198.51.100.11' }));
    await apply(onBgpPeer, a, 'add', peerOf('rack1'));
    await apply(onBgpPeer, a, 'add', peerOf('rack2'));
    const peersOf = async (): Promise<string> => (await a.redis.get(a.keys.peers('n1'))) ?? '';
    expect(await peersOf()).toContain('leaf-rack1');
    expect(await peersOf()).not.toContain('leaf-rack2');

    // Replica b moves the speaker; a's next BgpPeer events must see the node as it is now.
    await apply(onNodeLabel, b, 'update', node({ name: 'n1', rack: 'rack2', speaker: true, ip: '198.51.100.11' }));
    await apply(onBgpPeer, a, 'update', peerOf('rack2', 20));
    await apply(onBgpPeer, a, 'update', peerOf('rack1', 20));
    expect(await peersOf()).toContain('leaf-rack2');
    expect(await peersOf()).not.toContain('leaf-rack1');
  });

  it('come from memory while no Node is written, and a speaker another replica added is seen at the next BgpPeer event', async () => {
    const peerOf = (holdTime: number): Json => bgpPeer({ name: 'leaf-rack1', neighborAddress: '198.51.100.1', peerAs: 65001, rack: 'rack1', spec: { timers: { config: { holdTime, keepaliveInterval: holdTime / 3 } } } });
    const peersOf = async (name: string): Promise<string> => (await a.redis.get(a.keys.peers(name))) ?? '';
    await apply(onNodeLabel, b, 'add', node({ name: 'n1', rack: 'rack1', speaker: true, ip: '198.51.100.11' }));
    await apply(onBgpPeer, a, 'add', peerOf(30));
    const hits = a.recordCache.hits;
    await apply(onBgpPeer, a, 'update', peerOf(60));
    expect(a.recordCache.hits).toBeGreaterThan(hits);
    expect(await peersOf('n1')).toContain('"holdTime":60');

    // Replica b makes n2 a speaker of the same rack (its peer list written by b, with hold time 60).
    await apply(onNodeLabel, b, 'add', node({ name: 'n2', rack: 'rack1', speaker: true, ip: '198.51.100.12' }));
    await apply(onBgpPeer, a, 'update', peerOf(90));
    expect(await peersOf('n1')).toContain('"holdTime":90');
    expect(await peersOf('n2')).toContain('"holdTime":90');
  });

  it('are the same frozen object while the text is unchanged, and a new one after a write', async () => {
    await apply(onNodeLabel, a, 'add', node({ name: 'n1', rack: 'rack1', speaker: true, ip: '198.51.100.11' }));
    const [first] = await a.reader.recordsCached('Node', ['n1']);
    const [again] = await a.reader.recordsCached('Node', ['n1']);
    expect(again).toBe(first);
    expect(Object.isFrozen(first) && Object.isFrozen((first as { labels: object }).labels)).toBe(true);
    await apply(onNodeLabel, b, 'update', node({ name: 'n1', rack: 'rack2', speaker: true, ip: '198.51.100.11' }));
    const [after] = await a.reader.recordsCached('Node', ['n1']);
    expect(after).not.toBe(first);
    expect(after?.kind === 'Node' ? after.labels['porter.kubesphere.io/rack'] : undefined).toBe('rack2');
    // A deleted Node (a tombstone) is no record.
    await apply(onNodeLabel, b, 'delete', node({ name: 'n1', rack: 'rack2', speaker: true, ip: '198.51.100.11' }));
    expect(await a.reader.recordsCached('Node', ['n1'])).toEqual([]);
  });
});

describe('the BgpPeers a replica writes', () => {
  it('are read back as written, without parsing them again, until another replica stores another text', async () => {
    const peerOf = (address: string): Json => bgpPeer({ name: 'leaf1', neighborAddress: address, peerAs: 65001, rack: 'rack1' });
    await apply(onBgpPeer, a, 'add', peerOf('198.51.100.1'));
    const parses = a.recordCache.parses;
    const [written] = await a.reader.recordsCached('BgpPeer', ['leaf1']);
    expect(a.recordCache.parses).toBe(parses);
    expect(written?.kind === 'BgpPeer' ? written.neighborAddress : undefined).toBe('198.51.100.1');
    expect(Object.isFrozen(written) && Object.isFrozen((written as { nodeSelector: object }).nodeSelector)).toBe(true);
    // What the memo returns is what parsing the stored text gives.
    expect(written).toEqual(await a.reader.record('BgpPeer', 'leaf1'));

    await apply(onBgpPeer, b, 'update', peerOf('198.51.100.2'));
    const [changed] = await a.reader.recordsCached('BgpPeer', ['leaf1']);
    expect(a.recordCache.parses).toBe(parses + 1);
    expect(changed?.kind === 'BgpPeer' ? changed.neighborAddress : undefined).toBe('198.51.100.2');

    // A delete is remembered too: the tombstone reads as no record, without a parse.
    await apply(onBgpPeer, a, 'delete', peerOf('198.51.100.2'));
    const before = a.recordCache.parses;
    expect(await a.reader.recordsCached('BgpPeer', ['leaf1'])).toEqual([]);
    expect(a.recordCache.parses).toBe(before);
  });
});

describe('the cache over HTTP', () => {
  it('answers speaker Node events from memory until a BgpPeer changes, and /metrics counts hits and misses', async () => {
    const fns = await serveAll(redis.url, 'http-cache');
    try {
      const value = (result: string): Promise<number> => metricValue(fns.urls['on-node-label'], 'racklb_function_record_cache_reads_total', { function: 'on-node-label', result });
      const reads = async (): Promise<{ hit: number; miss: number }> => ({ hit: await value('hit'), miss: await value('miss') });
      // The functions share one store here, so its counts include on-bgppeer's reads of the speakers: compare before and after.
      const since = async (before: { hit: number; miss: number }): Promise<{ hit: number; miss: number }> => {
        const now = await reads();
        return { hit: now.hit - before.hit, miss: now.miss - before.miss };
      };
      expect((await send(fns, 'add', bgpPeer({ name: 'leaf1', neighborAddress: '198.51.100.1', peerAs: 65001, rack: 'rack1' }))).outcome).toBe('applied');
      const start = await reads();
      for (let i = 0; i < 4; i++) {
        expect((await send(fns, 'add', node({ name: `s${i}`, rack: 'rack1', speaker: true, ip: `198.51.100.${20 + i}` }))).outcome).toBe('applied');
      }
      // The first speaker read the BgpPeers from Redis, the next three from memory.
      expect(await since(start)).toEqual({ hit: 3, miss: 1 });
      expect((await send(fns, 'update', bgpPeer({ name: 'leaf1', neighborAddress: '198.51.100.2', peerAs: 65001, rack: 'rack1', resourceVersion: '2' }))).outcome).toBe('applied');
      const updated = await reads();
      expect((await send(fns, 'add', node({ name: 's9', rack: 'rack1', speaker: true, ip: '198.51.100.29' }))).outcome).toBe('applied');
      expect(await since(updated)).toEqual({ hit: 0, miss: 1 });
      expect(await fns.store.redis.get(fns.store.keys.peers('s9'))).toContain('198.51.100.2');
    } finally {
      await fns.close();
    }
  });
});
