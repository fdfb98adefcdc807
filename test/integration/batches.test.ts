/**
 * on-service, on-node-label and on-bgppeer decide the events that arrive together in one transaction (group
 * commit, src/store/group-commit.ts). A batch must leave exactly the state the same events leave
 * one after the other, in the same order, and answer each the same: for Services the same
 * addresses (lowest free, requested and shared, taken back from the status, none when a pool is
 * full), intents, pending reasons, tombstones; for Nodes the same racks (emptied ones removed), next
 * hops, speakers and peer lists; for BgpPeers the same peer lists of every speaker. Each random history runs twice on one real Redis, under two
 * prefixes: every event awaited alone, and each round of events handed to the function at once, so
 * that they batch.
 */
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definition as onNodeLabel, nodeBatchesOf } from '../../functions/on-node-label/handler.js';
import { definition as onBgpPeer, peerBatchesOf } from '../../functions/on-bgppeer/handler.js';
import { definition as onService, serviceBatchesOf } from '../../functions/on-service/handler.js';
import type { Outcome } from '../../src/core/types.js';
import type { KubeAction, KubeEvent } from '../../src/events/codec.js';
import { runHandler, type FunctionDeps } from '../../src/serve/handler.js';
import { Store } from '../../src/store/store.js';
import { bgpPeer, eip, endpointSlice, node, service, type Json } from '../helpers/fixtures.js';
import { canonicalState, metricValue, send, serveAll } from '../helpers/functions.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let one: Store;
let batched: Store;
const logger = pino({ level: 'silent' });

beforeAll(async () => {
  redis = await startRedis();
  one = Store.open(redis.url, { prefix: 'one', failFast: true });
  batched = Store.open(redis.url, { prefix: 'batch', failFast: true });
  await Promise.all([one.connect(), batched.connect()]);
});

afterAll(async () => {
  await one?.close();
  await batched?.close();
  if (redis) await removeRedis(redis);
});

let eventId = 0;
function kubeEvent(action: KubeAction, object: Json): KubeEvent {
  eventId++;
  return { id: `e${eventId}`, source: 'test', type: `dev.knative.apiserver.resource.${action}`, time: undefined, action, object: structuredClone(object) };
}

/** canonicalState with the prefix taken off every key, so that two prefixes compare. */
async function canonical(store: Store): Promise<Record<string, unknown>> {
  const base = `{${store.keys.prefix}}:`;
  return Object.fromEntries(Object.entries(await canonicalState(store)).map(([key, value]) => [key.slice(base.length), value]));
}

const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
// Two small pools, so that they fill up and Services wait, and addresses are shared on request.
const POOL_A = '198.51.100.0/29';
const POOL_B = '203.0.113.8/30';
const ADDRESSES = ['198.51.100.0', '198.51.100.3', '198.51.100.7', '203.0.113.9', '203.0.113.11', '192.0.2.200'];

type Step = { name: string; kind: 'put'; pool: 'A' | 'B' | undefined; requested: number | undefined; shown: number | undefined; local: boolean } | { name: string; kind: 'delete' };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      name: fc.constantFrom(...NAMES),
      kind: fc.constant('put' as const),
      pool: fc.constantFrom(undefined, 'A' as const, 'B' as const),
      requested: fc.option(fc.nat({ max: ADDRESSES.length - 1 }), { nil: undefined, freq: 3 }),
      shown: fc.option(fc.nat({ max: ADDRESSES.length - 1 }), { nil: undefined, freq: 4 }),
      local: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ name: fc.constantFrom(...NAMES), kind: fc.constant('delete' as const) }) },
);

/** The API server's side: a uid per life of an object, one growing resourceVersion. */
class Cluster {
  private rv = 100;
  private lives = new Map<string, number>();
  private live = new Set<string>();

  event(s: Step): KubeEvent | undefined {
    const rv = String(++this.rv);
    if (s.kind === 'delete') {
      if (!this.live.has(s.name)) return undefined;
      this.live.delete(s.name);
      return kubeEvent('delete', service({ name: s.name, uid: this.uid(s.name), resourceVersion: rv }));
    }
    const adding = !this.live.has(s.name);
    if (adding) this.lives.set(s.name, (this.lives.get(s.name) ?? 0) + 1);
    this.live.add(s.name);
    const o = service({
      name: s.name,
      uid: this.uid(s.name),
      resourceVersion: rv,
      externalTrafficPolicy: s.local ? 'Local' : 'Cluster',
      ...(s.pool === undefined ? {} : { pool: s.pool === 'A' ? 'pool-a' : 'pool-b' }),
      ...(s.requested === undefined ? {} : { requestedIp: ADDRESSES[s.requested] }),
      ...(s.shown === undefined ? {} : { ingress: [ADDRESSES[s.shown] as string] }),
    });
    return kubeEvent(adding ? 'add' : 'update', o);
  }

  private uid(name: string): string {
    return `uid-${name}-${this.lives.get(name) ?? 0}`;
  }
}

function deps(store: Store): FunctionDeps {
  return { store, logger };
}

async function setUp(store: Store): Promise<void> {
  await store.redis.eval("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end", 0, `{${store.keys.prefix}}:*`);
  for (const e of [kubeEvent('add', eip({ name: 'pool-a', address: POOL_A, isDefault: true })), kubeEvent('add', eip({ name: 'pool-b', address: POOL_B })), kubeEvent('add', endpointSlice({ service: 'a', endpoints: [{ nodeName: 'n1' }] }))]) {
    const h = await runHandler(onService, e, deps(store), 'test');
    expect(h.ok && h.outcome.outcome).toBe('applied');
  }
}

describe('on-service batches of Service events', () => {
  it('leave the state the same events leave one after the other', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(step, { minLength: 1, maxLength: 14 }), { minLength: 1, maxLength: 6 }), async (rounds) => {
        await setUp(one);
        await setUp(batched);
        const cluster = new Cluster();
        const events = rounds.map((round) => round.flatMap((s) => cluster.event(s) ?? []));
        const alone: Outcome[] = [];
        for (const round of events) {
          for (const e of round) alone.push(await onService.handle(e, deps(one)));
        }
        const together: Outcome[] = [];
        for (const round of events) {
          // Handed over at once, in order: the first starts a batch, the rest wait and go as the next.
          together.push(...(await Promise.all(round.map((e) => onService.handle(e, deps(batched))))));
        }
        expect(together).toEqual(alone);
        expect(await canonical(batched)).toEqual(await canonical(one));
      }),
      { numRuns: 60, seed: 7071 },
    );
    // The property ran on batches, not on events one at a time.
    expect(serviceBatchesOf(batched).stats.largest).toBeGreaterThan(5);
  }, 120_000);

  it('fails only the event whose stored record is corrupt, and journals each answered event inside the transaction', async () => {
    await setUp(batched);
    const ok1 = kubeEvent('add', service({ name: 'x1', resourceVersion: '10' }));
    const bad = kubeEvent('add', service({ name: 'x2', resourceVersion: '11' }));
    const ok2 = kubeEvent('add', service({ name: 'x3', resourceVersion: '12' }));
    const stale = kubeEvent('update', service({ name: 'x1', resourceVersion: '9' }));
    await batched.redis.set(batched.keys.object('Service', 'default/x2'), '{not json');
    const journalBefore = await batched.redis.xlen(batched.keys.journal());
    const first = kubeEvent('add', service({ name: 'x0', resourceVersion: '5' }));
    // x0 starts a batch alone; the other four wait for it and go together.
    const handled = await Promise.all([first, ok1, bad, ok2].map((e) => runHandler(onService, e, deps(batched), 'test')));
    const late = await runHandler(onService, stale, deps(batched), 'test');
    expect(handled.map((h) => (h.ok ? h.outcome.outcome : h.error.code))).toEqual(['applied', 'applied', 'RACKLB_CORRUPT_RECORD', 'applied']);
    expect(late.ok && late.outcome.outcome).toBe('stale');
    expect(await batched.redis.hgetall(batched.keys.serviceIps())).toEqual({ 'default/x0': '198.51.100.0', 'default/x1': '198.51.100.1', 'default/x3': '198.51.100.2' });
    expect(await batched.redis.get(batched.keys.object('Service', 'default/x2'))).toBe('{not json');
    // One line per answered event (the corrupt one is retried by its sender, not journaled), in the order decided.
    const lines = await batched.redis.xrange(batched.keys.journal(), '-', '+');
    const mine = lines.slice(journalBefore).map(([, f]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i + 1 < f.length; i += 2) o[f[i] as string] = f[i + 1] as string;
      return `${o.key} ${o.outcome} ${o.rv}`;
    });
    expect(mine).toEqual(['default/x0 applied 5', 'default/x1 applied 10', 'default/x3 applied 12', 'default/x1 stale 9']);
  });
});

type NodeStep = { name: string; kind: 'put'; rack: string | undefined; ready: boolean; speaker: boolean; ip: number } | { name: string; kind: 'delete' };

const NODE_NAMES = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7'];
const RACKS = ['leaf1', 'leaf2', 'leaf3'];

const nodeStep: fc.Arbitrary<NodeStep> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      name: fc.constantFrom(...NODE_NAMES),
      kind: fc.constant('put' as const),
      rack: fc.constantFrom(undefined, ...RACKS),
      ready: fc.boolean(),
      speaker: fc.boolean(),
      ip: fc.nat({ max: 2 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ name: fc.constantFrom(...NODE_NAMES), kind: fc.constant('delete' as const) }) },
);

/** As Cluster, for Nodes. */
class Nodes {
  private rv = 100;
  private live = new Set<string>();

  event(s: NodeStep): KubeEvent | undefined {
    const resourceVersion = String(++this.rv);
    if (s.kind === 'delete') {
      if (!this.live.has(s.name)) return undefined;
      this.live.delete(s.name);
      return kubeEvent('delete', node({ name: s.name, resourceVersion }));
    }
    const adding = !this.live.has(s.name);
    this.live.add(s.name);
    const ip = `192.0.2.${10 * Number(s.name.slice(1)) + s.ip}`;
    return kubeEvent(adding ? 'add' : 'update', node({ name: s.name, resourceVersion, ip, ready: s.ready, speaker: s.speaker, ...(s.rack === undefined ? {} : { rack: s.rack }) }));
  }
}

describe('on-node-label batches of Node events', () => {
  it('leave the state the same events leave one after the other', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(nodeStep, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 6 }), async (rounds) => {
        for (const store of [one, batched]) {
          await store.redis.eval("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end", 0, `{${store.keys.prefix}}:*`);
          // Peers for two of the racks, so that speakers get lists that depend on their rack.
          for (const [i, rack] of ['leaf1', 'leaf2'].entries()) {
            const h = await runHandler(onBgpPeer, kubeEvent('add', bgpPeer({ name: `peer-${rack}`, neighborAddress: `192.0.2.${250 + i}`, rack })), deps(store), 'test');
            expect(h.ok && h.outcome.outcome).toBe('applied');
          }
        }
        const nodes = new Nodes();
        const events = rounds.map((round) => round.flatMap((s) => nodes.event(s) ?? []));
        const alone: Outcome[] = [];
        for (const round of events) for (const e of round) alone.push(await onNodeLabel.handle(e, deps(one)));
        const together: Outcome[] = [];
        for (const round of events) together.push(...(await Promise.all(round.map((e) => onNodeLabel.handle(e, deps(batched))))));
        expect(together).toEqual(alone);
        expect(await canonical(batched)).toEqual(await canonical(one));
      }),
      { numRuns: 60, seed: 7072 },
    );
    expect(nodeBatchesOf(batched).stats.largest).toBeGreaterThan(5);
  }, 120_000);
});

type PeerStep = { name: string; kind: 'put'; rack: string | undefined; holdTime: number } | { name: string; kind: 'delete' };

const PEER_NAMES = ['p1', 'p2', 'p3', 'p4', 'p5'];

const peerStep: fc.Arbitrary<PeerStep> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ name: fc.constantFrom(...PEER_NAMES), kind: fc.constant('put' as const), rack: fc.constantFrom(undefined, ...RACKS), holdTime: fc.constantFrom(9, 30, 90) }) },
  { weight: 1, arbitrary: fc.record({ name: fc.constantFrom(...PEER_NAMES), kind: fc.constant('delete' as const) }) },
);

describe('on-bgppeer batches of BgpPeer events', () => {
  it('leave the peer lists the same events leave one after the other', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(peerStep, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 6 }), async (rounds) => {
        for (const store of [one, batched]) {
          await store.redis.eval("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end", 0, `{${store.keys.prefix}}:*`);
          // Two speakers per rack and one without a rack; a peer without a selector takes them all.
          const speakers = RACKS.flatMap((rack, i) => [0, 1].map((j) => node({ name: `s${i}${j}`, ip: `192.0.2.${20 * i + j + 1}`, rack, speaker: true })));
          for (const n of [...speakers, node({ name: 'sx', ip: '192.0.2.99', speaker: true })]) {
            const h = await runHandler(onNodeLabel, kubeEvent('add', n), deps(store), 'test');
            expect(h.ok && h.outcome.outcome).toBe('applied');
          }
        }
        let rv = 100;
        const live = new Set<string>();
        const events = rounds.map((round) =>
          round.flatMap((s): KubeEvent[] => {
            const resourceVersion = String(++rv);
            const address = `198.51.100.${Number(s.name.slice(1))}`;
            if (s.kind === 'delete') {
              if (!live.delete(s.name)) return [];
              return [kubeEvent('delete', bgpPeer({ name: s.name, neighborAddress: address, resourceVersion }))];
            }
            const adding = !live.has(s.name);
            live.add(s.name);
            const o = bgpPeer({ name: s.name, neighborAddress: address, resourceVersion, ...(s.rack === undefined ? {} : { rack: s.rack }), spec: { timers: { config: { holdTime: s.holdTime, keepaliveInterval: 3 } } } });
            return [kubeEvent(adding ? 'add' : 'update', o)];
          }),
        );
        const alone: Outcome[] = [];
        for (const round of events) for (const e of round) alone.push(await onBgpPeer.handle(e, deps(one)));
        const together: Outcome[] = [];
        for (const round of events) together.push(...(await Promise.all(round.map((e) => onBgpPeer.handle(e, deps(batched))))));
        expect(together).toEqual(alone);
        expect(await canonical(batched)).toEqual(await canonical(one));
      }),
      { numRuns: 60, seed: 7073 },
    );
    expect(peerBatchesOf(batched).stats.largest).toBeGreaterThan(4);
  }, 120_000);

  it('fail only the event whose stored BgpPeer is corrupt, batch after batch: the parse memo never hides it', async () => {
    await setUp(batched);
    const peer = (name: string, rv: string, holdTime: number): Json => bgpPeer({ name, neighborAddress: name === 'p1' ? '192.0.2.1' : '192.0.2.2', resourceVersion: rv, rack: 'leaf1', spec: { timers: { config: { holdTime, keepaliveInterval: 3 } } } });
    // A speaker the peers select: the batch then reads every BgpPeer again (RecordCache.parsed), the corrupt one too.
    const speaker = await runHandler(onNodeLabel, kubeEvent('add', node({ name: 's1', ip: '198.51.100.40', rack: 'leaf1', speaker: true })), deps(batched), 'test');
    expect(speaker.ok && speaker.outcome.outcome).toBe('applied');
    const first = await runHandler(onBgpPeer, kubeEvent('add', peer('p1', '5', 30)), deps(batched), 'test');
    expect(first.ok && first.outcome.outcome).toBe('applied');
    await batched.redis.set(batched.keys.object('BgpPeer', 'p2'), '{not json');
    await batched.redis.sadd(batched.keys.index('BgpPeer'), 'p2');
    for (const [rv, hold] of [['60', 60], ['70', 90]] as const) {
      // Each round: p1's update starts a batch and p2's waits for the next; p1's second follows its
      // first (a process takes one object's events in order). Every batch reads every BgpPeer.
      const handled = await Promise.all(
        [kubeEvent('update', peer('p1', rv, hold)), kubeEvent('update', peer('p2', rv, hold)), kubeEvent('update', peer('p1', String(Number(rv) + 1), hold + 1))].map((e) => runHandler(onBgpPeer, e, deps(batched), 'test')),
      );
      expect(handled.map((h) => (h.ok ? h.outcome.outcome : h.error.code))).toEqual(['applied', 'RACKLB_CORRUPT_RECORD', 'applied']);
      const stored = JSON.parse((await batched.redis.get(batched.keys.object('BgpPeer', 'p1'))) ?? 'null') as { record: { resourceVersion: string } };
      expect(stored.record.resourceVersion).toBe(String(Number(rv) + 1));
    }
    expect(await batched.redis.get(batched.keys.object('BgpPeer', 'p2'))).toBe('{not json');
  });
});

describe('batches over HTTP', () => {
  it('64 Node updates posted at once are decided in batches, and /metrics says how many', async () => {
    const fns = await serveAll(redis.url, 'http');
    try {
      const posted = await Promise.all(NODE_NAMES.flatMap((n, i) => Array.from({ length: 9 }, (_, j) => node({ name: `${n}-${j}`, ip: `198.51.100.${10 * j + i}`, rack: RACKS[j % 3], resourceVersion: '7' }))).map((o) => send(fns, 'add', o)));
      expect(posted.map((a) => `${a.status} ${a.outcome}`)).toEqual(posted.map(() => '200 applied'));
      const value = (name: string, labels: Record<string, string> = {}): Promise<number> => metricValue(fns.urls['on-node-label'], name, { function: 'on-node-label', ...labels });
      expect(await value('racklb_function_batched_events_total')).toBe(posted.length);
      // Fewer transactions than events: they were decided together.
      expect(await value('racklb_function_batches_total')).toBeLessThan(posted.length);
      expect(await value('racklb_function_batch_largest_events')).toBeGreaterThan(1);
      expect(await fns.store.redis.scard(fns.store.keys.rackNodes('leaf1'))).toBe(21);
      // No speaker among them: the BgpPeers were never read, from memory or from Redis.
      expect([await value('racklb_function_record_cache_reads_total', { result: 'hit' }), await value('racklb_function_record_cache_reads_total', { result: 'miss' })]).toEqual([0, 0]);
    } finally {
      await fns.close();
    }
  });
});
