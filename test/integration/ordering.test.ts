/**
 * Out-of-order and duplicated delivery (issue 8, bad input): a recorded sequence of Kubernetes
 * events, as ApiServerSource emits them in the life of a small cluster (resourceVersions growing
 * like etcd revisions, uids stable per object, a Service deleted and created again under a new
 * uid), is delivered in order once, and then shuffled, reversed, with duplicates and with several
 * deliveries in flight at once. Every delivery order must leave the same stored state.
 *
 * "The same" is every key the functions own, values parsed, except what counts deliveries rather
 * than describes the cluster: meta (revision, generation), the change and journal streams, the
 * per-kind epoch counters, and a tombstone's deletedAt. Services here request their IPs, as in
 * PorterLB's guide: which free address an unpinned Service gets is first come, first served, in
 * racklb as in OpenELB (docs/reliability.md).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bgpConf, bgpPeer, eip, endpointSlice, node, service, type Json } from '../helpers/fixtures.js';
import { canonicalState, flushStore, send, serveAll, type ServedFunctions } from '../helpers/functions.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let fns: ServedFunctions;

beforeAll(async () => {
  redis = await startRedis();
  fns = await serveAll(redis.url);
});

afterAll(async () => {
  await fns?.close();
  if (redis) await removeRedis(redis);
});

interface Recorded {
  action: 'add' | 'update' | 'delete';
  object: Json;
}

/** The API server's side: uids per object, one global resourceVersion counter, like etcd. */
class Recorder {
  readonly events: Recorded[] = [];
  private rv = 4000;
  private readonly live = new Map<string, Json>();
  private generation = 0;

  private key(o: Json): string {
    const m = o.metadata as Json;
    return `${String(o.kind)}/${String(m.namespace ?? '')}/${String(m.name)}`;
  }

  put(o: Json): void {
    const k = this.key(o);
    const prev = this.live.get(k);
    const m = o.metadata as Json;
    m.uid = prev ? (prev.metadata as Json).uid : `uid-${++this.generation}-${String(m.name)}`;
    m.resourceVersion = String(++this.rv);
    this.live.set(k, o);
    this.events.push({ action: prev ? 'update' : 'add', object: structuredClone(o) });
  }

  remove(o: Json): void {
    const k = this.key(o);
    const prev = this.live.get(k);
    if (!prev) throw new Error(`recorder: ${k} is not live`);
    this.live.delete(k);
    const gone = structuredClone(prev);
    (gone.metadata as Json).resourceVersion = String(++this.rv);
    (gone.metadata as Json).deletionTimestamp = '2024-05-01T11:00:00Z';
    this.events.push({ action: 'delete', object: gone });
  }
}

/** A cluster's afternoon: nodes join and get labelled, peers and pools arrive, pods move, things are deleted and recreated. */
function recordSequence(): Recorded[] {
  const r = new Recorder();
  const racks: Record<string, string> = { n1: 'leaf1', n2: 'leaf1', n3: 'leaf2', n4: 'leaf2', n5: 'leaf3', n6: 'leaf3' };
  const ip = (n: string): string => `192.0.2.${10 + Number(n.slice(1))}`;
  for (const n of Object.keys(racks)) r.put(node({ name: n, ip: ip(n), ready: false }));
  for (const n of Object.keys(racks)) r.put(node({ name: n, ip: ip(n), ready: true }));
  for (const n of Object.keys(racks)) r.put(node({ name: n, ip: ip(n), rack: racks[n], speaker: n === 'n1' || n === 'n3' || n === 'n5' }));
  r.put(bgpConf({ as: 65100, listenPort: 179 }));
  r.put(bgpPeer({ name: 'peer-leaf1', peerAs: 65001, neighborAddress: '192.0.2.1', rack: 'leaf1' }));
  r.put(bgpPeer({ name: 'peer-leaf2', peerAs: 65002, neighborAddress: '192.0.2.65', rack: 'leaf2' }));
  r.put(eip({ name: 'pool-a', address: '198.51.100.0/28', isDefault: true }));
  r.put(service({ name: 'web', requestedIp: '198.51.100.1' }));
  r.put(service({ name: 'api', requestedIp: '198.51.100.2', externalTrafficPolicy: 'Local' }));
  r.put(endpointSlice({ service: 'api', endpoints: [{ nodeName: 'n1' }, { nodeName: 'n3' }] }));
  r.put(endpointSlice({ service: 'web', endpoints: [{ nodeName: 'n2' }] }));
  r.put(bgpPeer({ name: 'peer-leaf3', peerAs: 65003, neighborAddress: '192.0.2.129', rack: 'leaf3' }));
  // Pods move; a node goes NotReady and comes back; another is cordoned.
  r.put(endpointSlice({ service: 'api', endpoints: [{ nodeName: 'n1' }, { nodeName: 'n3', ready: false }, { nodeName: 'n5' }] }));
  r.put(node({ name: 'n4', ip: ip('n4'), rack: 'leaf2', ready: false }));
  r.put(node({ name: 'n6', ip: ip('n6'), rack: 'leaf3', unschedulable: true }));
  r.put(node({ name: 'n4', ip: ip('n4'), rack: 'leaf2', ready: true }));
  // A Service whose IP arrives before its pool.
  r.put(service({ name: 'late', requestedIp: '203.0.113.5' }));
  r.put(eip({ name: 'pool-b', address: '203.0.113.0/29' }));
  r.put(endpointSlice({ service: 'late', endpoints: [{ nodeName: 'n6' }] }));
  // api goes from Local to Cluster; web is deleted and created again under a new uid and IP.
  r.put(service({ name: 'api', requestedIp: '198.51.100.2', externalTrafficPolicy: 'Cluster' }));
  r.remove(service({ name: 'web' }));
  r.remove(endpointSlice({ service: 'web' }));
  r.put(service({ name: 'web', requestedIp: '198.51.100.4' }));
  r.put(endpointSlice({ service: 'web', name: 'web-fghij', endpoints: [{ nodeName: 'n4' }] }));
  // A node relabelled into another rack, one deleted, a peer changed and one deleted.
  r.put(node({ name: 'n2', ip: ip('n2'), rack: 'leaf2' }));
  r.remove(node({ name: 'n6' }));
  r.put(bgpPeer({ name: 'peer-leaf2', peerAs: 65002, neighborAddress: '192.0.2.65', rack: 'leaf2', spec: { timers: { config: { holdTime: 9, keepaliveInterval: 3 } } } }));
  r.remove(bgpPeer({ name: 'peer-leaf3', neighborAddress: '192.0.2.129' }));
  // A slice that lives briefly: its add and delete may arrive in either order.
  r.put(endpointSlice({ service: 'late', name: 'late-extra', endpoints: [{ nodeName: 'n5' }] }));
  r.remove(endpointSlice({ service: 'late', name: 'late-extra' }));
  // A pool created and deleted, and a Service that never got an IP from it.
  r.put(eip({ name: 'pool-c', address: '2001:db8::/120' }));
  r.put(service({ name: 'v6', pool: 'pool-c', ipFamilies: ['IPv6'] }));
  r.remove(eip({ name: 'pool-c', address: '2001:db8::/120' }));
  r.put(node({ name: 'n5', ip: ip('n5'), rack: 'leaf3', speaker: false }));
  return r.events;
}

async function deliver(events: Recorded[], concurrency = 1): Promise<void> {
  const queue = [...events];
  const worker = async (): Promise<void> => {
    for (let e = queue.shift(); e !== undefined; e = queue.shift()) {
      const a = await send(fns, e.action, e.object);
      // Every event is valid: applied or stale, never rejected, never "retry".
      expect(a.status, `${e.action} ${String(e.object.kind)} ${JSON.stringify(e.object.metadata)}: ${a.body}`).toBe(200);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe('out-of-order and duplicated delivery', () => {
  const events = recordSequence();
  let reference: Record<string, unknown>;

  it('in order: the reference state', async () => {
    await flushStore(fns.store);
    await deliver(events);
    reference = await canonicalState(fns.store);
    // The reference is not trivially empty: the sequence built racks, peers and routes.
    const keys = Object.keys(reference);
    expect(keys.some((key) => key.endsWith(':intents'))).toBe(true);
    expect(reference[`{racklb}:svcip`]).toEqual({ 'default/api': '198.51.100.2', 'default/late': '203.0.113.5', 'default/web': '198.51.100.4' });
    expect(Object.keys(reference[`{racklb}:intents`] as object).sort()).toEqual(['198.51.100.2', '198.51.100.4', '203.0.113.5']);
    expect((reference['{racklb}:obj:EndpointSlice:default/late-extra'] as { deleted: boolean }).deleted).toBe(true);
    expect(reference['{racklb}:pending']).toEqual({ 'default/v6': expect.any(String) });
  });

  it('reversed: the same state', async () => {
    await flushStore(fns.store);
    await deliver([...events].reverse());
    expect(await canonicalState(fns.store)).toEqual(reference);
  });

  it('every event twice, the second copy late: the same state', async () => {
    await flushStore(fns.store);
    await deliver([...events, ...events]);
    expect(await canonicalState(fns.store)).toEqual(reference);
  });

  it('shuffled with duplicates (seeded): the same state', async () => {
    const n = events.length;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat({ max: n - 1 }), { maxLength: n }), fc.array(fc.double({ noNaN: true }), { minLength: 2 * n, maxLength: 2 * n }), async (dups, keys) => {
        const list = [...events, ...dups.map((i) => events[i]!)];
        const order = list.map((e, i) => ({ e, key: keys[i] ?? 0 })).sort((a, b) => a.key - b.key).map((x) => x.e);
        await flushStore(fns.store);
        await deliver(order);
        expect(await canonicalState(fns.store)).toEqual(reference);
      }),
      { numRuns: 40, seed: 8101 },
    );
  }, 120_000);

  it('shuffled, eight deliveries in flight at once: the same state', async () => {
    const rnd = fc.sample(fc.array(fc.double({ noNaN: true }), { minLength: events.length * 2, maxLength: events.length * 2 }), { numRuns: 5, seed: 8102 });
    for (const keys of rnd) {
      const order = [...events, ...events].map((e, i) => ({ e, key: keys[i] ?? 0 })).sort((a, b) => a.key - b.key).map((x) => x.e);
      await flushStore(fns.store);
      await deliver(order, 8);
      expect(await canonicalState(fns.store)).toEqual(reference);
    }
  }, 120_000);
});
