/**
 * The three functions served over HTTP against a real redis-server: PorterLB's multi-router
 * example in, `racklb state --json` out.
 */
import { Cluster, type Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { asOpenElb, bgpPeer, eip, endpointSlice, node, porterLbExample, service, type Json } from '../helpers/fixtures.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';
import { flushStore, postTo, send, serveAll, snapshot, stateJson, withVersion, type ServedFunctions } from '../helpers/functions.js';
import { apiServerEvent, toHttpMessage, toStructuredJson } from '../../src/events/codec.js';
import { parseService } from '../../src/core/objects.js';
import { waitFor } from '../../src/lab/process.js';

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

beforeEach(async () => {
  await flushStore(fns.store);
});

async function applyExample(as: (o: Json) => Json = (o) => o): Promise<ReturnType<typeof porterLbExample>> {
  const ex = porterLbExample();
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice].map(as)) {
    const a = await send(fns, 'add', o);
    expect(a.status, `${String(o.kind)}: ${a.body}`).toBe(200);
    expect(a.outcome).toBe('applied');
    expect(a.body).toBe('');
  }
  return ex;
}

describe('PorterLB multi-router example', () => {
  it('gives each rack its own next hops and each speaker its own leaf', async () => {
    await applyExample();
    const state = await stateJson(redis.url);
    expect(state.services['default/porter-bgp-svc']?.ip).toBe('172.22.0.2');
    const leaf1 = state.racks.leaf1?.routes['172.22.0.2/32'];
    const leaf2 = state.racks.leaf2?.routes['172.22.0.2/32'];
    expect(leaf1).toEqual(['192.168.0.3', '192.168.0.4']);
    expect(leaf1).not.toContain('192.168.1.2');
    expect(leaf2).toContain('192.168.1.2');
    expect(leaf2).not.toContain('192.168.0.3');
    expect(state.peers.master1).toEqual([{ name: 'bgppeer-leaf1', address: '192.168.0.2', asn: 50001 }]);
    expect(state.peers['worker-p002']).toEqual([{ name: 'bgppeer-leaf2', address: '192.168.1.1', asn: 50001 }]);
    expect(state.peers['worker-p001']).toBeUndefined();
  });

  it('moves a next hop when its node is relabelled from leaf2 to leaf1', async () => {
    await applyExample();
    const moved = node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true, resourceVersion: '2' });
    expect((await send(fns, 'update', moved)).outcome).toBe('applied');
    const state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4', '192.168.1.2']);
    expect(state.racks.leaf2).toBeUndefined();
    // Its speaker now matches leaf1's BgpPeer.
    expect(state.peers['worker-p002']).toEqual([{ name: 'bgppeer-leaf1', address: '192.168.0.2', asn: 50001 }]);
  });

  it('announces an externalTrafficPolicy Local Service only from nodes with ready endpoints', async () => {
    await applyExample();
    await send(fns, 'add', eip({ name: 'pool-b', address: '198.51.100.0/28' }));
    const svc = service({ name: 'local-web', pool: 'pool-b', externalTrafficPolicy: 'Local' });
    expect((await send(fns, 'add', svc)).outcome).toBe('applied');
    await send(fns, 'add', endpointSlice({ service: 'local-web', endpoints: [{ nodeName: 'worker-p001' }, { nodeName: 'master1', ready: false }] }));
    let state = await stateJson(redis.url);
    const ip = state.services['default/local-web']?.ip;
    expect(ip).toBe('198.51.100.0');
    expect(state.racks.leaf1?.routes[`${ip}/32`]).toEqual(['192.168.0.4']);
    expect(state.racks.leaf2?.routes[`${ip}/32`]).toEqual(['192.168.0.4']);
    await send(fns, 'update', endpointSlice({ service: 'local-web', resourceVersion: '2', endpoints: [{ nodeName: 'worker-p002' }] }));
    state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes[`${ip}/32`]).toBeUndefined();
    expect(state.racks.leaf2?.routes[`${ip}/32`]).toEqual(['192.168.1.2']);
    // A Service event computes the route from the endpoints stored before it, whatever it changes.
    const cluster = service({ name: 'local-web', pool: 'pool-b', externalTrafficPolicy: 'Cluster', resourceVersion: '2' });
    expect((await send(fns, 'update', cluster)).outcome).toBe('applied');
    state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes[`${ip}/32`]).toEqual(['192.168.0.3', '192.168.0.4']);
    const localAgain = service({ name: 'local-web', pool: 'pool-b', externalTrafficPolicy: 'Local', resourceVersion: '3', labels: { tier: 'web' } });
    expect((await send(fns, 'update', localAgain)).outcome).toBe('applied');
    state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes[`${ip}/32`]).toBeUndefined();
    expect(state.racks.leaf2?.routes[`${ip}/32`]).toEqual(['192.168.1.2']);
  });

  it('takes a NotReady node out of its rack and withdraws a deleted Service', async () => {
    const ex = await applyExample();
    await send(fns, 'update', node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '2' }));
    let state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3']);
    expect((await send(fns, 'delete', withVersion(ex.service, '2'))).outcome).toBe('applied');
    state = await stateJson(redis.url);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toBeUndefined();
    expect(state.services['default/porter-bgp-svc']).toBeUndefined();
    expect(state.intents['172.22.0.2']).toBeUndefined();
  });
});

describe('the same example with OpenELB\'s labels and annotations', () => {
  it('gives the same state as with PorterLB\'s', async () => {
    await applyExample();
    const { generation: _g, revision: _r, ...porter } = await stateJson(redis.url);
    await flushStore(fns.store);
    const ex = await applyExample(asOpenElb);
    // Every key renamed, none left under PorterLB's name: the test would prove nothing otherwise.
    expect(JSON.stringify([...ex.nodes, ...ex.peers, ex.eip, ex.service].map(asOpenElb))).not.toMatch(/porter\.kubesphere\.io|"porter"/);
    const { generation: _g2, revision: _r2, ...openElb } = await stateJson(redis.url);
    expect(openElb).toEqual(porter);
    expect(openElb.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4']);
    expect(openElb.peers['worker-p002']).toEqual([{ name: 'bgppeer-leaf2', address: '192.168.1.1', asn: 50001 }]);
  });

  it('reads a Service stored by a racklb that knew only PorterLB\'s keys again when its event comes back at the same version', async () => {
    await applyExample();
    expect((await send(fns, 'add', eip({ name: 'pool-b', address: '198.51.100.0/28' }))).outcome).toBe('applied');
    // As a racklb before OpenELB's keys stored it: the opt-in value openelb meant nothing then.
    const svc = asOpenElb(service({ name: 'migrated', requestedIp: '198.51.100.9', resourceVersion: '7' }));
    const asReadBefore = parseService({ ...svc, metadata: { ...(svc.metadata as Json), annotations: {} } });
    expect(asReadBefore.managed).toBe(false);
    await fns.store.redis.set(fns.store.keys.object('Service', 'default/migrated'), JSON.stringify({ deleted: false, record: asReadBefore }));
    await fns.store.redis.sadd(fns.store.keys.index('Service'), 'default/migrated');
    // The bridge's relist after the upgrade sends it again, at the version stored.
    const again = await send(fns, 'add', svc);
    expect(again.outcome).toBe('applied');
    const state = await stateJson(redis.url);
    expect(state.services['default/migrated']?.ip).toBe('198.51.100.9');
    // Read the same way now: a repeat is stale.
    expect((await send(fns, 'add', svc)).outcome).toBe('stale');
  });

  it('refuses a node whose PorterLB and OpenELB rack labels disagree, naming the label, and keeps what was stored', async () => {
    await applyExample(asOpenElb);
    const before = await snapshot(fns.store);
    const torn = node({ name: 'worker-p002', ip: '192.168.1.2', speaker: true, resourceVersion: '2', labels: { 'porter.kubesphere.io/rack': 'leaf1', 'openelb.kubesphere.io/rack': 'leaf2' } });
    const r = await send(fns, 'update', torn);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({
      field: 'metadata.labels["openelb.kubesphere.io/rack"]',
      rule: 'must equal metadata.labels["porter.kubesphere.io/rack"] ("leaf1") or be left out: PorterLB\'s and OpenELB\'s key for one setting',
    });
    expect(await snapshot(fns.store)).toBe(before);
  });
});

describe('ordering and duplicates', () => {
  it('reports an older or repeated resourceVersion as stale and changes nothing', async () => {
    await applyExample();
    await send(fns, 'update', node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '5' }));
    const before = await snapshot(fns.store);
    const old = await send(fns, 'update', node({ name: 'worker-p001', ip: '192.168.0.4', ready: true, resourceVersion: '3' }));
    expect(old.status).toBe(200);
    expect(old.outcome).toBe('stale');
    const dup = await send(fns, 'update', node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '5' }));
    expect(dup.outcome).toBe('stale');
    expect(await snapshot(fns.store)).toBe(before);
  });

  it('keeps a deleted object deleted when a late add arrives', async () => {
    const ex = await applyExample();
    await send(fns, 'delete', withVersion(ex.service, '7'));
    const late = await send(fns, 'add', withVersion(ex.service, '6'));
    expect(late.outcome).toBe('stale');
    expect((await stateJson(redis.url)).services['default/porter-bgp-svc']).toBeUndefined();
  });

  it('accepts structured mode and journals every outcome', async () => {
    const ev = apiServerEvent('add', eip({ name: 'structured', address: '203.0.113.0/29' }) as Record<string, unknown>, 'test');
    const a = await postTo(fns.urls['on-service'], { 'content-type': 'application/cloudevents+json' }, toStructuredJson(ev));
    expect(a.status).toBe(200);
    expect(a.outcome).toBe('applied');
    const journal = await fns.store.redis.xrange(fns.store.keys.journal(), '-', '+');
    expect(journal.length).toBe(1);
    expect(journal[0]?.[1]).toContain('applied');
  });
});

describe('rejections', () => {
  const cases: { name: string; object: () => Record<string, unknown>; field: string }[] = [
    { name: 'peerAs 0', object: () => bgpPeer({ name: 'bad', peerAs: 0, neighborAddress: '192.168.0.2' }), field: 'spec.conf.peerAs' },
    { name: 'peerAs 2^32', object: () => bgpPeer({ name: 'bad', peerAs: 2 ** 32, neighborAddress: '192.168.0.2' }), field: 'spec.conf.peerAs' },
    { name: 'neighborAddress not an IP', object: () => bgpPeer({ name: 'bad', neighborAddress: 'leaf1.example' }), field: 'spec.conf.neighborAddress' },
    { name: 'Eip overlapping another', object: () => eip({ name: 'overlap', address: '172.22.0.0/24' }), field: 'spec.address' },
    { name: 'Eip address malformed', object: () => eip({ name: 'garbage', address: '172.22.0.300' }), field: 'spec.address' },
    { name: 'Node with a bad InternalIP', object: () => node({ name: 'n1', ip: '10.0.0.999' }), field: 'status.addresses[0].address' },
  ];
  for (const c of cases) {
    it(`rejects ${c.name} with 400 naming ${c.field}, leaving the state byte-for-byte unchanged`, async () => {
      await applyExample();
      const before = await snapshot(fns.store);
      const a = await send(fns, 'add', c.object());
      expect(a.status).toBe(400);
      const body = JSON.parse(a.body) as { error: string; field?: string };
      expect(body.field).toBe(c.field);
      expect(body.error).toContain(c.field);
      expect(await snapshot(fns.store)).toBe(before);
      const last = await fns.store.redis.xrevrange(fns.store.keys.journal(), '+', '-', 'COUNT', 1);
      expect(last[0]?.[1]).toContain('rejected');
    });
  }

  it('rejects malformed envelopes with 400 and writes nothing', async () => {
    await applyExample();
    const before = await snapshot(fns.store);
    const url = fns.urls['on-node-label'];
    const good = toHttpMessage(apiServerEvent('add', node({ name: 'x', ip: '192.168.0.9' }) as Record<string, unknown>, 'test'));
    const attempts: { headers: Record<string, string>; body: string; says: string }[] = [
      { headers: { 'content-type': 'application/json' }, body: '{}', says: 'not a CloudEvent' },
      { headers: { ...good.headers, 'ce-type': 'com.example.other' }, body: good.body, says: 'event type' },
      { headers: { ...good.headers, 'ce-type': 'dev.knative.apiserver.ref.add' }, body: good.body, says: 'Resource mode' },
      { headers: good.headers, body: 'not json', says: 'data' },
      { headers: { 'content-type': 'application/cloudevents+json' }, body: '[1,2]', says: 'JSON object' },
      { headers: good.headers, body: JSON.stringify(service({ name: 'svc' })), says: 'kind' },
    ];
    for (const a of attempts) {
      const res = await postTo(url, a.headers, a.body);
      expect(res.status, a.says).toBe(400);
      expect(res.body).toContain(a.says);
    }
    expect(await snapshot(fns.store)).toBe(before);
  });

  it('answers 503 while Redis is unreachable, so the sender retries, and applies the retry', async () => {
    await applyExample();
    const notReady = node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '9' });
    await redis.stop();
    try {
      const down = await send(fns, 'update', notReady);
      expect(down.status).toBe(503);
      expect(JSON.parse(down.body).code).toBe('RACKLB_STORE_UNAVAILABLE');
    } finally {
      // Without persistence the data is gone: the objects are sent again below, as a relist would.
      await redis.start();
    }
    await waitFor('the functions to reconnect', async () => (await fns.store.redis.ping().catch(() => '')) === 'PONG', 10_000, 50);
    await applyExample();
    const retry = await send(fns, 'update', notReady);
    expect(retry.status).toBe(200);
    expect((await stateJson(redis.url)).racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3']);
  });

  it('answers 503 while Redis is full (maxmemory, noeviction), writes nothing, and applies the retry', async () => {
    await applyExample();
    const before = await snapshot(fns.store);
    const notReady = node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '9' });
    // Every master: on a Redis Cluster (cluster.test.ts runs this suite too) CONFIG goes to one node.
    const client = fns.store.redis as Redis | Cluster;
    const servers = client instanceof Cluster ? client.nodes('master') : [client];
    const setAll = async (name: string, value: string): Promise<void> => {
      for (const s of servers) await s.config('SET', name, value);
    };
    await setAll('maxmemory-policy', 'noeviction');
    await setAll('maxmemory', '1');
    try {
      const full = await send(fns, 'update', notReady);
      expect(full.status).toBe(503);
      expect(JSON.parse(full.body).code).toBe('RACKLB_STORE_UNAVAILABLE');
      expect(full.body).toContain('maxmemory');
    } finally {
      await setAll('maxmemory', '0');
    }
    expect(await snapshot(fns.store)).toBe(before);
    const retry = await send(fns, 'update', notReady);
    expect(retry.status).toBe(200);
    expect((await stateJson(redis.url)).racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3']);
  });

  it('refuses a body over the size limit with 413', async () => {
    const huge = node({ name: 'big', ip: '192.168.0.9', labels: { big: 'x' } });
    (huge.metadata as Record<string, unknown>).annotations = { blob: 'y'.repeat(2 * 1024 * 1024) };
    const res = await send(fns, 'add', huge);
    expect(res.status).toBe(413);
  });
});

describe('BgpPeers', () => {
  it('keeps every speaker list whole under concurrent updates of the peers it holds, and rewrites only the lists a peer selects', async () => {
    const speakers = [
      node({ name: 's1', ip: '192.0.2.11', rack: 'leaf1', speaker: true }),
      node({ name: 's2', ip: '192.0.2.12', rack: 'leaf1', speaker: true }),
      node({ name: 's3', ip: '192.0.2.75', rack: 'leaf2', speaker: true }),
    ];
    for (const n of speakers) expect((await send(fns, 'add', n)).outcome).toBe('applied');
    const peer = (i: number, asn: number, rv: number, rack = 'leaf1'): Record<string, unknown> =>
      bgpPeer({ name: `p${i}`, peerAs: asn, neighborAddress: `192.0.2.${1 + i}`, rack, resourceVersion: String(rv) });
    let rv = 100;
    for (let i = 0; i < 8; i++) expect((await send(fns, 'add', peer(i, 65000 + i, rv++))).outcome).toBe('applied');
    // Eight updates in flight at once, five times over: each one rewrites s1's and s2's lists, so
    // each must see the others' latest versions or one would be lost.
    for (let round = 1; round <= 5; round++) {
      const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => send(fns, 'update', peer(i, 65000 + 100 * round + i, rv + i))));
      rv += 8;
      for (const a of answers) expect(a.outcome, a.body).toBe('applied');
    }
    const want = Array.from({ length: 8 }, (_, i) => ({ name: `p${i}`, address: `192.0.2.${1 + i}`, asn: 65500 + i }));
    let state = await stateJson(redis.url);
    expect(state.peers.s1).toEqual(want);
    expect(state.peers.s2).toEqual(want);
    expect(state.peers.s3).toEqual([]);

    // A peer moved to the other rack leaves the lists of the first and joins the list of the second.
    const moved = await send(fns, 'update', peer(3, 65503, rv++, 'leaf2'));
    expect(moved.detail).toBe('BgpPeer p3 (192.0.2.4 AS 65503) applies to speaker node(s) s3');
    state = await stateJson(redis.url);
    expect(state.peers.s1).toEqual(want.filter((p) => p.name !== 'p3'));
    expect(state.peers.s3).toEqual([{ name: 'p3', address: '192.0.2.4', asn: 65503 }]);
  });
});
