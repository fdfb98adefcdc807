/** Rack membership and whether a node can carry Service traffic as a next hop. */
import type { NextHopCandidate, NodeRecord } from './types.js';

export function rackOf(node: NodeRecord): string | undefined {
  return node.rack;
}

export type IneligibleReason = 'nodeNotReady' | 'nodeUnschedulable' | 'noAddress';

/**
 * A cordoned node is left out as well as a not-ready one: cordoning is how operators drain a node
 * for maintenance, and traffic should leave it before its pods do.
 */
export function nextHopCandidate(
  node: NodeRecord,
): { eligible: true; candidate: NextHopCandidate } | { eligible: false; reason: IneligibleReason } {
  if (!node.ready) return { eligible: false, reason: 'nodeNotReady' };
  if (!node.schedulable) return { eligible: false, reason: 'nodeUnschedulable' };
  if (node.addresses.ipv4 === undefined && node.addresses.ipv6 === undefined) return { eligible: false, reason: 'noAddress' };
  return { eligible: true, candidate: { node: node.name, addresses: { ...node.addresses } } };
}
