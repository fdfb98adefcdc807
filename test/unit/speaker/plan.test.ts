import { describe, expect, it } from 'vitest';
import { parseBgpPeer } from '../../../src/core/objects.js';
import type { GobgpPath, GobgpPeerConfig, GobgpPeerStatus } from '../../../src/gobgp/client.js';
import type { ServiceIpIntent } from '../../../src/core/types.js';
import { addPathSendMax, nextHopFilter, pathIdentifier, pathKey, pathsForIntent, peerConfig, planPaths, planPeers, type LocalAddress } from '../../../speaker/plan.js';
import { bgpPeer } from '../../helpers/fixtures.js';

const locals: LocalAddress[] = [{ address: '192.0.2.3', prefixLength: 26, family: 'ipv4' }];
const candidates = [
  { node: 'master1', addresses: { ipv4: '192.0.2.3' } },
  { node: 'worker-p001', addresses: { ipv4: '192.0.2.4' } },
  { node: 'elsewhere', addresses: { ipv4: '192.0.2.66' } },
];
const intent: ServiceIpIntent = { ip: '198.51.100.10', family: 'ipv4', services: ['default/web'], policy: 'Cluster', nodes: [] };

function path(nextHop: string, prefix = '198.51.100.10/32'): GobgpPath {
  return { prefix, family: 'ipv4', nextHop, identifier: pathIdentifier(nextHop) };
}

describe('pathIdentifier', () => {
  it('is the IPv4 address as an integer, stable and distinct per next hop', () => {
    expect(pathIdentifier('192.0.2.3')).toBe((192 << 24 >>> 0) + (0 << 16) + (2 << 8) + 3);
    expect(pathIdentifier('192.0.2.3')).not.toBe(pathIdentifier('192.0.2.4'));
  });
  it('hashes IPv6 next hops to a non-zero 32-bit id', () => {
    const id = pathIdentifier('2001:db8::1');
    expect(id).toBeGreaterThan(0);
    expect(id).toBeLessThan(2 ** 32);
    expect(pathIdentifier('2001:db8::1')).toBe(id);
    expect(pathIdentifier('2001:db8::2')).not.toBe(id);
  });
  it('keeps the identifiers racklb has always derived (a change would re-announce every IPv6 path)', () => {
    // Values of the first implementation (ipaddr.js bytes): speakers of two versions side by side agree.
    expect(pathIdentifier('2001:db8::1')).toBe(1851458804);
    expect(pathIdentifier('2001:db8:0:1::a')).toBe(1209154594);
    expect(pathIdentifier('::')).toBe(1768495365);
    expect(pathIdentifier('0.0.0.0')).toBe(1);
  });
  it('refuses what is not an address, naming the field', () => {
    expect(() => pathIdentifier('192.0.2')).toThrow(/nextHop/);
  });
});

describe('addPathSendMax', () => {
  const cases = [
    { name: 'small racks get 64', largest: 3, want: 64 },
    { name: 'exactly 64', largest: 64, want: 64 },
    { name: 'never capped: 300 next hops', largest: 300, want: 512 },
  ];
  for (const c of cases) it(c.name, () => expect(addPathSendMax(c.largest)).toBe(c.want));
});

describe('third-party next hops', () => {
  const direct = parseBgpPeer(bgpPeer({ name: 'leaf1', neighborAddress: '192.0.2.1', peerAs: 65001 }));
  const multihop = parseBgpPeer(bgpPeer({ name: 'far', neighborAddress: '203.0.113.9', peerAs: 65009, spec: { ebgpMultihop: { enabled: true, multihopTtl: 3 } } }));

  it('keeps only next hops on the speaker\'s subnet toward a directly connected peer', () => {
    const skipped: string[] = [];
    const filter = nextHopFilter([direct], locals);
    const paths = pathsForIntent(intent, candidates, (h) => filter.accepts(h), (h) => skipped.push(h));
    expect(paths.map((p) => p.nextHop)).toEqual(['192.0.2.3', '192.0.2.4']);
    expect(skipped).toEqual(['192.0.2.66']);
    expect(filter.explain('192.0.2.66')).toContain('192.0.2.0/26');
  });

  it('announces every next hop to a multihop peer', () => {
    const filter = nextHopFilter([multihop], locals);
    expect(pathsForIntent(intent, candidates, (h) => filter.accepts(h)).length).toBe(3);
  });

  it('announces nothing when no peer is reachable on a subnet of the speaker', () => {
    const filter = nextHopFilter([parseBgpPeer(bgpPeer({ name: 'x', neighborAddress: '198.51.100.1' }))], locals);
    expect(pathsForIntent(intent, candidates, (h) => filter.accepts(h))).toEqual([]);
  });
});

describe('planPaths', () => {
  const toMap = (ps: GobgpPath[]): Map<string, GobgpPath> => new Map(ps.map((p) => [pathKey(p), p]));
  const cases = [
    { name: 'nothing to do when equal', desired: [path('192.0.2.3')], advertised: [path('192.0.2.3')], add: [], withdraw: [] },
    { name: 'adds a new next hop', desired: [path('192.0.2.3'), path('192.0.2.4')], advertised: [path('192.0.2.3')], add: ['192.0.2.4'], withdraw: [] },
    { name: 'withdraws a vanished next hop only', desired: [path('192.0.2.3')], advertised: [path('192.0.2.3'), path('192.0.2.4')], add: [], withdraw: ['192.0.2.4'] },
    { name: 'withdraws a whole prefix', desired: [], advertised: [path('192.0.2.3', '198.51.100.11/32')], add: [], withdraw: ['192.0.2.3'] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const plan = planPaths(toMap(c.desired), toMap(c.advertised));
      expect(plan.add.map((p) => p.nextHop)).toEqual(c.add);
      expect(plan.withdraw.map((p) => p.nextHop)).toEqual(c.withdraw);
    });
  }
});

describe('planPeers', () => {
  const peer = parseBgpPeer(bgpPeer({ name: 'leaf1', neighborAddress: '192.0.2.1', peerAs: 65001 }));
  const want = peerConfig(peer, 64);
  // gobgpd reads a peer back with its defaults filled in.
  const readBack: GobgpPeerConfig = { ...want, localAs: 65100, timers: { connectRetry: 120, holdTime: 90, keepaliveInterval: 30 }, transport: { ...want.transport, localAddress: '192.0.2.3' } };
  const status = (config: GobgpPeerConfig): GobgpPeerStatus => ({
    neighborAddress: config.neighborAddress,
    sessionState: 'established',
    adminState: 'up',
    uptimeSeconds: 10,
    prefixesSent: 1,
    prefixesReceived: 0,
    prefixesAccepted: 0,
    localAddress: '192.0.2.3',
    lastError: undefined,
    config,
  });

  it('adopts a peer it did not configure itself without resetting it', () => {
    expect(planPeers([want], [status(readBack)], new Map())).toEqual({ add: [], update: [], remove: [] });
  });
  it('updates an adopted peer when the BgpPeer asks for graceful restart it lacks', () => {
    const gr = { ...want, gracefulRestart: { enabled: true, restartTime: 60, helperOnly: false, deferralTime: 0, notificationEnabled: false, longlivedEnabled: false, staleRoutesTime: 0 } };
    expect(planPeers([gr], [status(readBack)], new Map()).update).toEqual([gr]);
  });
  it('updates an adopted peer whose hold time the BgpPeer sets differently', () => {
    const timers = { ...want, timers: { holdTime: 9 } };
    expect(planPeers([timers], [status(readBack)], new Map()).update).toEqual([timers]);
  });
  it('updates a peer whose applied config changed (a new password)', () => {
    const changed = { ...want, authPassword: 'n3w' };
    expect(planPeers([changed], [status(readBack)], new Map([[want.neighborAddress, want]])).update).toEqual([changed]);
  });
  it('does not update a peer whose applied config is unchanged', () => {
    expect(planPeers([want], [status(readBack)], new Map([[want.neighborAddress, want]])).update).toEqual([]);
  });
  it('adds missing peers and removes unassigned ones', () => {
    const other = { ...want, neighborAddress: '192.0.2.2' };
    const plan = planPeers([other], [status(readBack)], new Map());
    expect(plan.add).toEqual([other]);
    expect(plan.remove).toEqual(['192.0.2.1']);
  });
});
