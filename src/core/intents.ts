/** Route intents: which Service IPs a rack announces, and through which of its nodes. */
import { bitsOf, parseIp, requireIp } from './ip.js';
import type { EndpointSliceRecord, Family, NextHopCandidate, ServiceIpIntent, ServiceRecord } from './types.js';

/**
 * Services sharing one IP share its route, so one Cluster Service among them makes every node a next
 * hop; only when all are Local does the route narrow to nodes with a ready endpoint of any of them.
 */
export function serviceIpIntent(
  ip: string,
  services: readonly ServiceRecord[],
  slices: readonly EndpointSliceRecord[],
): ServiceIpIntent {
  const parsed = requireIp(ip, 'ip');
  const keys = [...new Set(services.map((s) => s.key))].sort();
  const local = services.length > 0 && services.every((s) => s.externalTrafficPolicy === 'Local');
  const nodes = new Set<string>();
  if (local) {
    const wanted = new Set(keys);
    for (const slice of slices) {
      if (wanted.has(slice.service)) for (const n of slice.readyNodes) nodes.add(n);
    }
  }
  return { ip: parsed.text, family: parsed.family, services: keys, policy: local ? 'Local' : 'Cluster', nodes: [...nodes].sort() };
}

export function hostPrefix(ip: string): string {
  const parsed = requireIp(ip, 'ip');
  return `${parsed.text}/${bitsOf(parsed.family)}`;
}

/**
 * Total order on addresses: IPv4 before IPv6, then numeric. Text that is not an address sorts last,
 * by string, so that sorting never throws.
 */
export function compareIps(a: string, b: string): number {
  return compareKeys(sortKey(a), sortKey(b));
}

type SortKey = { rank: 0 | 1 | 2; value: bigint; text: string };

function sortKey(ip: string): SortKey {
  const p = parseIp(ip);
  if (p === undefined) return { rank: 2, value: 0n, text: ip };
  return { rank: p.family === 'ipv4' ? 0 : 1, value: p.value, text: p.text };
}

function compareKeys(x: SortKey, y: SortKey): number {
  if (x.rank !== y.rank) return x.rank - y.rank;
  if (x.value !== y.value) return x.value < y.value ? -1 : 1;
  return x.text < y.text ? -1 : x.text > y.text ? 1 : 0;
}

export type NextHopSkipReason = 'noEndpointOnNode' | 'noAddressOfFamily';

/** Why a candidate is or is not a next hop of the intent; `nextHopsFor` applies the same rule. */
export function nextHopDecision(
  intent: ServiceIpIntent,
  candidate: NextHopCandidate,
): { include: true; address: string } | { include: false; reason: NextHopSkipReason } {
  const address = candidate.addresses[intent.family];
  if (address === undefined) return { include: false, reason: 'noAddressOfFamily' };
  if (intent.policy === 'Local' && !intent.nodes.includes(candidate.node)) return { include: false, reason: 'noEndpointOnNode' };
  return { include: true, address };
}

interface Hop {
  node: string;
  address: string;
  key: SortKey;
}

/**
 * One hop per node, sorted by address. Should a node appear twice among the candidates, its lowest
 * address wins, so the answer does not depend on candidate order.
 */
function hopsOfFamily(candidates: readonly NextHopCandidate[], family: Family): Hop[] {
  const byNode = new Map<string, Hop>();
  for (const c of candidates) {
    const address = c.addresses[family];
    if (address === undefined) continue;
    const hop: Hop = { node: c.node, address, key: sortKey(address) };
    const seen = byNode.get(c.node);
    if (seen === undefined || compareKeys(hop.key, seen.key) < 0) byNode.set(c.node, hop);
  }
  return [...byNode.values()].sort((x, y) => compareKeys(x.key, y.key) || (x.node < y.node ? -1 : x.node > y.node ? 1 : 0));
}

function select(intent: ServiceIpIntent, hops: readonly Hop[]): Hop[] {
  if (intent.policy === 'Cluster') return [...hops];
  const nodes = new Set(intent.nodes);
  return hops.filter((h) => nodes.has(h.node));
}

export function nextHopsFor(intent: ServiceIpIntent, candidates: readonly NextHopCandidate[]): { node: string; address: string }[] {
  return select(intent, hopsOfFamily(candidates, intent.family)).map(({ node, address }) => ({ node, address }));
}

/**
 * prefix -> sorted, distinct next-hop addresses, for every intent with at least one next hop.
 * Candidates are sorted once per family rather than once per intent: a rack can hold thousands of
 * Service IPs. Prefixes come out in address order so the serialised form is stable too.
 */
export function routesForRack(candidates: readonly NextHopCandidate[], intents: readonly ServiceIpIntent[]): Record<string, string[]> {
  const hops: Record<Family, Hop[]> = { ipv4: hopsOfFamily(candidates, 'ipv4'), ipv6: hopsOfFamily(candidates, 'ipv6') };
  const byPrefix = new Map<string, { key: SortKey; prefix: string; hops: Hop[] }>();
  for (const intent of intents) {
    const selected = select(intent, hops[intent.family]);
    if (selected.length === 0) continue;
    const prefix = hostPrefix(intent.ip);
    const entry = byPrefix.get(prefix);
    if (entry === undefined) byPrefix.set(prefix, { key: sortKey(intent.ip), prefix, hops: selected });
    else entry.hops.push(...selected);
  }
  const entries = [...byPrefix.values()].sort((x, y) => compareKeys(x.key, y.key));
  const routes: Record<string, string[]> = {};
  for (const e of entries) {
    const sorted = e.hops.sort((x, y) => compareKeys(x.key, y.key));
    routes[e.prefix] = sorted.map((h) => h.address).filter((a, i, all) => i === 0 || all[i - 1] !== a);
  }
  return routes;
}
