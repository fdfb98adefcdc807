/**
 * `racklb state <view>` and `racklb explain` against a real redis-server filled by the real
 * functions. Speakers are not run here (the lab test runs them): their reports (heartbeat with
 * addresses, sessions) are written in the format speaker/speaker.ts writes, as documented in
 * docs/state.md. Each reason `explain` can give has a case.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explainNode, explainService, type HopExplanation, type ServiceExplanation } from '../../src/explain/explain.js';
import { formatServiceExplanation } from '../../src/explain/format.js';
import { readSnapshot } from '../../src/state/snapshot.js';
import { viewRows } from '../../src/state/views.js';
import type { Store } from '../../src/store/store.js';
import { bgpConf, bgpPeer, eip, endpointSlice, node, service } from '../helpers/fixtures.js';
import { send, serveAll, type ServedFunctions } from '../helpers/functions.js';
import { cli } from '../helpers/cli.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let fns: ServedFunctions;

/** What a speaker writes every few seconds (speaker/speaker.ts reportStatus). */
async function reportAsSpeaker(store: Store, name: string, address: string, sessions: Record<string, { peer: string; state: string }>): Promise<void> {
  const k = store.keys;
  const now = new Date().toISOString();
  const fields = Object.entries(sessions).flatMap(([neighbor, s]) => [
    neighbor,
    JSON.stringify({ peer: s.peer, neighborAddress: neighbor, sessionState: s.state, adminState: 'up', uptimeSeconds: s.state === 'established' ? 42 : 0, prefixesSent: 3, prefixesReceived: 0, lastError: s.state === 'established' ? null : 'connection refused', updatedAt: now }),
  ]);
  const multi = store.redis.multi().del(k.sessions(name));
  if (fields.length) multi.hset(k.sessions(name), ...fields);
  multi.hset(k.speakerStatus(name), 'lastSeen', now, 'gobgpd', 'connected', 'paths', '3', 'holding', '0', 'rev', '1', 'addresses', JSON.stringify([{ address, prefixLength: 24, family: 'ipv4' }]));
  await multi.exec();
}

const L = { leaf1: '192.168.0.2', leaf2: '192.168.1.1' };

beforeAll(async () => {
  redis = await startRedis();
  fns = await serveAll(redis.url);
  const objects = [
    node({ name: 'master1', ip: '192.168.0.3', rack: 'leaf1', speaker: true }),
    node({ name: 'worker-p001', ip: '192.168.0.4' }),
    node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf2', speaker: true }),
    node({ name: 'worker-p003', ip: '192.168.0.5', rack: 'leaf1', ready: false }),
    node({ name: 'worker-p004', ip: '192.168.2.2', rack: 'leaf3' }),
    node({ name: 'worker-p005', ip: '192.168.0.6', ipv6: '2001:db8::6', rack: 'leaf1' }),
    node({ name: 'worker-p006', ip: '192.168.0.7', rack: 'leaf1', unschedulable: true }),
    node({ name: 'worker-p007', ip: '192.168.4.2', rack: 'leaf4', speaker: true }),
    node({ name: 'worker-p008', ip: '192.168.5.2', rack: 'leaf5', speaker: true }),
    bgpConf({ as: 50000, asPerRack: { leaf2: 50002 } }),
    bgpPeer({ name: 'bgppeer-leaf1', peerAs: 50001, neighborAddress: L.leaf1, rack: 'leaf1' }),
    bgpPeer({ name: 'bgppeer-leaf2', peerAs: 50001, neighborAddress: L.leaf2, rack: 'leaf2' }),
    eip({ name: 'porter-bgp-eip', address: '172.22.0.2', isDefault: true }),
    eip({ name: 'pool-b', address: '198.51.100.0/28' }),
    eip({ name: 'pool-v6', address: '2001:db8:1::/120' }),
    eip({ name: 'pool-team', address: '203.0.113.0/29', namespaces: ['team'] }),
    service({ name: 'porter-bgp-svc', requestedIp: '172.22.0.2' }),
    service({ name: 'shared-svc', requestedIp: '172.22.0.2' }),
    service({ name: 'local-web', pool: 'pool-b', externalTrafficPolicy: 'Local' }),
    endpointSlice({ service: 'local-web', endpoints: [{ nodeName: 'worker-p001' }, { nodeName: 'master1', ready: false }] }),
    service({ name: 'v6-web', pool: 'pool-v6', ipFamilies: ['IPv6'] }),
    service({ name: 'api', namespace: 'team' }),
    // Came back to a store that had lost its allocation: keeps the address its status shows.
    service({ name: 'restored', namespace: 'team', ingress: ['203.0.113.5'] }),
    service({ name: 'waiting' }),
  ];
  for (const o of objects) {
    const a = await send(fns, 'add', o);
    expect(a.status, `${String(o.kind)}: ${a.body}`).toBe(200);
  }
  await reportAsSpeaker(fns.store, 'master1', '192.168.0.3', { [L.leaf1]: { peer: 'bgppeer-leaf1', state: 'established' } });
  await reportAsSpeaker(fns.store, 'worker-p002', '192.168.1.2', { [L.leaf2]: { peer: 'bgppeer-leaf2', state: 'active' } });
  await reportAsSpeaker(fns.store, 'worker-p007', '192.168.4.2', {});
  // worker-p008 runs no speaker: it never reports.
}, 60_000);

afterAll(async () => {
  await fns?.close();
  if (redis) await removeRedis(redis);
});

async function explain(key: string): Promise<ServiceExplanation> {
  return explainService(await readSnapshot(fns.store), key);
}

function hop(e: ServiceExplanation, rack: string, nodeName: string): HopExplanation {
  const h = e.racks.find((r) => r.rack === rack)?.nextHops.find((x) => x.node === nodeName);
  if (!h) throw new Error(`no next hop ${nodeName} in ${rack}: ${JSON.stringify(e.racks.map((r) => [r.rack, r.nextHops.map((x) => x.node)]))}`);
  return h;
}

describe('racklb explain service', () => {
  const cases: { name: string; service: string; rack: string; node: string; reason: string | null; says: string }[] = [
    { name: 'a Ready node under a speaker with an Established session', service: 'default/porter-bgp-svc', rack: 'leaf1', node: 'master1', reason: null, says: 'announced by master1 to bgppeer-leaf1 (192.168.0.2)' },
    { name: 'a node without a rack label, on the speaker\'s subnet', service: 'default/porter-bgp-svc', rack: 'leaf1', node: 'worker-p001', reason: null, says: 'announced by master1' },
    { name: 'a node that is not Ready', service: 'default/porter-bgp-svc', rack: 'leaf1', node: 'worker-p003', reason: 'nodeNotReady', says: 'not Ready' },
    { name: 'a cordoned node', service: 'default/porter-bgp-svc', rack: 'leaf1', node: 'worker-p006', reason: 'nodeUnschedulable', says: 'cordoned' },
    { name: 'a node without a ready endpoint under Local', service: 'default/local-web', rack: 'leaf1', node: 'master1', reason: 'noEndpointOnNode', says: 'no ready endpoint' },
    { name: 'a node with an endpoint under Local', service: 'default/local-web', rack: 'leaf1', node: 'worker-p001', reason: null, says: 'announced' },
    { name: 'a rack without a speaker', service: 'default/porter-bgp-svc', rack: 'leaf3', node: 'worker-p004', reason: 'noSpeakerInRack', says: 'no speaker node serves this rack' },
    { name: 'a speaker whose session is not Established', service: 'default/porter-bgp-svc', rack: 'leaf2', node: 'worker-p002', reason: 'sessionDown', says: 'session to bgppeer-leaf2 (192.168.1.1) is active, last error connection refused' },
    { name: 'a next hop off the speaker\'s subnet toward its peer', service: 'default/porter-bgp-svc', rack: 'leaf2', node: 'worker-p001', reason: 'offPeerSubnet', says: "not in 192.168.1.0/24, the speaker's subnet toward peer bgppeer-leaf2" },
    { name: 'a node without an address of the IP\'s family', service: 'default/v6-web', rack: 'leaf1', node: 'master1', reason: 'noAddressOfFamily', says: "no InternalIP of the Service IP's family" },
    { name: 'an IPv6 next hop toward an IPv4-only peering', service: 'default/v6-web', rack: 'leaf1', node: 'worker-p005', reason: 'offPeerSubnet', says: '2001:db8::6 is a third-party next hop' },
    { name: 'a speaker no BgpPeer selects', service: 'default/porter-bgp-svc', rack: 'leaf4', node: 'worker-p007', reason: 'noPeer', says: "no BgpPeer's nodeSelector matches" },
    { name: 'a speaker that never reported', service: 'default/porter-bgp-svc', rack: 'leaf5', node: 'worker-p008', reason: 'speakerNotSeen', says: 'never reported' },
  ];
  for (const c of cases) {
    it(`says ${c.reason ?? 'announced'} for ${c.name}`, async () => {
      const h = hop(await explain(c.service), c.rack, c.node);
      expect(h.reason).toBe(c.reason);
      expect(h.announced).toBe(c.reason === null);
      expect(h.detail).toContain(c.says);
    });
  }

  it('gives each rack the ECMP set its leaf receives, and follows a session coming up', async () => {
    let e = await explain('default/porter-bgp-svc');
    expect(Object.fromEntries(e.racks.map((r) => [r.rack, r.announced]))).toEqual({
      leaf1: ['192.168.0.3', '192.168.0.4', '192.168.0.6'],
      leaf2: [],
      leaf3: [],
      leaf4: [],
      leaf5: [],
    });
    await reportAsSpeaker(fns.store, 'worker-p002', '192.168.1.2', { [L.leaf2]: { peer: 'bgppeer-leaf2', state: 'established' } });
    e = await explain('default/porter-bgp-svc');
    expect(e.racks.find((r) => r.rack === 'leaf2')?.announced).toEqual(['192.168.1.2']);
    expect(e.racks.find((r) => r.rack === 'leaf2')?.speakers[0]).toMatchObject({ node: 'worker-p002', asn: 50002, problem: null });
    await reportAsSpeaker(fns.store, 'worker-p002', '192.168.1.2', { [L.leaf2]: { peer: 'bgppeer-leaf2', state: 'active' } });
  });

  it('says where the IP came from', async () => {
    const requested = await explain('default/porter-bgp-svc');
    expect(requested.origin).toEqual({ pool: 'porter-bgp-eip', poolAddress: '172.22.0.2', requested: true, by: 'poolOfRequestedIp', sharedWith: ['default/shared-svc'] });
    expect((await explain('default/local-web')).origin).toMatchObject({ pool: 'pool-b', requested: false, by: 'poolAnnotation', sharedWith: [] });
    expect((await explain('team/api')).origin).toMatchObject({ pool: 'pool-team', requested: false, by: 'namespacePool' });
    const restored = await explain('team/restored');
    expect(restored.ip).toBe('203.0.113.5');
    expect(restored.origin).toEqual({ pool: 'pool-team', poolAddress: '203.0.113.0/29', requested: false, by: 'keptFromStatus', sharedWith: [] });
    expect(formatServiceExplanation(restored)).toContain('IP 203.0.113.5: kept the address its status showed (the store had lost it');
    const waiting = await explain('default/waiting');
    expect(waiting.ip).toBeNull();
    expect(waiting.problems.join()).toContain('no IP yet: no free address in pool "porter-bgp-eip"');
    const missing = await explain('default/nope');
    expect(missing.found).toBe(false);
  });

  it('prints it rack by rack as text, and exits 1 for an unknown Service', async () => {
    const r = await cli(['explain', 'service', 'default/porter-bgp-svc', '--redis', redis.url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('IP 172.22.0.2: requested by the Service, from Eip porter-bgp-eip (172.22.0.2), the pool that holds the requested IP');
    expect(r.stdout).toContain('shared with default/shared-svc');
    expect(r.stdout).toContain('rack leaf1: 172.22.0.2/32 -> 192.168.0.3, 192.168.0.4, 192.168.0.6');
    expect(r.stdout).toMatch(/worker-p003\s+192\.168\.0\.5\s+NOT announced: nodeNotReady/);
    expect(r.stdout).toMatch(/rack leaf2: 172\.22\.0\.2\/32 not announced\n {2}speaker worker-p002 \(AS 50002\)\n {6}peer bgppeer-leaf2 192\.168\.1\.1 AS 50001: session active/);
    const bad = await cli(['explain', 'service', 'porter-bgp-svc', '--redis', redis.url]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('must be NAMESPACE/NAME');
  });
});

describe('racklb explain with PorterLB\'s default install (no rack labels, one speaker)', () => {
  it('groups the speakers without a rack label, which announce every node their subnet allows', async () => {
    const before = await serveAll(redis.url, 'before');
    try {
      for (const o of [
        node({ name: 'master1', ip: '192.168.0.3', speaker: true }),
        node({ name: 'worker-p001', ip: '192.168.0.4' }),
        node({ name: 'worker-p002', ip: '192.168.1.2' }),
        bgpConf({ as: 50000 }),
        bgpPeer({ name: 'bgppeer', peerAs: 50001, neighborAddress: L.leaf1 }),
        eip({ name: 'eip', address: '172.22.0.2', isDefault: true }),
        service({ name: 'svc' }),
      ]) {
        expect((await send(before, 'add', o)).status).toBe(200);
      }
      await reportAsSpeaker(before.store, 'master1', '192.168.0.3', { [L.leaf1]: { peer: 'bgppeer', state: 'established' } });
      const e = explainService(await readSnapshot(before.store), 'default/svc');
      expect(e.origin).toMatchObject({ by: 'defaultPool', requested: false });
      expect(e.racks.map((r) => [r.rack, r.announced])).toEqual([['-', ['192.168.0.3', '192.168.0.4']]]);
      expect(hop(e, '-', 'worker-p002')).toMatchObject({ reason: 'offPeerSubnet' });
    } finally {
      await before.close();
    }
  });
});

describe('racklb explain node', () => {
  it('says which rack, speakers and routes a node without a rack label takes part in', async () => {
    const e = explainNode(await readSnapshot(fns.store), 'worker-p001');
    expect(e.rack).toBeNull();
    expect(e.racks.map((r) => r.rack)).toEqual(['leaf1', 'leaf2', 'leaf3', 'leaf4', 'leaf5']);
    const route = (prefix: string, rack: string): (typeof e.routes)[number] | undefined => e.routes.find((r) => r.prefix === prefix && r.rack === rack);
    expect(route('172.22.0.2/32', 'leaf1')).toMatchObject({ announced: true });
    expect(route('172.22.0.2/32', 'leaf2')).toMatchObject({ announced: false, reason: 'offPeerSubnet' });
    expect(route('198.51.100.0/32', 'leaf1')).toMatchObject({ announced: true, policy: 'Local' });
  });

  it('shows a speaker node\'s peers and sessions', async () => {
    const r = await cli(['explain', 'node', 'worker-p002', '--redis', redis.url, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const e = JSON.parse(r.stdout) as ReturnType<typeof explainNode>;
    expect(e.rack).toBe('leaf2');
    expect(e.speaker).toMatchObject({ serves: ['leaf2'], asn: 50002, peers: [{ peer: 'bgppeer-leaf2', neighborAddress: L.leaf2, sessionState: 'active', up: false }] });
    expect(e.routes.find((x) => x.prefix === '172.22.0.2/32')).toMatchObject({ rack: 'leaf2', announced: false, reason: 'sessionDown' });
  });
});

describe('racklb state views', () => {
  it('lists racks, nodes, Services, peers and speakers', async () => {
    const s = await readSnapshot(fns.store);
    expect(viewRows('racks', s)).toContainEqual({ rack: 'leaf1', asn: 50000, nodes: ['master1', 'worker-p003', 'worker-p005', 'worker-p006'], nextHops: ['master1', 'worker-p005'], speakers: ['master1'], peers: ['bgppeer-leaf1 192.168.0.2'], routes: 5 });
    expect(viewRows('nodes', s)).toContainEqual({ node: 'worker-p006', rack: 'leaf1', ipv4: '192.168.0.7', ipv6: null, ready: true, schedulable: false, speaker: false, nextHop: 'nodeUnschedulable' });
    expect(viewRows('services', s)).toContainEqual({ service: 'default/shared-svc', ip: '172.22.0.2', pool: 'porter-bgp-eip', policy: 'Cluster', origin: 'requested, shared with default/porter-bgp-svc', announcedIn: ['leaf1'], pending: null });
    expect(viewRows('services', s)).toContainEqual(expect.objectContaining({ service: 'team/restored', ip: '203.0.113.5', origin: 'kept from its status' }));
    expect(viewRows('peers', s)).toContainEqual({ peer: 'bgppeer-leaf2', neighborAddress: L.leaf2, asn: 50001, multihop: false, nodeSelector: 'porter.kubesphere.io/rack=leaf2', speakers: { 'worker-p002': 'active' } });
    expect(viewRows('speakers', s)).toContainEqual(expect.objectContaining({ speaker: 'worker-p007', rack: 'leaf4', peer: null, sessionState: 'no peer' }));
  });

  it('prints a view as a table, options before or after its name', async () => {
    const r = await cli(['state', '--redis', redis.url, 'speakers']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^SPEAKER\s+RACK\s+AS\s+PEER\s+NEIGHBOR\s+PEER AS\s+SESSION\s+UPTIME\s+SENT\/RECV\s+LAST SEEN\s+HOLDING\s+LAST ERROR$/);
    expect(lines.find((l) => l.startsWith('master1'))).toMatch(/^master1\s+leaf1\s+50000\s+bgppeer-leaf1\s+192\.168\.0\.2\s+50001\s+established\s+42s\s+3\/0\s+\d+s ago\s+no\s+-$/);
    expect(lines.find((l) => l.startsWith('worker-p008'))).toMatch(/no peer .* never/);
    const json = await cli(['state', 'nodes', '--json', '--redis', redis.url]);
    expect((JSON.parse(json.stdout) as { node: string }[]).map((n) => n.node)).toContain('worker-p008');
  });
});
