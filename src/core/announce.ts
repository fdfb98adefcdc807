/**
 * Past the route intent: whether a next hop of a rack actually reaches that rack's leaf, which
 * takes a speaker serving the rack, a peer assigned to it, an Established session, and a next
 * hop the speaker may announce to that peer (speaker/plan.ts nextHopFilter, the subnet rule).
 * The reason words here complete those of rack.ts (nextHopCandidate) and intents.ts
 * (nextHopDecision): together they are every answer `racklb explain` gives.
 */
import type { IneligibleReason } from './rack.js';
import type { NextHopSkipReason } from './intents.js';
import type { NodeRecord } from './types.js';

export type SpeakerSkipReason =
  /** No speaker node serves the rack: nothing announces its next hops to its leaf. */
  | 'noSpeakerInRack'
  /** The speaker has never reported (no heartbeat): it is not running, or cannot reach Redis. */
  | 'speakerNotSeen'
  /** No BgpPeer's nodeSelector matches the speaker node. */
  | 'noPeer'
  /** The speaker's session to its peer is not Established. */
  | 'sessionDown'
  /** A third-party next hop outside the speaker's own subnet toward every directly connected peer. */
  | 'offPeerSubnet';

/** Every reason a next hop of a Service IP is not announced in a rack, in the order they are checked. */
export type NotAnnouncedReason = IneligibleReason | NextHopSkipReason | SpeakerSkipReason;

/**
 * The speakers that announce a rack's next hops: those labelled with that rack, and those without
 * a rack label, which (like PorterLB's single speaker) take every node of the cluster as candidate.
 */
export function speakerServesRack(speaker: NodeRecord, rack: string): boolean {
  return speaker.rack === undefined || speaker.rack === rack;
}

/** gobgpd's session state in which paths flow. */
export function sessionCarriesRoutes(sessionState: string | undefined): boolean {
  return sessionState === 'established';
}

/**
 * Of several speakers that all fail to announce a next hop, the reason reported for the rack is the
 * one that got furthest: a speaker whose only problem is a down session says more than one that
 * could never announce the next hop at all.
 */
const FURTHEST_FIRST: readonly SpeakerSkipReason[] = ['sessionDown', 'noPeer', 'offPeerSubnet', 'speakerNotSeen', 'noSpeakerInRack'];

export function furthestReason(reasons: readonly SpeakerSkipReason[]): SpeakerSkipReason {
  for (const r of FURTHEST_FIRST) if (reasons.includes(r)) return r;
  return 'noSpeakerInRack';
}

/** A sentence per reason word, for people; the word itself is for programs and tests. */
export const REASON_TEXT: Readonly<Record<NotAnnouncedReason, string>> = {
  nodeNotReady: 'the node is not Ready',
  nodeUnschedulable: 'the node is cordoned (spec.unschedulable)',
  noAddress: 'the node has no InternalIP',
  noAddressOfFamily: "the node has no InternalIP of the Service IP's family",
  noEndpointOnNode: 'externalTrafficPolicy Local and no ready endpoint on this node',
  noSpeakerInRack: 'no speaker node serves this rack',
  speakerNotSeen: 'the speaker has never reported (not running, or cannot reach Redis)',
  noPeer: "no BgpPeer's nodeSelector matches the speaker node",
  sessionDown: "the speaker's BGP session is not Established",
  offPeerSubnet: "the next hop is outside the speaker's subnet toward its peer (a third-party next hop the leaf cannot use)",
};
