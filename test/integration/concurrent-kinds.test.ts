/**
 * Transactions that read what other transactions write, run side by side: an Eip's, an
 * EndpointSlice's and a Service's event in one on-service process or in two replicas of it, and
 * BgpPeer events in two replicas of on-bgppeer. A Local Service's route follows its slices; an Eip
 * gives waiting Services their addresses; a speaker's peer list follows every BgpPeer. Each
 * transaction must WATCH what it read, or one that read before another's EXEC overwrites that
 * one's result with one computed without its change: the store then holds every object and a wrong
 * route or peer list. Real redis-server, the real handlers; the races are provoked many times, each
 * on a fresh prefix, or forced at the exact read, and every outcome must equal the sequential one.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definition as onBgpPeer } from '../../functions/on-bgppeer/handler.js';
import { definition as onNodeLabel } from '../../functions/on-node-label/handler.js';
import { definition as onService } from '../../functions/on-service/handler.js';
import type { FunctionDefinition } from '../../src/serve/handler.js';
import type { KubeAction, KubeEvent } from '../../src/events/codec.js';
import { runHandler, type FunctionDeps } from '../../src/serve/handler.js';
import { readState, type StateDocument } from '../../src/state/read.js';
import { RESYNC_ORDER } from '../../src/serve/resync.js';
import { Store } from '../../src/store/store.js';
import { bgpConf, bgpPeer, eip, endpointSlice, node, service, type Json } from '../helpers/fixtures.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
const stores: Store[] = [];
const logger = pino({ level: 'silent' });

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  for (const s of stores) await s.close();
  if (redis) await removeRedis(redis);
});

let eventId = 0;
function kubeEvent(action: KubeAction, object: Json): KubeEvent {
  eventId++;
  return { id: `e${eventId}`, source: 'test', type: `dev.knative.apiserver.resource.${action}`, time: undefined, action, object: structuredClone(object) };
}

/** Two replicas of on-service on one Redis, under one prefix. */
async function replicas(prefix: string): Promise<[FunctionDeps, FunctionDeps]> {
  const a = Store.open(redis.url, { prefix, failFast: true });
  const b = Store.open(redis.url, { prefix, failFast: true });
  stores.push(a, b);
  await Promise.all([a.connect(), b.connect()]);
  return [{ store: a, logger }, { store: b, logger }];
}

async function applied(deps: FunctionDeps, e: KubeEvent, fn: FunctionDefinition = onService): Promise<void> {
  const h = await runHandler(fn, e, deps, 'test');
  expect(h.ok && h.outcome.outcome, JSON.stringify(h)).toBe('applied');
}

const ROUNDS = 150;

/**
 * Two events at once, each through its replica: by turns neither, the first or the second held
 * back one turn of the event loop, so that each reaches its reads first in some rounds.
 */
async function sideBySide(round: number, ...events: [FunctionDeps, KubeEvent][]): Promise<void> {
  await Promise.all(
    events.map(async ([deps, e], i) => {
      if (round % 3 === i + 1) await new Promise((r) => setImmediate(r));
      await applied(deps, e);
    }),
  );
}

describe('an Eip and an EndpointSlice decided side by side', () => {
  it('give a waiting Local Service its address and the route through its endpoint, whatever their order', async () => {
    const wrong: unknown[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const [one, other] = await replicas(`race${round}`);
      // Waiting: no pool yet.
      await applied(one, kubeEvent('add', service({ name: 'b', requestedIp: '198.51.100.2', externalTrafficPolicy: 'Local' })));
      const pool = kubeEvent('add', eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true }));
      const slice = kubeEvent('add', endpointSlice({ service: 'b', endpoints: [{ nodeName: 'n2' }] }));
      await sideBySide(round, [one, pool], [round % 2 === 0 ? other : one, slice]);
      const state = await readState(one.store);
      const intent = state.intents['198.51.100.2'];
      if (JSON.stringify(intent?.nodes) !== JSON.stringify(['n2'])) wrong.push({ round, intent });
    }
    expect(wrong).toEqual([]);
  }, 120_000);

  it('give a Service that stops being Local the route of every node, while its EndpointSlice changes', async () => {
    const wrong: unknown[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const [one, other] = await replicas(`policy${round}`);
      await applied(one, kubeEvent('add', eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true })));
      await applied(one, kubeEvent('add', service({ name: 'x', requestedIp: '198.51.100.3', externalTrafficPolicy: 'Local' })));
      await applied(one, kubeEvent('add', endpointSlice({ service: 'x', endpoints: [{ nodeName: 'n1' }] })));
      const cluster = kubeEvent('update', service({ name: 'x', requestedIp: '198.51.100.3', externalTrafficPolicy: 'Cluster', resourceVersion: '2' }));
      const moved = kubeEvent('update', endpointSlice({ service: 'x', resourceVersion: '2', endpoints: [{ nodeName: 'n2' }] }));
      await sideBySide(round, [one, cluster], [round % 2 === 0 ? other : one, moved]);
      const intent = (await readState(one.store)).intents['198.51.100.3'];
      if (intent?.policy !== 'Cluster' || intent.nodes.length !== 0) wrong.push({ round, intent });
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});

/**
 * Runs `meanwhile` once, the moment the first reply to `command` on `key` reaches one of `store`'s
 * transaction connections (made from now on): between a transaction's read and its EXEC.
 */
function afterRead(store: Store, command: 'smembers', key: string, meanwhile: () => Promise<void>): void {
  let armed = true;
  const duplicate = store.redis.duplicate.bind(store.redis);
  store.redis.duplicate = ((...args: Parameters<typeof duplicate>) => {
    const conn = duplicate(...args);
    const read = conn[command].bind(conn) as (k: string) => Promise<string[]>;
    (conn as unknown as Record<string, unknown>)[command] = async (k: string) => {
      const reply = await read(k);
      if (armed && k === key) {
        armed = false;
        await meanwhile();
      }
      return reply;
    };
    return conn;
  }) as typeof store.redis.duplicate;
}

describe('two BgpPeer events decided side by side by two replicas', () => {
  it('leave a speaker with every peer that selects it: an add is never lost to an update read before it', async () => {
    const [one, other] = await replicas('peers');
    await applied(one, kubeEvent('add', node({ name: 's1', ip: '192.0.2.1', rack: 'leaf1', speaker: true })), onNodeLabel);
    for (const [name, address] of [['p0', '192.0.2.250'], ['p1', '192.0.2.251']] as const) {
      await applied(one, kubeEvent('add', bgpPeer({ name, neighborAddress: address })), onBgpPeer);
    }
    // A second store of the first replica, whose transaction connections are all new, so that the
    // read is caught: the other replica adds p2 after this update read which BgpPeers exist.
    const watched: FunctionDeps = { store: Store.open(redis.url, { prefix: 'peers', failFast: true }), logger };
    stores.push(watched.store);
    await watched.store.connect();
    afterRead(watched.store, 'smembers', watched.store.keys.index('BgpPeer'), () => applied(other, kubeEvent('add', bgpPeer({ name: 'p2', neighborAddress: '192.0.2.252' })), onBgpPeer));
    await applied(watched, kubeEvent('update', bgpPeer({ name: 'p1', neighborAddress: '192.0.2.251', resourceVersion: '2', spec: { timers: { config: { holdTime: 30 } } } })), onBgpPeer);
    expect(await watched.store.redis.smembers(watched.store.keys.index('BgpPeer'))).toContain('p2');
    const state = await readState(one.store);
    expect(state.peers.s1?.map((p) => p.name)).toEqual(['p0', 'p1', 'p2']);
  });
});

/** A small seeded generator: a failing history can be run again from its seed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** What a user reads that follows from the objects alone (not the revision, generation or sessions). */
function derived(s: StateDocument): unknown {
  const { generation: _g, revision: _r, sessions: _s, complete: _c, ...rest } = s;
  return rest;
}

const FUNCTION_OF: Record<string, FunctionDefinition> = {
  Node: onNodeLabel,
  BgpPeer: onBgpPeer,
  BgpConf: onBgpPeer,
  Service: onService,
  EndpointSlice: onService,
  Eip: onService,
};

describe('random histories of every kind, decided by two replicas of each function side by side', () => {
  it('leave the state the final objects give one after the other, deletes included', async () => {
    const HISTORIES = 100;
    const wrong: unknown[] = [];
    for (let h = 0; h < HISTORIES; h++) {
      const seed = 1000 + h;
      const rnd = random(seed);
      const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
      const rv = new Map<string, number>();
      const latest = new Map<string, Json>();
      const version = (key: string): string => {
        const v = (rv.get(key) ?? 0) + 1;
        rv.set(key, v);
        return String(v);
      };
      const NODES = ['n1', 'n2', 'n3', 'n4'];
      const SERVICES = ['s1', 's2', 's3'];
      // Each object's versions in the order its API server wrote them.
      const make: (() => Json)[] = [
        ...NODES.map((name, i) => () => node({ name, ip: `192.0.2.${11 + i}`, rack: pick(['leaf1', 'leaf2', undefined]), speaker: i < 2 || rnd() < 0.3, ready: rnd() < 0.8, resourceVersion: version(`Node/${name}`) })),
        ...['leaf1', 'leaf2'].map((rack, i) => () => bgpPeer({ name: `peer-${rack}`, neighborAddress: `192.0.2.${250 + i}`, rack: pick([rack, 'leaf1', 'leaf2']), resourceVersion: version(`BgpPeer/peer-${rack}`) })),
        ...SERVICES.map((name, i) => () => service({ name, requestedIp: `198.51.100.${1 + i}`, externalTrafficPolicy: pick(['Local', 'Cluster'] as const), resourceVersion: version(`Service/${name}`) })),
        ...SERVICES.map((name) => () => endpointSlice({ service: name, resourceVersion: version(`EndpointSlice/${name}`), endpoints: NODES.filter(() => rnd() < 0.4).map((nodeName) => ({ nodeName })) })),
        () => eip({ name: 'pool', address: '198.51.100.0/28', isDefault: true, resourceVersion: version('Eip/pool') }),
        () => bgpConf({ as: 65100, listenPort: -1, resourceVersion: version('BgpConf/default') }),
      ];
      const [a, b] = await replicas(`history${h}`);
      // Rounds of events in flight together; an object's versions may be in flight at once. The
      // kinds whose transactions read each other's keys come most often: Eips (every holder's
      // route), EndpointSlices and Services, BgpPeers.
      const weighted = [...make, ...make.slice(4, 6), ...make.slice(6, 12), ...make.slice(6, 12), make[12], make[12], make[12]] as (() => Json)[];
      // In every other history, Services, EndpointSlices and BgpPeers are deleted now and then, and
      // never come back (a new object of the same name would have a new uid, which these fixtures
      // do not give). Fewer objects live, fewer races: the histories without deletes keep them.
      const gone = new Set<string>();
      const identity = (o: Json): string => `${String(o.kind)}/${String((o.metadata as Json).namespace ?? '')}/${String((o.metadata as Json).name)}`;
      for (let round = 0; round < 8; round++) {
        const events = Array.from({ length: 6 + Math.floor(rnd() * 10) }, () => {
          const deletable = [...latest.values()].filter((o) => ['Service', 'EndpointSlice', 'BgpPeer'].includes(String(o.kind)));
          if (h % 2 === 1 && deletable.length > 0 && rnd() < 0.08) {
            const doomed = structuredClone(pick(deletable));
            const meta = doomed.metadata as Json;
            // Later than any version of it in flight.
            meta.resourceVersion = String(Number(meta.resourceVersion) + 1000);
            latest.delete(identity(doomed));
            gone.add(identity(doomed));
            return { o: doomed, deps: rnd() < 0.5 ? a : b, action: 'delete' as const };
          }
          const o = pick(weighted)();
          const meta = o.metadata as Json;
          if (gone.has(identity(o))) return undefined;
          latest.set(identity(o), o);
          return { o, deps: rnd() < 0.5 ? a : b, action: rv.get(`${String(o.kind)}/${String(meta.name)}`) === 1 ? ('add' as const) : ('update' as const) };
        }).filter((e) => e !== undefined);
        await Promise.all(events.map(async ({ o, deps, action }) => {
          const out = await runHandler(FUNCTION_OF[String(o.kind)] as FunctionDefinition, kubeEvent(action, o), deps, 'test');
          if (!out.ok) throw new Error(`history ${seed}: ${String(o.kind)} ${JSON.stringify(out)}`);
        }));
      }
      const [alone] = await replicas(`alone${h}`);
      const finals = [...latest.values()].sort((x, y) => RESYNC_ORDER.indexOf(x.kind as never) - RESYNC_ORDER.indexOf(y.kind as never));
      for (const o of finals) await applied(alone, kubeEvent('add', o), FUNCTION_OF[String(o.kind)]);
      const [together, sequential] = [derived(await readState(a.store)), derived(await readState(alone.store))];
      if (JSON.stringify(together) !== JSON.stringify(sequential)) wrong.push({ seed, together, sequential });
    }
    expect(wrong).toEqual([]);
  }, 120_000);
});
