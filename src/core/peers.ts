/** Which routers a speaker node peers with, and the global BGP settings of its rack. */
import { matchesSelector } from './selector.js';
import type { BgpConfRecord, BgpPeerRecord, NodeRecord, RackBgpConf } from './types.js';

/** Only speaker nodes peer; a BgpPeer without nodeSelector applies to every one of them, as in PorterLB. */
export function peerSelects(peer: BgpPeerRecord, node: NodeRecord): boolean {
  return node.speaker && matchesSelector(peer.nodeSelector, node.labels);
}

/** The BgpPeers a node peers with, by name. */
export function assignPeers(node: NodeRecord, peers: readonly BgpPeerRecord[]): BgpPeerRecord[] {
  if (!node.speaker) return [];
  return peers.filter((p) => peerSelects(p, node)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The speakers whose peer lists a change of one BgpPeer can change: those it selects before or
 * after. Every other speaker's list holds neither version, so it stays as it is.
 */
export function speakersTouchedBy(before: BgpPeerRecord | undefined, after: BgpPeerRecord | undefined, speakers: readonly NodeRecord[]): NodeRecord[] {
  return speakers.filter((n) => (before !== undefined && peerSelects(before, n)) || (after !== undefined && peerSelects(after, n)));
}

/**
 * asPerRack[rack] overrides `as`. Like PorterLB's speaker, a node in a rack of a cluster that uses
 * asPerRack drops a pinned routerId: speakers of different racks would otherwise share one BGP
 * identifier, and each falls back to its own node address instead.
 */
export function effectiveConf(conf: BgpConfRecord | undefined, rack: string | undefined): RackBgpConf | undefined {
  if (conf === undefined) return undefined;
  const perRack = rack !== undefined && Object.keys(conf.asPerRack).length > 0;
  const rackAs = rack !== undefined && Object.hasOwn(conf.asPerRack, rack) ? conf.asPerRack[rack] : undefined;
  return {
    as: rackAs ?? conf.as,
    routerId: perRack ? undefined : conf.routerId,
    listenPort: conf.listenPort,
    listenAddresses: [...conf.listenAddresses],
    gracefulRestart: conf.gracefulRestart === undefined ? undefined : { ...conf.gracefulRestart },
  };
}
