/**
 * PorterLB's multi-router example, end to end through the pure core: parse the objects, place the
 * peers, allocate the Service IP, and compute what each rack's speaker announces.
 */
import { describe, expect, it } from 'vitest';

import { routesForRack, serviceIpIntent } from '../../../src/core/intents.js';
import { allocate, checkPoolOverlap } from '../../../src/core/ipam.js';
import { parseBgpConf, parseBgpPeer, parseEip, parseEndpointSlice, parseNode, parseService } from '../../../src/core/objects.js';
import { assignPeers, effectiveConf } from '../../../src/core/peers.js';
import { nextHopCandidate, rackOf } from '../../../src/core/rack.js';
import type { NextHopCandidate, NodeRecord } from '../../../src/core/types.js';
import { withPath } from './assert.js';
import { LABEL_RACK, porterLbExample } from '../../helpers/fixtures.js';

function candidatesOf(nodes: readonly NodeRecord[], rack: string): NextHopCandidate[] {
  const out: NextHopCandidate[] = [];
  for (const n of nodes) {
    if (rackOf(n) !== rack) continue;
    const c = nextHopCandidate(n);
    if (c.eligible) out.push(c.candidate);
  }
  return out;
}

describe('PorterLB multi-router example', () => {
  const ex = porterLbExample();
  const nodes = ex.nodes.map(parseNode);
  const peers = ex.peers.map(parseBgpPeer);
  const conf = parseBgpConf(ex.conf);
  const pool = parseEip(ex.eip);
  const svc = parseService(ex.service);
  const slice = parseEndpointSlice(ex.slice);
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const get = (name: string): NodeRecord => {
    const n = byName.get(name);
    if (n === undefined) throw new Error(name);
    return n;
  };

  it('parses the nodes as PorterLB labels them', () => {
    expect(nodes.map((n) => [n.name, n.rack, n.speaker, n.addresses.ipv4])).toEqual([
      ['master1', 'leaf1', true, '192.168.0.3'],
      ['worker-p001', undefined, false, '192.168.0.4'],
      ['worker-p002', 'leaf2', true, '192.168.1.2'],
    ]);
  });

  it('peers each speaker with its own leaf only', () => {
    expect(assignPeers(get('master1'), peers).map((p) => [p.name, p.neighborAddress])).toEqual([['bgppeer-leaf1', '192.168.0.2']]);
    expect(assignPeers(get('worker-p002'), peers).map((p) => [p.name, p.neighborAddress])).toEqual([['bgppeer-leaf2', '192.168.1.1']]);
    expect(assignPeers(get('worker-p001'), peers)).toEqual([]);
  });

  it('gives each rack the global settings', () => {
    expect(effectiveConf(conf, 'leaf1')).toEqual({ as: 50000, routerId: undefined, listenPort: 17900, listenAddresses: [], gracefulRestart: undefined });
  });

  it('allocates 172.22.0.2 from the Eip', () => {
    expect(() => checkPoolOverlap(pool, [])).not.toThrow();
    expect(allocate(svc, [pool], [], undefined)).toEqual({ ok: true, ip: '172.22.0.2', pool: 'porter-bgp-eip', shared: false });
  });

  it('announces each rack\'s own labelled nodes as next hops', () => {
    const intent = serviceIpIntent('172.22.0.2', [svc], [slice]);
    expect(intent).toEqual({ ip: '172.22.0.2', family: 'ipv4', services: ['default/porter-bgp-svc'], policy: 'Cluster', nodes: [] });
    expect(routesForRack(candidatesOf(nodes, 'leaf1'), [intent])).toEqual({ '172.22.0.2/32': ['192.168.0.3'] });
    expect(routesForRack(candidatesOf(nodes, 'leaf2'), [intent])).toEqual({ '172.22.0.2/32': ['192.168.1.2'] });
  });

  it('adds worker-p001 under leaf1 once it carries the rack label, as the document\'s picture shows', () => {
    const labelled = parseNode(withPath(ex.nodes[1], ['metadata', 'labels', LABEL_RACK], 'leaf1'));
    const all = [get('master1'), labelled, get('worker-p002')];
    const intent = serviceIpIntent('172.22.0.2', [svc], [slice]);
    expect(routesForRack(candidatesOf(all, 'leaf1'), [intent])).toEqual({ '172.22.0.2/32': ['192.168.0.3', '192.168.0.4'] });
  });

  it('with externalTrafficPolicy Local, announces only nodes with a ready pod', () => {
    const local = parseService(withPath(ex.service, 'spec.externalTrafficPolicy', 'Local'));
    const labelled = parseNode(withPath(ex.nodes[1], ['metadata', 'labels', LABEL_RACK], 'leaf1'));
    const all = [get('master1'), labelled, get('worker-p002')];
    const intent = serviceIpIntent('172.22.0.2', [local], [slice]);
    expect(intent.nodes).toEqual(['worker-p001', 'worker-p002']);
    expect(routesForRack(candidatesOf(all, 'leaf1'), [intent])).toEqual({ '172.22.0.2/32': ['192.168.0.4'] });
    expect(routesForRack(candidatesOf(all, 'leaf2'), [intent])).toEqual({ '172.22.0.2/32': ['192.168.1.2'] });
  });

  it('withdraws a rack\'s route when its only node stops being ready', () => {
    const down = parseNode(withPath(ex.nodes[2], 'status.conditions', [{ type: 'Ready', status: 'False' }]));
    const intent = serviceIpIntent('172.22.0.2', [svc], [slice]);
    expect(routesForRack(candidatesOf([down], 'leaf2'), [intent])).toEqual({});
  });
});
