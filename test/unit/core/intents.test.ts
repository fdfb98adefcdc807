import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { compareIps, hostPrefix, nextHopDecision, nextHopsFor, routesForRack, serviceIpIntent } from '../../../src/core/intents.js';
import { parseEndpointSlice, parseService } from '../../../src/core/objects.js';
import type { NextHopCandidate, ServiceIpIntent } from '../../../src/core/types.js';
import { expectInvalidField } from './assert.js';
import { endpointSlice, service } from '../../helpers/fixtures.js';

const svc = (name: string, policy: 'Cluster' | 'Local', namespace = 'default') =>
  parseService(service({ name, namespace, externalTrafficPolicy: policy }));
const slice = (name: string, svcName: string, nodes: string[], namespace = 'default') =>
  parseEndpointSlice(endpointSlice({ name, namespace, service: svcName, endpoints: nodes.map((n) => ({ nodeName: n })) }));

describe('serviceIpIntent', () => {
  const slices = [
    slice('a-1', 'a', ['n3', 'n1']),
    slice('a-2', 'a', ['n2']),
    slice('b-1', 'b', ['n4']),
    slice('c-1', 'c', ['n9']),
    slice('a-other-ns', 'a', ['n8'], 'other'),
  ];
  it.each([
    { name: 'one Cluster service', services: [svc('a', 'Cluster')], want: { policy: 'Cluster', nodes: [], services: ['default/a'] } },
    { name: 'one Local service: nodes of all its slices', services: [svc('a', 'Local')], want: { policy: 'Local', nodes: ['n1', 'n2', 'n3'] } },
    { name: 'two Local services share: union', services: [svc('b', 'Local'), svc('a', 'Local')], want: { policy: 'Local', nodes: ['n1', 'n2', 'n3', 'n4'], services: ['default/a', 'default/b'] } },
    { name: 'Local and Cluster share: Cluster wins', services: [svc('a', 'Local'), svc('b', 'Cluster')], want: { policy: 'Cluster', nodes: [] } },
    { name: 'Local without endpoints', services: [svc('d', 'Local')], want: { policy: 'Local', nodes: [] } },
    { name: 'slices of a same-named Service elsewhere are ignored', services: [svc('a', 'Local', 'other')], want: { nodes: ['n8'], services: ['other/a'] } },
    { name: 'no services', services: [], want: { policy: 'Cluster', nodes: [], services: [] } },
  ])('$name', ({ services, want }) => {
    expect(serviceIpIntent('172.22.0.2', services, slices)).toMatchObject({ ip: '172.22.0.2', family: 'ipv4', ...want });
  });

  it('normalises the IP and sets the family', () => {
    expect(serviceIpIntent('2001:DB8::10', [], [])).toMatchObject({ ip: '2001:db8::10', family: 'ipv6' });
    expectInvalidField(() => serviceIpIntent('nope', [], []), 'ip');
  });
});

describe('hostPrefix', () => {
  it.each([
    { name: 'IPv4', ip: '192.0.2.10', want: '192.0.2.10/32' },
    { name: 'IPv6', ip: '2001:db8::a', want: '2001:db8::a/128' },
    { name: 'IPv6 upper case', ip: '2001:DB8::A', want: '2001:db8::a/128' },
  ])('$name', ({ ip, want }) => {
    expect(hostPrefix(ip)).toBe(want);
  });
  it('rejects a non-IP', () => {
    expectInvalidField(() => hostPrefix('192.0.2.0/24'), 'ip');
  });
});

describe('compareIps', () => {
  it('sorts numerically, IPv4 first, garbage last', () => {
    const ips = ['2001:db8::1', '192.0.2.10', 'zzz', '192.0.2.9', '10.0.0.1', '::1', '2001:db8::a', 'aaa'];
    expect([...ips].sort(compareIps)).toEqual(['10.0.0.1', '192.0.2.9', '192.0.2.10', '::1', '2001:db8::1', '2001:db8::a', 'aaa', 'zzz']);
  });
  it('is a total order consistent with equality', () => {
    const ip = fc.oneof(fc.ipV4(), fc.ipV6());
    // The sum, not sign(a, b) against -sign(b, a): equal addresses give 0 and -0, which toBe tells apart.
    const sign = (a: string, b: string): number => Math.sign(compareIps(a, b)) + 0;
    fc.assert(
      fc.property(ip, ip, ip, (a, b, c) => {
        expect(sign(a, a)).toBe(0);
        expect(sign(a, b) + sign(b, a)).toBe(0);
        if (sign(a, b) <= 0 && sign(b, c) <= 0) expect(sign(a, c)).toBeLessThanOrEqual(0);
      }),
    );
  });
});

const cand = (node: string, ipv4?: string, ipv6?: string): NextHopCandidate => ({
  node,
  addresses: { ...(ipv4 === undefined ? {} : { ipv4 }), ...(ipv6 === undefined ? {} : { ipv6 }) },
});
const intent = (ip: string, policy: 'Cluster' | 'Local' = 'Cluster', nodes: string[] = []): ServiceIpIntent => ({
  ip,
  family: ip.includes(':') ? 'ipv6' : 'ipv4',
  services: ['default/s'],
  policy,
  nodes,
});

describe('nextHopsFor', () => {
  const candidates = [cand('n10', '192.0.2.10'), cand('n9', '192.0.2.9', '2001:db8::9'), cand('n100', '192.0.2.100'), cand('v6only', undefined, '2001:db8::1')];
  it.each([
    { name: 'Cluster: every node with an IPv4, numeric order', i: intent('172.22.0.2'), want: [['n9', '192.0.2.9'], ['n10', '192.0.2.10'], ['n100', '192.0.2.100']] },
    { name: 'Local: only nodes with endpoints', i: intent('172.22.0.2', 'Local', ['n100', 'n9', 'elsewhere']), want: [['n9', '192.0.2.9'], ['n100', '192.0.2.100']] },
    { name: 'Local without endpoints: none', i: intent('172.22.0.2', 'Local', []), want: [] },
    { name: 'IPv6 intent uses IPv6 addresses', i: intent('2001:db8:ffff::1'), want: [['v6only', '2001:db8::1'], ['n9', '2001:db8::9']] },
  ])('$name', ({ i, want }) => {
    expect(nextHopsFor(i, candidates)).toEqual(want.map(([node, address]) => ({ node, address })));
  });

  it('keeps one hop per node, its lowest address', () => {
    expect(nextHopsFor(intent('172.22.0.2'), [cand('n', '192.0.2.20'), cand('n', '192.0.2.3')])).toEqual([{ node: 'n', address: '192.0.2.3' }]);
  });

  it('explains each decision', () => {
    expect(nextHopDecision(intent('2001:db8::5'), cand('n', '192.0.2.1'))).toEqual({ include: false, reason: 'noAddressOfFamily' });
    expect(nextHopDecision(intent('192.0.2.5', 'Local', ['m']), cand('n', '192.0.2.1'))).toEqual({ include: false, reason: 'noEndpointOnNode' });
    expect(nextHopDecision(intent('192.0.2.5', 'Local', ['n']), cand('n', '192.0.2.1'))).toEqual({ include: true, address: '192.0.2.1' });
  });
});

describe('routesForRack', () => {
  it('maps prefixes to sorted next hops and leaves out prefixes without any', () => {
    const candidates = [cand('b', '192.0.2.20', '2001:db8::20'), cand('a', '192.0.2.3')];
    const intents = [intent('172.22.0.3', 'Local', ['b']), intent('172.22.0.2'), intent('172.22.0.4', 'Local', ['x']), intent('2001:db8:1::1')];
    const routes = routesForRack(candidates, intents);
    expect(routes).toEqual({
      '172.22.0.2/32': ['192.0.2.3', '192.0.2.20'],
      '172.22.0.3/32': ['192.0.2.20'],
      '2001:db8:1::1/128': ['2001:db8::20'],
    });
    expect(Object.keys(routes)).toEqual(['172.22.0.2/32', '172.22.0.3/32', '2001:db8:1::1/128']);
  });

  it('merges duplicate intents for one IP and drops duplicate addresses', () => {
    const candidates = [cand('a', '192.0.2.1'), cand('b', '192.0.2.2'), cand('c', '192.0.2.1')];
    const routes = routesForRack(candidates, [intent('172.22.0.2', 'Local', ['b']), intent('172.22.0.2', 'Local', ['a', 'c'])]);
    expect(routes).toEqual({ '172.22.0.2/32': ['192.0.2.1', '192.0.2.2'] });
  });

  it('gives nothing without candidates or intents', () => {
    expect(routesForRack([], [intent('172.22.0.2')])).toEqual({});
    expect(routesForRack([cand('a', '192.0.2.1')], [])).toEqual({});
  });

  it('handles a rack of thousands of Service IPs quickly', () => {
    const candidates = Array.from({ length: 40 }, (_, i) => cand(`n${i}`, `192.0.2.${i + 1}`));
    const intents = Array.from({ length: 10_000 }, (_, i) => intent(`10.${(i >> 8) & 255}.${i & 255}.1`, i % 2 === 0 ? 'Cluster' : 'Local', [`n${i % 40}`]));
    const t0 = performance.now();
    const routes = routesForRack(candidates, intents);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(Object.keys(routes)).toHaveLength(10_000);
  });

  const arbNodeName = fc.constantFrom('n1', 'n2', 'n3', 'n4', 'n5');
  const arbCandidate = fc.record({
    node: arbNodeName,
    addresses: fc.record({ ipv4: fc.ipV4(), ipv6: fc.constantFrom('2001:db8::1', '2001:db8::2', 'fe80::1') }, { requiredKeys: [] }),
  });
  const arbIntent = fc
    .record({
      ip: fc.oneof(fc.constantFrom('172.22.0.2', '172.22.0.3', '2001:db8:ff::1'), fc.ipV4()),
      policy: fc.constantFrom<'Cluster' | 'Local'>('Cluster', 'Local'),
      nodes: fc.uniqueArray(arbNodeName),
    })
    .map((r) => intent(r.ip, r.policy, [...r.nodes].sort()));

  it('does not depend on the order of candidates or intents', () => {
    fc.assert(
      fc.property(fc.array(arbCandidate, { maxLength: 8 }), fc.array(arbIntent, { maxLength: 8 }), fc.nat(), fc.nat(), (cs, is, s1, s2) => {
        const shuffle = <T>(xs: T[], seed: number): T[] => {
          const out = [...xs];
          let x = seed + 1;
          for (let i = out.length - 1; i > 0; i--) {
            x = (x * 1103515245 + 12345) % 2147483648;
            const j = x % (i + 1);
            [out[i], out[j]] = [out[j] as T, out[i] as T];
          }
          return out;
        };
        const a = routesForRack(cs, is);
        const b = routesForRack(shuffle(cs, s1), shuffle(is, s2));
        expect(JSON.stringify(b)).toBe(JSON.stringify(a));
        expect(JSON.stringify(routesForRack([...cs].reverse(), [...is].reverse()))).toBe(JSON.stringify(a));
      }),
    );
  });

  it('agrees with nextHopsFor for every intent', () => {
    fc.assert(
      fc.property(fc.array(arbCandidate, { maxLength: 8 }), fc.array(arbIntent, { maxLength: 1 }), (cs, is) => {
        const routes = routesForRack(cs, is);
        for (const i of is) {
          const hops = [...new Set(nextHopsFor(i, cs).map((h) => h.address))];
          const prefix = hostPrefix(i.ip);
          if (hops.length === 0) expect(routes[prefix]).toBeUndefined();
          else expect(routes[prefix]).toEqual(hops);
        }
      }),
    );
  });
});
