import { describe, expect, it } from 'vitest';

import { parseBgpConf, parseBgpPeer, parseNode } from '../../../src/core/objects.js';
import { assignPeers, effectiveConf } from '../../../src/core/peers.js';
import { nextHopCandidate, rackOf } from '../../../src/core/rack.js';
import type { BgpConfRecord } from '../../../src/core/types.js';
import { withPath } from './assert.js';
import { bgpConf, bgpPeer, node } from '../../helpers/fixtures.js';

describe('rackOf', () => {
  it.each([
    { name: 'labelled', raw: node({ name: 'n', rack: 'leaf1' }), want: 'leaf1' },
    { name: 'unlabelled', raw: node({ name: 'n' }), want: undefined },
  ])('$name', ({ raw, want }) => {
    expect(rackOf(parseNode(raw))).toBe(want);
  });
});

describe('nextHopCandidate', () => {
  it.each([
    { name: 'ready node', raw: node({ name: 'n', ip: '192.0.2.1' }), want: { eligible: true, candidate: { node: 'n', addresses: { ipv4: '192.0.2.1' } } } },
    { name: 'dual stack', raw: node({ name: 'n', ip: '192.0.2.1', ipv6: '2001:db8::1' }), want: { eligible: true, candidate: { node: 'n', addresses: { ipv4: '192.0.2.1', ipv6: '2001:db8::1' } } } },
    { name: 'IPv6 only', raw: node({ name: 'n', ipv6: '2001:db8::1' }), want: { eligible: true, candidate: { node: 'n', addresses: { ipv6: '2001:db8::1' } } } },
    { name: 'not ready', raw: node({ name: 'n', ip: '192.0.2.1', ready: false }), want: { eligible: false, reason: 'nodeNotReady' } },
    { name: 'cordoned', raw: node({ name: 'n', ip: '192.0.2.1', unschedulable: true }), want: { eligible: false, reason: 'nodeUnschedulable' } },
    { name: 'no InternalIP', raw: node({ name: 'n' }), want: { eligible: false, reason: 'noAddress' } },
    { name: 'not ready wins over no address', raw: node({ name: 'n', ready: false }), want: { eligible: false, reason: 'nodeNotReady' } },
  ])('$name', ({ raw, want }) => {
    expect(nextHopCandidate(parseNode(raw))).toEqual(want);
  });

  it('copies addresses so the candidate does not alias the record', () => {
    const rec = parseNode(node({ name: 'n', ip: '192.0.2.1' }));
    const r = nextHopCandidate(rec);
    if (!r.eligible) throw new Error('expected eligible');
    r.candidate.addresses.ipv4 = '192.0.2.99';
    expect(rec.addresses.ipv4).toBe('192.0.2.1');
  });
});

describe('assignPeers', () => {
  const peers = [
    parseBgpPeer(bgpPeer({ name: 'z-all', neighborAddress: '192.0.2.254' })),
    parseBgpPeer(bgpPeer({ name: 'leaf2', neighborAddress: '192.168.1.1', rack: 'leaf2' })),
    parseBgpPeer(bgpPeer({ name: 'leaf1', neighborAddress: '192.168.0.2', rack: 'leaf1' })),
    parseBgpPeer(
      bgpPeer({
        name: 'a-not-leaf2',
        neighborAddress: '192.0.2.253',
        nodeSelector: { matchExpressions: [{ key: 'porter.kubesphere.io/rack', operator: 'NotIn', values: ['leaf2'] }] },
      }),
    ),
  ];
  it.each([
    { name: 'speaker in leaf1', raw: node({ name: 'n', rack: 'leaf1', speaker: true }), want: ['a-not-leaf2', 'leaf1', 'z-all'] },
    { name: 'speaker in leaf2', raw: node({ name: 'n', rack: 'leaf2', speaker: true }), want: ['leaf2', 'z-all'] },
    { name: 'speaker without rack', raw: node({ name: 'n', speaker: true }), want: ['a-not-leaf2', 'z-all'] },
    { name: 'non-speaker gets nothing', raw: node({ name: 'n', rack: 'leaf1' }), want: [] },
  ])('$name', ({ raw, want }) => {
    expect(assignPeers(parseNode(raw), peers).map((p) => p.name)).toEqual(want);
  });

  it('does not reorder its input', () => {
    const before = peers.map((p) => p.name);
    assignPeers(parseNode(node({ name: 'n', rack: 'leaf1', speaker: true })), peers);
    expect(peers.map((p) => p.name)).toEqual(before);
  });
});

describe('effectiveConf', () => {
  const conf = parseBgpConf(bgpConf({ as: 50000, routerId: '172.22.0.10', listenPort: 17900, asPerRack: { leaf1: 65001 } }));
  const plain = parseBgpConf(bgpConf({ as: 50000, routerId: '172.22.0.10' }));
  it.each<{ name: string; conf: BgpConfRecord | undefined; rack: string | undefined; want: unknown }>([
    { name: 'no BgpConf', conf: undefined, rack: 'leaf1', want: undefined },
    { name: 'rack with its own AS', conf, rack: 'leaf1', want: { as: 65001, routerId: undefined, listenPort: 17900, listenAddresses: [], gracefulRestart: undefined } },
    { name: 'rack without an entry keeps as, drops routerId', conf, rack: 'leaf9', want: { as: 50000, routerId: undefined, listenPort: 17900 } },
    { name: 'no rack keeps pinned routerId', conf, rack: undefined, want: { as: 50000, routerId: '172.22.0.10' } },
    { name: 'no asPerRack keeps pinned routerId', conf: plain, rack: 'leaf1', want: { as: 50000, routerId: '172.22.0.10', listenPort: 179 } },
    { name: 'prototype rack name', conf, rack: 'constructor', want: { as: 50000 } },
  ])('$name', ({ conf: c, rack, want }) => {
    const got = effectiveConf(c, rack);
    if (want === undefined) expect(got).toBeUndefined();
    else expect(got).toMatchObject(want as object);
  });

  it('copies graceful restart settings', () => {
    const c = parseBgpConf(withPath(bgpConf(), 'spec.gracefulRestart', { enabled: true, restartTime: 60 }));
    const eff = effectiveConf(c, undefined);
    expect(eff?.gracefulRestart).toEqual(c.gracefulRestart);
    expect(eff?.gracefulRestart).not.toBe(c.gracefulRestart);
  });
});
